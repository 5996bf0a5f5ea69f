// Packed virtqueue (virtio 1.1 §2.8): one descriptor ring shared by driver and device, availability
// and use signalled by the AVAIL/USED flag bits against wrap counters, and event-suppression
// structures instead of ring flags. Flags are written last, through Atomics, to publish.
import type { GuestMemory } from '../memory/guest-memory.js';
import { type Chain, ChainError, type ChainWalker, chainErrorText } from './desc-chain.js';
import type { PackedInflight, PackedResubmit } from './inflight.js';
import { QueueError, type RingAddresses, type Virtqueue } from './virtqueue.js';

const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;
const EVENT_ENABLE = 0;
const EVENT_DISABLE = 1;
const EVENT_DESC = 2;

export class PackedQueue implements Virtqueue {
  private descView!: DataView;
  private descOff = 0;
  /** The ring as words for the chain walker: slot i is [descAt + 4 * i, +4). */
  private descWords!: Uint32Array;
  private descAt = 0;
  /** The ring as u16s, for Atomics on descriptor flags (index 8 * slot + 7). */
  private ring16!: Uint16Array;
  /** Driver event suppression: [off_wrap, flags]. */
  private driverEvent!: Uint16Array;
  /** Device event suppression: [off_wrap, flags]. */
  private deviceEvent!: Uint16Array;
  private nextAvail: number;
  private availWrap: boolean;
  private nextUsed: number;
  private usedWrap: boolean;
  /** Ring slots each in-flight buffer id occupies (the used index advances by that much). */
  private readonly idDescs: Uint16Array;
  private signalledUsed = 0;
  private signalledValid = false;

  /** Requests a previous process left in flight, resubmitted before new ring entries. */
  private resubmit: PackedResubmit[] = [];

  constructor(
    readonly size: number,
    readonly eventIdx: boolean,
    base: number,
    private readonly inflight?: PackedInflight,
  ) {
    // QEMU's packed vring base: avail index | wrap << 15, and the same for used in the high half
    // (a front-end that sends only the low half means "everything before avail was used").
    this.nextAvail = base & 0x7fff;
    this.availWrap = (base & 0x8000) !== 0;
    const used = base >>> 16;
    this.nextUsed = used === 0 ? this.nextAvail : used & 0x7fff;
    this.usedWrap = used === 0 ? this.availWrap : (used & 0x8000) !== 0;
    if (this.nextAvail >= size || this.nextUsed >= size) throw new QueueError(`packed ring base 0x${base.toString(16)} is beyond the queue size ${size}`);
    this.idDescs = new Uint16Array(size);
  }

  bind(mem: GuestMemory, addrs: RingAddresses, resume: boolean): void {
    const bytes = 16 * this.size;
    if (addrs.descGpa % 16 !== 0 || addrs.availGpa % 4 !== 0 || addrs.usedGpa % 4 !== 0) throw new QueueError('vring addresses are misaligned');
    if (!mem.translateWhole(addrs.descGpa, bytes)) throw new QueueError(`descriptor ring 0x${addrs.descGpa.toString(16)} is outside guest memory`);
    this.descView = mem.view;
    this.descOff = mem.off;
    if ((mem.off & 3) !== 0) throw new QueueError('descriptor ring is misaligned in the mapping');
    this.descWords = mem.words;
    this.descAt = mem.off >>> 2;
    this.ring16 = new Uint16Array(mem.win.buffer, mem.win.byteOffset + mem.off, bytes / 2);
    if (!mem.translateWhole(addrs.availGpa, 4)) throw new QueueError(`driver event area 0x${addrs.availGpa.toString(16)} is outside guest memory`);
    this.driverEvent = new Uint16Array(mem.win.buffer, mem.win.byteOffset + mem.off, 2);
    if (!mem.translateWhole(addrs.usedGpa, 4)) throw new QueueError(`device event area 0x${addrs.usedGpa.toString(16)} is outside guest memory`);
    this.deviceEvent = new Uint16Array(mem.win.buffer, mem.win.byteOffset + mem.off, 2);
    if (resume && this.inflight) this.recover(this.inflight);
  }

  /** Takes the ring positions and the requests in flight from the in-flight region. */
  private recover(inflight: PackedInflight): void {
    let r: ReturnType<PackedInflight['recover']>;
    try {
      r = inflight.recover(
        { avail: { idx: this.nextAvail, wrap: this.availWrap }, used: { idx: this.nextUsed, wrap: this.usedWrap } },
        (slot) => Atomics.load(this.ring16, slot * 8 + 7),
      );
    } catch (e) {
      throw new QueueError((e as Error).message);
    }
    this.nextAvail = r.avail.idx;
    this.availWrap = r.avail.wrap;
    this.nextUsed = r.used.idx;
    this.usedWrap = r.used.wrap;
    this.resubmit = r.resubmit;
    for (const x of r.resubmit) this.idDescs[x.id] = x.num;
  }

