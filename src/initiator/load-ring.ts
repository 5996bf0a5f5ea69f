// The driver side of one virtqueue as the load generator drives it: a fixed number of request
// slots, each with a prebuilt descriptor chain (header, data, status) in initiator memory, so a
// request costs a header write, one flags write and an avail entry — no allocation, no Map.
//
// LoadRing is the seam between the load generator and the ring layout: SplitLoadRing for split
// virtqueues (virtio 1.x §2.7), PackedLoadRing for packed ones (§2.8, VIRTIO_F_RING_PACKED), where
// enqueue() writes the chain at the driver's ring position with its wrap counter, publish() flips
// the head descriptors' AVAIL/USED bits and reads the device event suppression area, reap() walks
// used descriptors, and the suppress/arm pair drives the driver event suppression area.
// createLoadRing() picks one.
import type { DriverMemory } from './driver-memory.js';
import { DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE } from './driver-ring.js';

const AVAIL_F_NO_INTERRUPT = 1;
const USED_F_NO_NOTIFY = 1;
/** Bytes of driver memory per request slot for its header and status byte (one cache line). */
const SLOT_LINE = 64;

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
  return kind === 'split' ? new SplitLoadRing(mem, opts) : new PackedLoadRing(mem, opts);
}

/** Bytes of initiator memory a ring with these options needs (with alignment slack). */
export function loadRingBytes(opts: LoadRingOptions): number {
  const n = opts.size;
  // Sized for the split layout, which needs more than the packed one (ring + two 4-byte areas).
  return 16 * n + (6 + 2 * n) + (6 + 8 * n) + SLOT_LINE * opts.slots + opts.slots * alignUp(opts.ioBytes, 4096) + 48 * opts.slots + 5 * 4096;
}

function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

/** Where each slot's header, data buffer and status byte live in initiator memory. */
interface SlotBuffers {
  hdrIndex32: Uint32Array;
  dataOff: Uint32Array;
  statusOff: Uint32Array;
}

/**
 * Lays out the slots' buffers. Each slot's header and status byte get a cache line of their own,
 * as in a Linux virtblk_req (the per-request data blk-mq allocates): packed together, the status
 * bytes of all slots shared one line that device and driver wrote in turn for every request.
 */
