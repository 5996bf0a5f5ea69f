// What one queue marks in the dirty log while live migration logs (LOG_ALL with a log base): every
// guest page the device writes, after the write. That is the device-writable buffers of each
// completed request and the ring memory the device updates (the used ring and its index, or the
// used descriptors and event area of a packed ring).
//
// A split ring's chain stays the driver's untouched until the request is used, so it is walked
// again at completion (as SPDK does). A packed ring's used entries overwrite descriptor slots in
// completion order, so its chains' writable ranges are recorded as they are taken; a packed
// request already in flight when logging began has no record, and its completion marks all of
// guest memory (a moment's over-copying instead of a stale page on the destination).
import type { DirtyLog } from '../memory/dirty-log.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { Chain, ChainWalker, type WritableSink, chainErrorText } from './desc-chain.js';
import type { RingAddresses, Virtqueue } from './virtqueue.js';

/**
 * Tests only: the request buffers the device writes are not marked (rings still are, so the
 * migrated guest keeps working and reads stale data instead): proves the migration tests catch it.
 */
const SKIP_BUFFERS = process.env.VHOSTD_TEST_NO_DIRTY_LOG === '1';

/** Writable ranges kept per packed request; more are merged into the last one (over-marking is safe). */
const RANGES_PER_REQUEST = 8;

export class QueueDirtyTracker implements WritableSink {
  private log: DirtyLog | undefined;
  /** Why marking failed (a log too small for an address the device wrote), once it did. */
  failure: string | undefined;
  // Packed rings: the ranges of the chain being taken, then per buffer id.
  private taking = 0;
  private readonly takingGpa = new Float64Array(RANGES_PER_REQUEST);
  private readonly takingEnd = new Float64Array(RANGES_PER_REQUEST);
  private readonly rangeGpa: Float64Array | undefined;
  private readonly rangeEnd: Float64Array | undefined;
  private readonly rangeCount: Uint8Array | undefined;
  private readonly wholeMemory: Uint8Array;
  // Split rings: the walk at completion.
  private readonly rewalker: ChainWalker;
  private readonly scratch: Chain;
  private readonly marker: WritableSink = { add: (gpa, len) => void this.mark(gpa, len) };

  constructor(
    private readonly mem: GuestMemory,
    private readonly queue: Virtqueue,
    private readonly addrs: RingAddresses,
    private readonly packed: boolean,
    indirect: boolean,
    chainCapacity: number,
  ) {
    const size = queue.size;
    if (packed) {
      this.rangeGpa = new Float64Array(size * RANGES_PER_REQUEST);
      this.rangeEnd = new Float64Array(size * RANGES_PER_REQUEST);
      this.rangeCount = new Uint8Array(size);
    }
    this.wholeMemory = new Uint8Array(size);
    this.rewalker = new ChainWalker(mem, indirect);
    this.rewalker.writableSink = this.marker;
    this.scratch = new Chain(chainCapacity);
  }

  /** The sink the queue's walker reports writable ranges to while taking chains (packed only). */
  get takeSink(): WritableSink | undefined {
    return this.packed && this.log !== undefined ? this : undefined;
  }

  /**
   * Logging starts (or the log was replaced, or stops with undefined). `inFlight[id] !== 0` marks
   * the requests taken before: their ranges were never recorded.
   */
  setLog(log: DirtyLog | undefined, inFlight: Uint8Array): void {
    if (log !== undefined && this.log === undefined && this.packed) {
      for (let id = 0; id < inFlight.length; id++) if (inFlight[id] !== 0 && this.rangeCount![id] === 0) this.wholeMemory[id] = 1;
    }
    this.log = log;
  }

  /** WritableSink for the packed walk: one writable descriptor of the chain being taken. */
  add(gpa: number, len: number): void {
    if (len === 0) return;
    const n = this.taking;
    if (n < RANGES_PER_REQUEST) {
      this.takingGpa[n] = gpa;
      this.takingEnd[n] = gpa + len;
      this.taking = n + 1;
    } else {
      const last = RANGES_PER_REQUEST - 1;
      this.takingGpa[last] = Math.min(this.takingGpa[last], gpa);
      this.takingEnd[last] = Math.max(this.takingEnd[last], gpa + len);
    }
  }

  /** A chain was taken as buffer `id` (packed): its recorded ranges become the request's. */
  taken(id: number): void {
    if (!this.packed) return;
    const n = this.taking;
    this.taking = 0;
    const at = id * RANGES_PER_REQUEST;
    for (let i = 0; i < n; i++) {
      this.rangeGpa![at + i] = this.takingGpa[i];
      this.rangeEnd![at + i] = this.takingEnd[i];
    }
    this.rangeCount![id] = n;
    this.wholeMemory[id] = 0;
  }

  /** A chain could not be taken (walk error): drop what was recorded of it. */
  abandonTake(): void {
    this.taking = 0;
  }

  /** Request `head` completed: marks the buffers the device may have written. False on failure. */
  completed(head: number): boolean {
    if (this.log === undefined || SKIP_BUFFERS) return true;
    if (this.wholeMemory[head] !== 0) {
      this.wholeMemory[head] = 0;
      for (const [gpa, size] of this.mem.regionRanges()) this.mark(gpa, size);
    } else if (this.packed) {
      const at = head * RANGES_PER_REQUEST;
      const n = this.rangeCount![head];
      for (let i = 0; i < n; i++) this.mark(this.rangeGpa![at + i], this.rangeEnd![at + i] - this.rangeGpa![at + i]);
    } else {
      const rc = this.queue.walkAgain(this.rewalker, this.scratch, head);
      if (rc > 0 && this.failure === undefined) this.failure = `request ${head} could not be walked again for the dirty log: ${chainErrorText[rc]}`;
    }
    if (this.packed) this.rangeCount![head] = 0;
    return this.failure === undefined;
  }

  /** The device wrote ring memory (used entries, used index, event areas). False on failure. */
  ringWritten(): boolean {
    if (this.log === undefined) return true;
    const size = this.queue.size;
    if (this.packed) {
      this.mark(this.addrs.descGpa, 16 * size);
      this.mark(this.addrs.usedGpa, 4);
    } else {
      // flags, idx, the ring and avail_event.
      this.mark(this.addrs.usedGpa, 6 + 8 * size + 2);
    }
    return this.failure === undefined;
  }

  private mark(gpa: number, len: number): void {
    if (this.log!.mark(gpa, len) || this.failure !== undefined) return;
    this.failure = `the dirty log (${this.log!.pages} pages) does not cover gpa 0x${gpa.toString(16)} (+${len}) the device wrote`;
  }
}
