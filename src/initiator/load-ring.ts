// The driver side of one virtqueue as the load generator drives it: a fixed number of request
// slots, each with a prebuilt descriptor chain (header, data, status) in initiator memory, so a
// request costs a header write, one flags write and an avail entry — no allocation, no Map.
//
// LoadRing is the seam between the load generator and the ring layout. SplitLoadRing implements
// it for split virtqueues (virtio 1.x §2.7). A packed-ring implementation (§2.8, negotiated with
// VIRTIO_F_RING_PACKED) provides the same methods: enqueue() writes the slot's descriptor(s) with
// the driver's wrap counter, publish() flips the first descriptor's AVAIL/USED bits and reads the
// device event suppression area, reap() walks used descriptors by buffer id, and the
// suppress/arm pair drives the driver event suppression area. createLoadRing() picks one.
import type { DriverMemory } from './driver-memory.js';
import { DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE } from './driver-ring.js';

const AVAIL_F_NO_INTERRUPT = 1;
const USED_F_NO_NOTIFY = 1;

export type RingKind = 'split' | 'packed';

export interface LoadRingOptions {
  /** Ring size (power of two). */
  size: number;
  /** Request slots (the queue depth); direct chains need 3 descriptors per slot. */
  slots: number;
  /** Data bytes per request. */
  ioBytes: number;
  /** VIRTIO_RING_F_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** Put each request's 3 descriptors in an indirect table (needs VIRTIO_RING_F_INDIRECT_DESC). */
  indirect: boolean;
}

export interface LoadRing {
  readonly kind: RingKind;
  readonly size: number;
  readonly slots: number;
  /** Guest-physical addresses for SET_VRING_ADDR (packed: ring, driver area, device area). */
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  /** Per slot: index in Uint32Array(memory) of the 16-byte virtio_blk_outhdr. */
  readonly hdrIndex32: Uint32Array;
  /** Per slot: byte offset in memory of the data buffer (ioBytes long, 4 KiB aligned). */
  readonly dataOff: Uint32Array;
  /** Per slot: byte offset in memory of the status byte. */
  readonly statusOff: Uint32Array;
  /** Makes slot's chain available (not yet visible); `deviceWrites`: data buffer is device-writable (reads). */
  enqueue(slot: number, deviceWrites: boolean): void;
  /** Publishes enqueued chains; returns true when the device asked to be kicked for them. */
  publish(): boolean;
  /** Whether the device completed something not reaped yet (one shared-memory load). */
  hasUsed(): boolean;
  /** Collects completions into outSlots/outLens; returns how many (at most outSlots.length). */
  reap(outSlots: Int32Array, outLens: Uint32Array): number;
  /** Asks the device not to signal the call eventfd (the driver polls). */
  suppressCalls(): void;
  /** Asks for a call on the next completion; returns true when completions are already pending. */
  armCalls(): boolean;
}

export function createLoadRing(kind: RingKind, mem: DriverMemory, opts: LoadRingOptions): LoadRing {
  if (kind === 'split') return new SplitLoadRing(mem, opts);
  throw new Error('packed virtqueues are not implemented yet in the load generator (see LoadRing in src/initiator/load-ring.ts)');
}

/** Bytes of initiator memory a ring with these options needs (with alignment slack). */
export function loadRingBytes(opts: LoadRingOptions): number {
  const n = opts.size;
  return 16 * n + (6 + 2 * n) + (6 + 8 * n) + 17 * opts.slots + opts.slots * alignUp(opts.ioBytes, 4096) + 48 * opts.slots + 5 * 4096;
}

function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

export class SplitLoadRing implements LoadRing {
  readonly kind = 'split';
  readonly size: number;
  readonly slots: number;
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly hdrIndex32: Uint32Array;
  readonly dataOff: Uint32Array;
  readonly statusOff: Uint32Array;
  private readonly m16: Uint16Array;
  private readonly m32: Uint32Array;
  private readonly mask: number;
  private readonly eventIdx: boolean;
  /** Uint16 indexes of the ring fields. */
  private readonly availFlags16: number;
  private readonly availIdx16: number;
  private readonly availRing16: number;
  private readonly usedEvent16: number;
  private readonly usedFlags16: number;
  private readonly usedIdx16: number;
  private readonly availEvent16: number;
  /** Uint32 index of used ring entry 0. */
  private readonly usedRing32: number;
  /** Per slot: Uint16 index of the data descriptor's flags; per slot the chain head. */
  private readonly dataFlags16: Uint32Array;
  private readonly slotHead: Uint16Array;
  /** Head descriptor -> slot (-1: not a head). */
  private readonly headSlot: Int32Array;
  private availIdx = 0;
  private publishedIdx = 0;
  private lastUsed = 0;
  private suppressed = false;

