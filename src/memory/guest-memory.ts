// Reactor-side view of guest memory: translates guest-physical and QEMU-virtual addresses into
// (window, offset) pairs with bounds checks. translate() reports through fields instead of
// returning objects so the data path allocates nothing.
import { native } from '../native/index.js';
import { allowPinning, retire } from '../native/pinnable.js';
import { type RegionShare, WINDOW_SIZE } from './region.js';

// Rings and headers are read as u32 words of the host's byte order; virtio 1.x is little-endian.
if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error('vhostd needs a little-endian host');

export class GuestRegion {
  readonly gpa: number;
  readonly size: number;
  /** First guest-physical address past the region. */
  readonly end: number;
  readonly uva: number;
  readonly base: number;
  readonly mappingId: number | undefined;
  readonly windows: Uint8Array[] = [];
  readonly views: DataView[] = [];
  /** The windows as little-endian u32s (windows start at multiples of WINDOW_SIZE: aligned). */
  readonly words: Uint32Array[] = [];

  constructor(share: RegionShare) {
    this.gpa = share.gpa;
    this.size = share.size;
    this.end = share.gpa + share.size;
    this.uva = share.uva;
    this.base = share.base;
    this.mappingId = share.mappingId;
    const total = share.base + share.size;
    for (let start = 0; start < total; start += WINDOW_SIZE) {
      const len = Math.min(WINDOW_SIZE, total - start);
      this.windows.push(new Uint8Array(share.buffer, start, len));
      this.views.push(new DataView(share.buffer, start, len));
      this.words.push(new Uint32Array(share.buffer, start, len >>> 2));
    }
    if (share.hugepages === true) for (const w of this.windows) allowPinning(w);
  }

  /** The region is gone from this reactor's table: no new I/O uses its windows; pins must go. */
  retire(): void {
    for (const w of this.windows) retire(w);
  }
}

export class GuestMemory {
  private regions: GuestRegion[] = [];
  /** The region of the last translation: checked first by the next one. */
  private hot: GuestRegion | undefined;
  /**
   * The window of the last translation as the guest-physical range [hotLo, hotHi) it covers,
   * with its views; byte `gpa` of that range is at offset gpa - hotWindowGpa. The descriptor walk
   * locates a buffer inside it inline (a guest's buffers nearly always lie in one window) with
   * two compares and a subtraction, and calls translate() only when it misses. hotHi = 0: none.
   */
  hotLo = 0;
  hotHi = 0;
  hotWindowGpa = 0;
  hotWin: Uint8Array = new Uint8Array(0);
  hotWords: Uint32Array = new Uint32Array(0);

  // Results of the last successful translate().
  win: Uint8Array = new Uint8Array(0);
  view: DataView = new DataView(new ArrayBuffer(0));
  words: Uint32Array = new Uint32Array(0);
  off = 0;
  len = 0;

  constructor(shares: RegionShare[] = []) {
    this.update(shares);
  }

  update(shares: RegionShare[]): void {
    for (const r of this.regions) r.retire();
    this.regions = shares.map((s) => new GuestRegion(s));
    this.hot = undefined;
    this.hotLo = 0;
    this.hotHi = 0;
  }

  get regionCount(): number {
    return this.regions.length;
  }

  private findGpa(gpa: number): GuestRegion | undefined {
    const hot = this.hot;
    if (hot !== undefined && gpa >= hot.gpa && gpa < hot.end) return hot;
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa < r.end) {
        this.hot = r;
        return r;
      }
    }
    return undefined;
  }

  /**
   * Locates guest-physical `gpa`: sets win/view/off and len = the contiguous bytes available
   * there, at most `want`. Returns false when gpa lies outside every region.
   */
  translate(gpa: number, want: number): boolean {
    const r = this.findGpa(gpa);
    if (r === undefined) return false;
    const inRegion = gpa - r.gpa;
    const bufOff = r.base + inRegion;
    const w = Math.floor(bufOff / WINDOW_SIZE);
    const off = bufOff - w * WINDOW_SIZE;
    let len = r.size - inRegion;
    if (len > WINDOW_SIZE - off) len = WINDOW_SIZE - off;
    if (len > want) len = want;
    this.win = r.windows[w];
    this.view = r.views[w];
    this.words = r.words[w];
    this.off = off;
    this.len = len;
    // Two regions' windows can start at the same guest-physical address (their mappings' offsets
    // differ): the window is taken again even when that address did not change.
    const windowGpa = gpa - off;
    this.hotWindowGpa = windowGpa;
    this.hotLo = Math.max(r.gpa, windowGpa);
    this.hotHi = Math.min(r.end, windowGpa + this.win.length);
    this.hotWin = this.win;
    this.hotWords = this.words;
    return true;
  }

  /** Like translate, but the whole range must be contiguous in one window (rings, headers). */
  translateWhole(gpa: number, len: number): boolean {
    return this.translate(gpa, len) && this.len === len;
  }

  /**
   * A region whose file shrank under its mapping (the native SIGBUS guard replaced it with
   * anonymous memory): the front-end truncated its guest memory. Called when the fault count moved.
   */
  lostRegion(): GuestRegion | undefined {
    for (const r of this.regions) if (r.mappingId !== undefined && native.mappingFaulted(r.mappingId) === 1) return r;
    return undefined;
  }

  /** [gpa, size] of every region (marking all of guest memory dirty; rare paths only). */
  regionRanges(): Array<[number, number]> {
    return this.regions.map((r) => [r.gpa, r.size]);
  }

  /** QEMU virtual address → guest physical, for a range that must lie in one region; -1 if not. */
  uvaToGpa(uva: number, len: number): number {
    for (const r of this.regions) {
      if (uva >= r.uva && uva + len <= r.uva + r.size) return r.gpa + (uva - r.uva);
    }
    return -1;
  }
}