  private isAvail(slot: number, wrap: boolean): boolean {
    const flags = Atomics.load(this.ring16, slot * 8 + 7);
    return ((flags & F_AVAIL) !== 0) === wrap && ((flags & F_USED) !== 0) !== wrap;
  }

  hasAvailable(): boolean {
    return this.resubmit.length > 0 || this.isAvail(this.nextAvail, this.availWrap);
  }

  pop(walker: ChainWalker, chain: Chain): number {
    if (this.resubmit.length > 0) {
      // The chain's descriptors as the region kept them: walked as a ring of one chain.
      const r = this.resubmit.shift() as PackedResubmit;
      const rc = walker.walkPacked(r.descs, 0, r.num, 0, chain);
      if (rc !== ChainError.OK || chain.id !== r.id) throw new QueueError(`in-flight request ${r.id}: ${chainErrorText[rc]}`);
      return r.id;
    }
    if (!this.isAvail(this.nextAvail, this.availWrap)) return -1;
    const rc = walker.walkPacked(this.descWords, this.descAt, this.size, this.nextAvail, chain);
    if (rc !== ChainError.OK) throw new QueueError(`chain at slot ${this.nextAvail}: ${chainErrorText[rc]}`);
    const id = chain.id;
    if (id >= this.size) throw new QueueError(`buffer id ${id} is beyond the queue size ${this.size}`);
    if (this.inflight) {
      try {
        this.inflight.fetched(this.descView, this.descOff, this.nextAvail, chain.ringDescs, id);
      } catch (e) {
        throw new QueueError((e as Error).message);
      }
    }
    this.idDescs[id] = chain.ringDescs;
    this.nextAvail += chain.ringDescs;
    if (this.nextAvail >= this.size) {
      this.nextAvail -= this.size;
      this.availWrap = !this.availWrap;
    }
    return id;
  }

  pushUsed(id: number, len: number): void {
    const slot = this.nextUsed;
    let next = slot + (this.idDescs[id] || 1);
    let nextWrap = this.usedWrap;
    if (next >= this.size) {
      next -= this.size;
      nextWrap = !nextWrap;
    }
    this.inflight?.completing(id, next, nextWrap);
    const d = this.descOff + slot * 16;
    this.descView.setUint32(d + 8, len, true);
    this.descView.setUint16(d + 12, id, true);
    Atomics.store(this.ring16, slot * 8 + 7, this.usedWrap ? F_AVAIL | F_USED : 0);
    this.nextUsed = next;
    this.usedWrap = nextWrap;
    this.inflight?.completed(id);
  }

  publishUsed(): void {
    // Each used descriptor was published by its own flags store.
  }

  needsSignal(): boolean {
    const flags = Atomics.load(this.driverEvent, 1);
    const newIdx = this.nextUsed;
    let old = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    if (flags === EVENT_DISABLE) return false;
    if (flags !== EVENT_DESC || !this.eventIdx || !valid) return true;
    const offWrap = Atomics.load(this.driverEvent, 0);
    let off = offWrap & 0x7fff;
    if (newIdx <= old) old -= this.size;
    if (((offWrap & 0x8000) !== 0) !== this.usedWrap) off -= this.size;
    // vring_need_event over the ring positions, as DPDK and libvhost-user do for packed rings.
    return ((newIdx - off - 1) & 0xffff) < ((newIdx - old) & 0xffff);
  }

  enableNotifications(): void {
    Atomics.store(this.deviceEvent, 1, EVENT_ENABLE);
  }

  disableNotifications(): void {
    Atomics.store(this.deviceEvent, 1, EVENT_DISABLE);
  }

  walkAgain(): number {
    // Used descriptors are written over the ring in completion order: an in-flight chain's slots
    // may hold another request's used entry by now.
    return -1;
  }

  /** Requests recovered from the in-flight region that still wait for resubmission. */
  get pendingResubmits(): number {
    return this.resubmit.length;
  }

  vringBase(): number {
    const avail = this.nextAvail | (this.availWrap ? 0x8000 : 0);
    const used = this.nextUsed | (this.usedWrap ? 0x8000 : 0);
    return (avail | (used << 16)) >>> 0;
  }
}
