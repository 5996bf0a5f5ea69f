// Split virtqueue (virtio 1.x §2.7): avail/used ring access with EVENT_IDX and flag-based
// notification suppression. Index fields go through Atomics so the guest's vCPUs observe
// used-ring entries before the index that publishes them.
import type { GuestMemory } from '../memory/guest-memory.js';
import { ChainError, chainErrorText, type Chain, type ChainWalker } from './desc-chain.js';
import type { SplitInflight } from './inflight.js';
import { QueueError, type RingAddresses, type Virtqueue } from './virtqueue.js';

const DESC_SIZE = 16;
const AVAIL_F_NO_INTERRUPT = 1;
const USED_F_NO_NOTIFY = 1;

export class SplitQueue implements Virtqueue {
  readonly mask: number;
  /** Descriptor table: descriptor i is words [descAt + 4 * i, +4) of descWords. */
  private descWords!: Uint32Array;
  private descAt = 0;
  private avail!: Uint16Array;
  private used16!: Uint16Array;
  private used32!: Uint32Array;
  lastAvail: number;
  /**
   * The driver's avail index as last read: entries up to it are taken without touching the index
   * again (a cache line the driver keeps writing), as virtio implementations' shadow_avail_idx.
   */
  private availSeen: number;
  usedIdx: number;
  private signalledUsed: number;
  private signalledValid = false;
  /** Heads a previous process left in flight, resubmitted before new avail entries. */
  private resubmit: number[] = [];

  constructor(
    readonly size: number,
    readonly eventIdx: boolean,
    lastAvail: number,
    private readonly inflight?: SplitInflight,
  ) {
    this.mask = size - 1;
    this.lastAvail = lastAvail & 0xffff;
    this.availSeen = this.lastAvail;
    this.usedIdx = 0;
    this.signalledUsed = 0;
  }

  /** (Re)binds the ring views; throws QueueError when the rings are not inside guest memory. */
  bind(mem: GuestMemory, addrs: RingAddresses, adoptUsedIdx: boolean): void {
    const n = this.size;
    const descBytes = DESC_SIZE * n;
    const availBytes = 6 + 2 * n;
    const usedBytes = 6 + 8 * n;
    if (addrs.descGpa % 16 !== 0 || addrs.availGpa % 2 !== 0 || addrs.usedGpa % 4 !== 0) {
      throw new QueueError('vring addresses are misaligned');
    }
    if (!mem.translateWhole(addrs.descGpa, descBytes)) throw new QueueError(`descriptor table 0x${addrs.descGpa.toString(16)} is outside guest memory`);
    if ((mem.off & 3) !== 0) throw new QueueError('descriptor table is misaligned in the mapping');
    this.descWords = mem.words;
    this.descAt = mem.off >>> 2;
    if (!mem.translateWhole(addrs.availGpa, availBytes)) throw new QueueError(`avail ring 0x${addrs.availGpa.toString(16)} is outside guest memory`);
    this.avail = new Uint16Array(mem.win.buffer, mem.win.byteOffset + mem.off, availBytes / 2);
    if (!mem.translateWhole(addrs.usedGpa, usedBytes)) throw new QueueError(`used ring 0x${addrs.usedGpa.toString(16)} is outside guest memory`);
    this.used16 = new Uint16Array(mem.win.buffer, mem.win.byteOffset + mem.off, usedBytes / 2);
    this.used32 = new Uint32Array(mem.win.buffer, mem.win.byteOffset + mem.off + 4, 2 * n);
    if (adoptUsedIdx) {
      // The used index lives in guest memory; resume from it (as libvhost-user does).
      this.usedIdx = Atomics.load(this.used16, 1);
      this.signalledValid = false;
      if (this.inflight) {
        const r = this.inflight.recover(this.usedIdx);
        this.lastAvail = r.lastAvail;
        this.availSeen = r.lastAvail;
        this.resubmit = r.resubmit;
      }
    }
  }

  /**
   * Number of new avail entries; reads the driver's index only when the entries seen so far are
   * used up. Throws when the index jumped past the ring size.
   */
  available(): number {
    const seen = (this.availSeen - this.lastAvail) & 0xffff;
    if (seen !== 0) return seen;
    const idx = Atomics.load(this.avail, 1);
    const n = (idx - this.lastAvail) & 0xffff;
    if (n > this.size) throw new QueueError(`avail index moved by ${n}, more than the queue size ${this.size}`);
    this.availSeen = idx;
    return n;
  }

  /** Heads recovered from the in-flight log that still wait for resubmission. */
  get pendingResubmits(): number {
    return this.resubmit.length;
  }

  pop(walker: ChainWalker, chain: Chain): number {
    let head: number;
    if (this.resubmit.length > 0) {
      head = this.resubmit.shift() as number;
    } else {
      if (this.available() === 0) return -1;
      head = this.popHead();
      this.inflight?.begin(head);
    }
    const rc = walker.walk(this.descWords, this.descAt, this.size, head, chain);
    if (rc !== ChainError.OK) throw new QueueError(`chain at head ${head}: ${chainErrorText[rc]}`);
    return head;
  }

  walkAgain(walker: ChainWalker, chain: Chain, head: number): number {
    return walker.walk(this.descWords, this.descAt, this.size, head, chain);
  }

  hasAvailable(): boolean {
    if (this.resubmit.length > 0) return true;
    try {
      return this.available() > 0;
    } catch {
      return true; // pop() reports the bad index
    }
  }

  vringBase(): number {
    return this.lastAvail;
  }

  /** Takes the next avail entry's head; the caller checked available() > 0. */
  popHead(): number {
    const head = this.avail[2 + (this.lastAvail & this.mask)];
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (head >= this.size) throw new QueueError(`descriptor head ${head} is beyond the queue size ${this.size}`);
    return head;
  }

  pushUsed(id: number, len: number): void {
    const slot = (this.usedIdx & this.mask) * 2;
    this.used32[slot] = id;
    this.used32[slot + 1] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.inflight?.completed(id);
  }

  /** Publishes every pushed used entry at once (release ordering via Atomics). */
  publishUsed(): void {
    this.inflight?.prePublish();
    Atomics.store(this.used16, 1, this.usedIdx);
    this.inflight?.postPublish(this.usedIdx);
  }

  /** Whether the driver wants an interrupt for the entries published since the last signal. */
  needsSignal(): boolean {
    if (!this.eventIdx) return (Atomics.load(this.avail, 0) & AVAIL_F_NO_INTERRUPT) === 0;
    const newIdx = this.usedIdx;
    const old = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    if (!valid) return true;
    const usedEvent = Atomics.load(this.avail, 2 + this.size);
    // vring_need_event: did new_idx step past used_event since old?
    return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - old) & 0xffff);
  }

  /** Asks the driver to kick for new entries (call before sleeping, then re-check available()). */
  enableNotifications(): void {
    if (this.eventIdx) Atomics.store(this.used16, 2 + 4 * this.size, this.lastAvail);
    else Atomics.store(this.used16, 0, Atomics.load(this.used16, 0) & ~USED_F_NO_NOTIFY);
  }

  /** Tells the driver not to kick while we poll. */
  disableNotifications(): void {
    if (!this.eventIdx) Atomics.store(this.used16, 0, Atomics.load(this.used16, 0) | USED_F_NO_NOTIFY);
  }
}