function allocSlotBuffers(mem: DriverMemory, slots: number, ioBytes: number): SlotBuffers {
  const b = { hdrIndex32: new Uint32Array(slots), dataOff: new Uint32Array(slots), statusOff: new Uint32Array(slots) };
  const slotBase = mem.alloc(SLOT_LINE * slots, SLOT_LINE);
  const dataBase = mem.alloc(slots * alignUp(ioBytes, 4096), 4096);
  for (let s = 0; s < slots; s++) {
    const hdr = slotBase + SLOT_LINE * s;
    b.hdrIndex32[s] = hdr / 4;
    b.statusOff[s] = hdr + 16;
    b.dataOff[s] = dataBase + s * alignUp(ioBytes, 4096);
  }
  return b;
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

    ({ hdrIndex32: this.hdrIndex32, dataOff: this.dataOff, statusOff: this.statusOff } = allocSlotBuffers(mem, slots, ioBytes));
    this.dataFlags16 = new Uint32Array(slots);
    this.slotHead = new Uint16Array(slots);
    this.headSlot = new Int32Array(size).fill(-1);
    const tableBase = opts.indirect ? mem.alloc(48 * slots, 64) : 0;

    const writeDesc = (off: number, addr: number, len: number, flags: number, next: number) => {
      v.setBigUint64(off, BigInt(addr), true);
      v.setUint32(off + 8, len, true);
      v.setUint16(off + 12, flags, true);
      v.setUint16(off + 14, next, true);
    };
    for (let s = 0; s < slots; s++) {
      const hdr = this.hdrIndex32[s] * 4;
      const status = this.statusOff[s];
      const data = this.dataOff[s];
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

const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;
const EVENT_ENABLE = 0;
const EVENT_DISABLE = 1;
const EVENT_DESC = 2;

/** The initial SET_VRING_BASE of a packed ring as QEMU sends it: avail and used at 0, wrap counters 1. */
export const PACKED_INITIAL_BASE = 0x80008000;

/**
 * Packed virtqueue driver. Chains go to consecutive ring positions starting at the driver's next
 * position; the buffer id is the slot. Every descriptor but a chain's head is written with its
 * final flags at once; heads keep their flags back until publish(), which stores them in ring
 * order, so the device never sees a partial chain (Linux's virtqueue_add_packed does the same per
 * chain). The device writes one used descriptor per chain at its own position; the driver reads
 * them in ring order and skips the chain's length.
 */
export class PackedLoadRing implements LoadRing {
  readonly kind = 'packed';
  readonly size: number;
  readonly slots: number;
  /** The descriptor ring, the driver event suppression area, the device event suppression area. */
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly hdrIndex32: Uint32Array;
  readonly dataOff: Uint32Array;
  readonly statusOff: Uint32Array;
  private readonly eventIdx: boolean;
  private readonly indirect: boolean;
  /** Ring positions one chain takes: 1 (indirect) or 3. */
  private readonly chainDescs: number;
  private readonly ioBytes: number;
  private readonly m16: Uint16Array;
  private readonly m32: Uint32Array;
  /** Per slot: the indirect table's data descriptor flags (m16 index), when indirect. */
  private readonly tableFlags16: Uint32Array;
  private readonly tableOff: Uint32Array;
  /** Heads waiting for publish(): their flags' m16 index and value. */
  private readonly pendIndex: Uint32Array;
  private readonly pendFlags: Uint16Array;
  private pendCount = 0;
  private nextAvail = 0;
  private availWrap = true;
  /** Ring positions made available since the last publish() (Linux's num_added). */
  private added = 0;
  private lastUsed = 0;
  private usedWrap = true;
  private readonly driverFlags16: number;
  private readonly driverOffWrap16: number;
  private readonly deviceFlags16: number;
  private readonly deviceOffWrap16: number;

  constructor(mem: DriverMemory, opts: LoadRingOptions) {
    const { size, slots, ioBytes } = opts;
    if (size < 2 || size > 32768 || (size & (size - 1)) !== 0) throw new Error(`ring size ${size} is not a power of two in 2..32768`);
    this.chainDescs = opts.indirect ? 1 : 3;
    if (slots < 1 || this.chainDescs * slots > size) throw new Error(`${slots} slots need ${this.chainDescs * slots} descriptors; the ring has ${size}`);
    if (mem.gpaBase !== 0) throw new Error('PackedLoadRing expects initiator memory at guest-physical 0');
    this.size = size;
    this.slots = slots;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.ioBytes = ioBytes;
    const buf = mem.u8.buffer;
    this.m16 = new Uint16Array(buf);
    this.m32 = new Uint32Array(buf);
    const v = mem.view;

    this.descGpa = mem.alloc(16 * size, 4096);
    this.availGpa = mem.alloc(4, 64);
    this.usedGpa = mem.alloc(4, 64);
    mem.u8.fill(0, this.descGpa, this.descGpa + 16 * size);
    mem.u8.fill(0, this.availGpa, this.availGpa + 4);
    mem.u8.fill(0, this.usedGpa, this.usedGpa + 4);
    this.driverOffWrap16 = this.availGpa / 2;
    this.driverFlags16 = this.driverOffWrap16 + 1;
    this.deviceOffWrap16 = this.usedGpa / 2;
    this.deviceFlags16 = this.deviceOffWrap16 + 1;

    ({ hdrIndex32: this.hdrIndex32, dataOff: this.dataOff, statusOff: this.statusOff } = allocSlotBuffers(mem, slots, ioBytes));
    this.tableFlags16 = new Uint32Array(slots);
    this.tableOff = new Uint32Array(slots);
    this.pendIndex = new Uint32Array(slots);
    this.pendFlags = new Uint16Array(slots);
    const tableBase = opts.indirect ? mem.alloc(48 * slots, 64) : 0;
    for (let s = 0; s < slots; s++) {
      const hdr = this.hdrIndex32[s] * 4;
      const data = this.dataOff[s];
      if (opts.indirect) {
        // Packed-format descriptors (addr, len, id, flags at +14), read in order: their NEXT
        // flags are ignored (§2.8.19), set anyway.
        const t = tableBase + 48 * s;
        this.tableOff[s] = t;
        v.setBigUint64(t, BigInt(hdr), true);
        v.setUint32(t + 8, 16, true);
        v.setUint16(t + 14, DESC_F_NEXT, true);
        v.setBigUint64(t + 16, BigInt(data), true);
        v.setUint32(t + 24, ioBytes, true);
        v.setBigUint64(t + 32, BigInt(hdr + 16), true);
        v.setUint32(t + 40, 1, true);
        v.setUint16(t + 46, DESC_F_WRITE, true);
        this.tableFlags16[s] = (t + 30) / 2;
      }
    }
  }

  /** Writes one ring descriptor at the driver's next position (a head's flags wait for publish()). */
  private put(addr: number, len: number, id: number, flags: number, publishNow: boolean): void {
    const d = this.descGpa + 16 * this.nextAvail;
    const i32 = d / 4;
    this.m32[i32] = addr;
    this.m32[i32 + 1] = 0;
    this.m32[i32 + 2] = len;
    this.m16[d / 2 + 6] = id;
    const f16 = d / 2 + 7;
    const wrapBits = this.availWrap ? F_AVAIL : F_USED;
    if (publishNow) this.m16[f16] = flags | wrapBits;
    else {
      this.pendIndex[this.pendCount] = f16;
      this.pendFlags[this.pendCount] = flags | wrapBits;
      this.pendCount++;
    }
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap = !this.availWrap;
    }
    this.added++;
  }

  enqueue(slot: number, deviceWrites: boolean): void {
    const dataFlags = deviceWrites ? DESC_F_NEXT | DESC_F_WRITE : DESC_F_NEXT;
    if (this.indirect) {
      this.m16[this.tableFlags16[slot]] = dataFlags;
      this.put(this.tableOff[slot], 48, slot, DESC_F_INDIRECT, false);
      return;
    }
    const hdr = this.hdrIndex32[slot] * 4;
    this.put(hdr, 16, slot, DESC_F_NEXT, false);
    this.put(this.dataOff[slot], this.ioBytes, slot, dataFlags, true);
    this.put(this.statusOff[slot], 1, slot, DESC_F_WRITE, true);
  }

  publish(): boolean {
    const n = this.pendCount;
    if (n === 0) return false;
    // The first head's store is sequentially consistent: every descriptor written before it is
    // visible first; the heads then go out in ring order.
    for (let i = 0; i < n; i++) Atomics.store(this.m16, this.pendIndex[i], this.pendFlags[i]);
    this.pendCount = 0;
    const added = this.added;
    this.added = 0;
    const flags = Atomics.load(this.m16, this.deviceFlags16);
    if (flags !== EVENT_DESC) return flags !== EVENT_DISABLE;
    // virtqueue_kick_prepare_packed: did the device's event position fall among the new ones?
    const offWrap = Atomics.load(this.m16, this.deviceOffWrap16);
    let event = offWrap & 0x7fff;
    if ((offWrap & 0x8000) !== 0 !== this.availWrap) event -= this.size;
    const now = this.nextAvail;
    const old = now - added;
    return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  private usedAt(pos: number, wrap: boolean): boolean {
    const flags = Atomics.load(this.m16, (this.descGpa + 16 * pos) / 2 + 7);
    return ((flags & F_USED) !== 0) === wrap && ((flags & F_AVAIL) !== 0) === wrap;
  }

  hasUsed(): boolean {
    return this.usedAt(this.lastUsed, this.usedWrap);
  }

  reap(outSlots: Int32Array, outLens: Uint32Array): number {
    const max = outSlots.length;
    let n = 0;
    while (n < max && this.usedAt(this.lastUsed, this.usedWrap)) {
      const d = this.descGpa + 16 * this.lastUsed;
      const id = this.m16[d / 2 + 6];
      outSlots[n] = id < this.slots ? id : -1;
      outLens[n] = this.m32[d / 4 + 2];
      n++;
      // Each chain has the same length here; the used descriptor stands for all of it.
      this.lastUsed += this.chainDescs;
      if (this.lastUsed >= this.size) {
        this.lastUsed -= this.size;
        this.usedWrap = !this.usedWrap;
      }
    }
    return n;
  }

  suppressCalls(): void {
    Atomics.store(this.m16, this.driverFlags16, EVENT_DISABLE);
  }

  armCalls(): boolean {
    if (this.eventIdx) {
      // A call once the device writes the used descriptor at our next position.
      Atomics.store(this.m16, this.driverOffWrap16, this.lastUsed | (this.usedWrap ? 0x8000 : 0));
      Atomics.store(this.m16, this.driverFlags16, EVENT_DESC);
    } else {
      Atomics.store(this.m16, this.driverFlags16, EVENT_ENABLE);
    }
    return this.hasUsed();
  }
}