  constructor(mem: DriverMemory, opts: LoadRingOptions) {
    const { size, slots, ioBytes } = opts;
    if (size < 2 || size > 32768 || (size & (size - 1)) !== 0) throw new Error(`ring size ${size} is not a power of two in 2..32768`);
    if (slots < 1 || (opts.indirect ? slots : 3 * slots) > size) {
      throw new Error(`${slots} slots need ${opts.indirect ? slots : 3 * slots} descriptors; the ring has ${size}`);
    }
    if (mem.gpaBase !== 0) throw new Error('SplitLoadRing expects initiator memory at guest-physical 0');
    this.size = size;
    this.slots = slots;
    this.mask = size - 1;
    this.eventIdx = opts.eventIdx;
    const buf = mem.u8.buffer;
    this.m16 = new Uint16Array(buf);
    this.m32 = new Uint32Array(buf);
    const v = mem.view;

    this.descGpa = mem.alloc(16 * size, 4096);
    this.availGpa = mem.alloc(6 + 2 * size, 64);
    this.usedGpa = mem.alloc(6 + 8 * size, 4096);
    this.availFlags16 = this.availGpa / 2;
    this.availIdx16 = this.availFlags16 + 1;
    this.availRing16 = this.availFlags16 + 2;
    this.usedEvent16 = this.availRing16 + size;
    this.usedFlags16 = this.usedGpa / 2;
    this.usedIdx16 = this.usedFlags16 + 1;
    this.usedRing32 = (this.usedGpa + 4) / 4;
    this.availEvent16 = (this.usedGpa + 4 + 8 * size) / 2;
    // Ring memory may be reused from an earlier connection: start clean.
    mem.u8.fill(0, this.descGpa, this.descGpa + 16 * size);
    mem.u8.fill(0, this.availGpa, this.availGpa + 6 + 2 * size);
    mem.u8.fill(0, this.usedGpa, this.usedGpa + 6 + 8 * size);

    this.hdrIndex32 = new Uint32Array(slots);
    this.dataOff = new Uint32Array(slots);
    this.statusOff = new Uint32Array(slots);
    this.dataFlags16 = new Uint32Array(slots);
    this.slotHead = new Uint16Array(slots);
    this.headSlot = new Int32Array(size).fill(-1);
    const hdrBase = mem.alloc(16 * slots, 64);
    const statusBase = mem.alloc(slots, 64);
    const dataBase = mem.alloc(slots * alignUp(ioBytes, 4096), 4096);
    const tableBase = opts.indirect ? mem.alloc(48 * slots, 64) : 0;

    const writeDesc = (off: number, addr: number, len: number, flags: number, next: number) => {
      v.setBigUint64(off, BigInt(addr), true);
      v.setUint32(off + 8, len, true);
      v.setUint16(off + 12, flags, true);
      v.setUint16(off + 14, next, true);
    };
    for (let s = 0; s < slots; s++) {
      const hdr = hdrBase + 16 * s;
      const status = statusBase + s;
      const data = dataBase + s * alignUp(ioBytes, 4096);
      this.hdrIndex32[s] = hdr / 4;
      this.statusOff[s] = status;
      this.dataOff[s] = data;
      if (opts.indirect) {
        const t = tableBase + 48 * s;
        writeDesc(t, hdr, 16, DESC_F_NEXT, 1);
        writeDesc(t + 16, data, ioBytes, DESC_F_NEXT, 2);
        writeDesc(t + 32, status, 1, DESC_F_WRITE, 0);
        writeDesc(this.descGpa + 16 * s, t, 48, DESC_F_INDIRECT, 0);
        this.dataFlags16[s] = (t + 16 + 12) / 2;
        this.slotHead[s] = s;
      } else {
        const d = 3 * s;
        writeDesc(this.descGpa + 16 * d, hdr, 16, DESC_F_NEXT, d + 1);
        writeDesc(this.descGpa + 16 * (d + 1), data, ioBytes, DESC_F_NEXT, d + 2);
        writeDesc(this.descGpa + 16 * (d + 2), status, 1, DESC_F_WRITE, 0);
        this.dataFlags16[s] = (this.descGpa + 16 * (d + 1) + 12) / 2;
        this.slotHead[s] = d;
      }
      this.headSlot[this.slotHead[s]] = s;
    }
  }

  enqueue(slot: number, deviceWrites: boolean): void {
    this.m16[this.dataFlags16[slot]] = deviceWrites ? DESC_F_NEXT | DESC_F_WRITE : DESC_F_NEXT;
    this.m16[this.availRing16 + (this.availIdx & this.mask)] = this.slotHead[slot];
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  publish(): boolean {
    const old = this.publishedIdx;
    const now = this.availIdx;
    if (old === now) return false;
    // Sequentially consistent store: entries before index, and a full barrier before reading
    // the device's notification state (virtio_mb in Linux's virtqueue_kick_prepare).
    Atomics.store(this.m16, this.availIdx16, now);
    this.publishedIdx = now;
    if (this.eventIdx) {
      const ev = Atomics.load(this.m16, this.availEvent16);
      return ((now - ev - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.m16, this.usedFlags16) & USED_F_NO_NOTIFY) === 0;
  }

  hasUsed(): boolean {
    return Atomics.load(this.m16, this.usedIdx16) !== this.lastUsed;
  }

  reap(outSlots: Int32Array, outLens: Uint32Array): number {
    const usedIdx = Atomics.load(this.m16, this.usedIdx16);
    let last = this.lastUsed;
    if (last === usedIdx) return 0;
    const m32 = this.m32;
    const max = outSlots.length;
    let n = 0;
    while (last !== usedIdx && n < max) {
      const e = this.usedRing32 + 2 * (last & this.mask);
      const id = m32[e];
      outSlots[n] = id < this.size ? this.headSlot[id] : -1;
      outLens[n] = m32[e + 1];
      n++;
      last = (last + 1) & 0xffff;
    }
    this.lastUsed = last;
    // Keep used_event just behind what we consumed, so the device never crosses it while we poll.
    if (this.suppressed && this.eventIdx) this.m16[this.usedEvent16] = (last - 1) & 0xffff;
    return n;
  }

  suppressCalls(): void {
    this.suppressed = true;
    if (this.eventIdx) this.m16[this.usedEvent16] = (this.lastUsed - 1) & 0xffff;
    else this.m16[this.availFlags16] = AVAIL_F_NO_INTERRUPT;
  }

  armCalls(): boolean {
    this.suppressed = false;
    if (this.eventIdx) Atomics.store(this.m16, this.usedEvent16, this.lastUsed);
    else Atomics.store(this.m16, this.availFlags16, 0);
    return Atomics.load(this.m16, this.usedIdx16) !== this.lastUsed;
  }
}
