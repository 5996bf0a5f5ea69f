// In-flight I/O tracking for split and packed rings (vhost-user INFLIGHT_SHMFD): a shared-memory log that
// survives the back-end, so a restarted vhostd completes every request the guest submitted exactly
// once. The front-end only stores the buffer; its layout is the back-end's, modelled on
// libvhost-user's: a 16-byte queue header then one 16-byte state per descriptor head.
//
//   header: features u64, version u16, desc_num u16, last_batch_head u16, used_idx u16
//   desc[i]: inflight u8, pad[5], next u16 (links the last published batch), counter u64
const HEADER = 16;
const DESC = 16;
const VERSION = 1;
const NONE = 0xffff;

/** Bytes one queue's region takes, 64-byte aligned (the packed layout is larger). */
export function inflightQueueBytes(queueSize: number, packed = false): number {
  const bytes = packed ? PACKED_HEADER + PACKED_DESC * queueSize : HEADER + DESC * queueSize;
  return Math.ceil(bytes / 64) * 64;
}

export class SplitInflight {
  private readonly v: DataView;
  private counter = 0;
  private batchFirst = NONE;
  private batchLast = NONE;
  private batchLen = 0;

  constructor(
    buffer: SharedArrayBuffer,
    offset: number,
    private readonly size: number,
  ) {
    if (offset + inflightQueueBytes(size) > buffer.byteLength) throw new Error('in-flight region is smaller than the queue needs');
    this.v = new DataView(buffer, offset, inflightQueueBytes(size));
  }

  /**
   * Reads the log at queue start. A fresh region is initialised. Otherwise the previous process's
   * last batch is reconciled with the used index, and the heads still in flight are returned
   * oldest first for resubmission; `lastAvail` is where new avail entries start.
   */
  recover(usedIdx: number): { lastAvail: number; resubmit: number[] } {
    const v = this.v;
    if (v.getUint16(8, true) !== VERSION || v.getUint16(10, true) !== this.size) {
      new Uint8Array(v.buffer, v.byteOffset, v.byteLength).fill(0);
      v.setUint16(8, VERSION, true);
      v.setUint16(10, this.size, true);
      v.setUint16(12, NONE, true);
      v.setUint16(14, usedIdx, true);
      return { lastAvail: usedIdx, resubmit: [] };
    }
    const logged = v.getUint16(14, true);
    if (logged !== usedIdx) {
      // The used index of the last batch was published but its heads not yet cleared.
      let n = (usedIdx - logged) & 0xffff;
      for (let h = v.getUint16(12, true); h !== NONE && h < this.size && n > 0; n--) {
        v.setUint8(HEADER + DESC * h, 0);
        h = v.getUint16(HEADER + DESC * h + 6, true);
      }
      v.setUint16(14, usedIdx, true);
    }
    const inflight: Array<{ head: number; counter: bigint }> = [];
    for (let h = 0; h < this.size; h++) {
      if (v.getUint8(HEADER + DESC * h) === 1) inflight.push({ head: h, counter: v.getBigUint64(HEADER + DESC * h + 8, true) });
    }
    inflight.sort((a, b) => (a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : 0));
    this.counter = inflight.length > 0 ? Number(inflight[inflight.length - 1].counter) + 1 : 0;
    return { lastAvail: (usedIdx + inflight.length) & 0xffff, resubmit: inflight.map((e) => e.head) };
  }

  /** A head was taken from the avail ring. */
  begin(head: number): void {
    const o = HEADER + DESC * head;
    this.v.setUint32(o + 8, this.counter % 0x100000000, true);
    this.v.setUint32(o + 12, Math.floor(this.counter / 0x100000000), true);
    this.counter++;
    this.v.setUint8(o, 1);
  }

  /** A head's used entry was written (not yet published). */
  completed(head: number): void {
    const v = this.v;
    v.setUint16(HEADER + DESC * head + 6, NONE, true);
    if (this.batchLast !== NONE) v.setUint16(HEADER + DESC * this.batchLast + 6, head, true);
    else this.batchFirst = head;
    this.batchLast = head;
    this.batchLen++;
  }

  /** Before the used index is published: remember which heads the batch holds. */
  prePublish(): void {
    this.v.setUint16(12, this.batchFirst, true);
  }

  /** After the used index is published: the batch's heads are no longer in flight. */
  postPublish(usedIdx: number): void {
    const v = this.v;
    // The links are read back from shared memory the front-end can write: bounds-check them.
    for (let h = this.batchFirst, n = this.batchLen; h < this.size && n > 0; n--) {
      v.setUint8(HEADER + DESC * h, 0);
      h = v.getUint16(HEADER + DESC * h + 6, true);
    }
    v.setUint16(14, usedIdx, true);
    this.batchFirst = this.batchLast = NONE;
    this.batchLen = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Packed rings: QEMU's QueueRegionPacked / DescStatePacked layout and algorithm
// (docs/interop/vhost-user.rst, "Inflight I/O tracking"). Every fetched descriptor is copied into
// the region, chained from its head entry, so a restarted back-end can resubmit a request whose
// ring slots the guest has since reused. QEMU cannot tell a restarted back-end where a packed
// ring stood (no index lives in guest memory), so the region is also where the ring's avail and
// used positions are recovered from.
//
//   header (32): features u64, version u16, desc_num u16, free_head u16, old_free_head u16,
//                used_idx u16, old_used_idx u16, used_wrap_counter u8, old_used_wrap_counter u8
//   desc[i] (32): inflight u8, pad u8, next u16, last u16, num u16, counter u64, id u16,
//                 flags u16, len u32, addr u64
const PACKED_HEADER = 32;
const PACKED_DESC = 32;
const H_VERSION = 8;
const H_DESC_NUM = 10;
const H_FREE_HEAD = 12;
const H_OLD_FREE_HEAD = 14;
const H_USED_IDX = 16;
const H_OLD_USED_IDX = 18;
const H_USED_WRAP = 20;
const H_OLD_USED_WRAP = 21;
const D_INFLIGHT = 0;
const D_NEXT = 2;
const D_LAST = 4;
const D_NUM = 6;
const D_COUNTER = 8;
const D_ID = 16;
const D_FLAGS = 18;
const D_LEN = 20;
const D_ADDR = 24;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;

/** Ring positions: index plus wrap counter. */
export interface PackedPosition {
  idx: number;
  wrap: boolean;
}

/** A request recovered from the region: its descriptors, in ring-descriptor format. */
export interface PackedResubmit {
  /** Buffer id (of the chain's last descriptor). */
  id: number;
  /** Ring slots the chain took. */
  num: number;
  /** num × 16 bytes: addr u64, len u32, id u16, flags u16 — a packed ring of one chain, as words. */
  descs: Uint32Array;
}

export class PackedInflight {
  private readonly v: DataView;
  private counter = 0;
  /** Region entry holding the head of the request with each buffer id. */
  private readonly entryOfId: Uint16Array;

  constructor(
    buffer: SharedArrayBuffer,
    offset: number,
    private readonly size: number,
  ) {
    if (offset + inflightQueueBytes(size, true) > buffer.byteLength) throw new Error('in-flight region is smaller than the queue needs');
    this.v = new DataView(buffer, offset, inflightQueueBytes(size, true));
    this.entryOfId = new Uint16Array(size);
  }

  private d(i: number): number {
    return PACKED_HEADER + PACKED_DESC * i;
  }

  /**
   * Reads the region at queue start. A fresh region is initialised at `base` (the vring base the
   * front-end sent). A region a previous process wrote wins over `base`: its last update is
   * committed or rolled back against the ring's flags (`ringFlags(slot)`), and the requests still
   * in flight come back oldest first, with where the ring's avail and used positions stand.
   */
  recover(
    base: { avail: PackedPosition; used: PackedPosition },
    ringFlags: (slot: number) => number,
  ): { avail: PackedPosition; used: PackedPosition; resubmit: PackedResubmit[] } {
    const v = this.v;
    const n = this.size;
    if (v.getUint16(H_VERSION, true) !== VERSION || v.getUint16(H_DESC_NUM, true) !== n) {
      new Uint8Array(v.buffer, v.byteOffset, v.byteLength).fill(0);
      v.setUint16(H_VERSION, VERSION, true);
      v.setUint16(H_DESC_NUM, n, true);
      for (let i = 0; i < n; i++) v.setUint16(this.d(i) + D_NEXT, i + 1, true);
      // Nothing is in flight: avail and used stand together.
      v.setUint16(H_USED_IDX, base.used.idx, true);
      v.setUint16(H_OLD_USED_IDX, base.used.idx, true);
      v.setUint8(H_USED_WRAP, base.used.wrap ? 1 : 0);
      v.setUint8(H_OLD_USED_WRAP, base.used.wrap ? 1 : 0);
      return { avail: base.avail, used: base.used, resubmit: [] };
    }
    // An update interrupted between used_idx and old_used_idx: did the guest see it?
    const oldUsed = v.getUint16(H_OLD_USED_IDX, true);
    if (v.getUint16(H_USED_IDX, true) !== oldUsed || v.getUint8(H_USED_WRAP) !== v.getUint8(H_OLD_USED_WRAP)) {
      const wrap = v.getUint8(H_OLD_USED_WRAP) !== 0;
      const availFlags = wrap ? F_AVAIL : F_USED;
      const flags = oldUsed < n ? ringFlags(oldUsed) & (F_AVAIL | F_USED) : availFlags;
      if (flags !== availFlags) {
        // The used descriptor was written: commit.
        v.setUint16(H_OLD_FREE_HEAD, v.getUint16(H_FREE_HEAD, true), true);
        v.setUint16(H_OLD_USED_IDX, v.getUint16(H_USED_IDX, true), true);
        v.setUint8(H_OLD_USED_WRAP, v.getUint8(H_USED_WRAP));
      }
    }
    // Roll back anything in progress (a half-recorded fetch, an uncommitted completion).
    v.setUint16(H_FREE_HEAD, v.getUint16(H_OLD_FREE_HEAD, true), true);
    v.setUint16(H_USED_IDX, v.getUint16(H_OLD_USED_IDX, true), true);
    v.setUint8(H_USED_WRAP, v.getUint8(H_OLD_USED_WRAP));
    // Entries on the free list are not in flight (bounded walk: the region may be garbage).
    for (let i = v.getUint16(H_FREE_HEAD, true), steps = 0; i < n && steps < n; steps++) {
      v.setUint8(this.d(i) + D_INFLIGHT, 0);
      i = v.getUint16(this.d(i) + D_NEXT, true);
    }
    const heads: Array<{ e: number; counter: bigint }> = [];
    for (let e = 0; e < n; e++) if (v.getUint8(this.d(e) + D_INFLIGHT) === 1) heads.push({ e, counter: v.getBigUint64(this.d(e) + D_COUNTER, true) });
    heads.sort((a, b) => (a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : 0));
    const used: PackedPosition = { idx: v.getUint16(H_USED_IDX, true), wrap: v.getUint8(H_USED_WRAP) !== 0 };
    if (used.idx >= n) throw new Error(`in-flight region: used index ${used.idx} is beyond the queue size ${n}`);
    const resubmit: PackedResubmit[] = [];
    let slots = 0;
    for (const { e } of heads) {
      const num = v.getUint16(this.d(e) + D_NUM, true);
      if (num === 0 || num > n) throw new Error(`in-flight region: entry ${e} has ${num} descriptors`);
      const words = new Uint32Array(4 * num);
      const descs = new DataView(words.buffer);
      let i = e;
      for (let k = 0; k < num; k++) {
        if (i >= n) throw new Error(`in-flight region: chain of entry ${e} leaves the table`);
        const o = this.d(i);
        descs.setBigUint64(16 * k, v.getBigUint64(o + D_ADDR, true), true);
        descs.setUint32(16 * k + 8, v.getUint32(o + D_LEN, true), true);
        descs.setUint16(16 * k + 12, v.getUint16(o + D_ID, true), true);
        descs.setUint16(16 * k + 14, v.getUint16(o + D_FLAGS, true), true);
        if (k < num - 1) i = v.getUint16(o + D_NEXT, true);
      }
      const id = v.getUint16(this.d(i) + D_ID, true);
      if (id >= n) throw new Error(`in-flight region: buffer id ${id} is beyond the queue size ${n}`);
      this.entryOfId[id] = e;
      resubmit.push({ id, num, descs: words });
      slots += num;
    }
    this.counter = heads.length > 0 ? Number(heads[heads.length - 1].counter) + 1 : 0;
    // Fetching resumes after every slot that was used or is still in flight.
    let availIdx = used.idx + slots;
    let availWrap = used.wrap;
    while (availIdx >= n) {
      availIdx -= n;
      availWrap = !availWrap;
    }
    return { avail: { idx: availIdx, wrap: availWrap }, used, resubmit };
  }

  /** Records a chain just fetched: `count` ring descriptors from `slot` (`ring` views the ring). */
  fetched(ring: DataView, ringOff: number, slot: number, count: number, id: number): void {
    const v = this.v;
    const n = this.size;
    const head = v.getUint16(H_OLD_FREE_HEAD, true);
    if (head >= n) throw new Error('in-flight region: no free entry for a fetched request');
    const h = this.d(head);
    v.setUint16(h + D_NUM, 0, true);
    v.setUint32(h + D_COUNTER, this.counter % 0x100000000, true);
    v.setUint32(h + D_COUNTER + 4, Math.floor(this.counter / 0x100000000), true);
    this.counter++;
    v.setUint8(h + D_INFLIGHT, 1);
    for (let k = 0; k < count; k++) {
      const free = v.getUint16(H_FREE_HEAD, true);
      if (free >= n) throw new Error('in-flight region: descriptor entries ran out');
      if (k === count - 1) v.setUint16(h + D_LAST, free, true);
      v.setUint16(h + D_NUM, k + 1, true);
      const r = ringOff + 16 * ((slot + k) % n);
      const o = this.d(free);
      v.setUint32(o + D_ADDR, ring.getUint32(r, true), true);
      v.setUint32(o + D_ADDR + 4, ring.getUint32(r + 4, true), true);
      v.setUint32(o + D_LEN, ring.getUint32(r + 8, true), true);
      v.setUint16(o + D_ID, ring.getUint16(r + 12, true), true);
      v.setUint16(o + D_FLAGS, ring.getUint16(r + 14, true), true);
      v.setUint16(H_FREE_HEAD, v.getUint16(o + D_NEXT, true), true);
    }
    v.setUint16(H_OLD_FREE_HEAD, v.getUint16(H_FREE_HEAD, true), true);
    this.entryOfId[id] = head;
  }

  /** Before the used descriptor of `id` is written: return its entries, used_idx moves to (nextIdx, nextWrap). */
  completing(id: number, nextIdx: number, nextWrap: boolean): void {
    const v = this.v;
    const e = this.entryOfId[id];
    // `last` comes back from shared memory the front-end can write: a bad one loses this entry's
    // place on the free list (the front-end's own tracking), never a write outside the region.
    const last = v.getUint16(this.d(e) + D_LAST, true);
    if (last < this.size) v.setUint16(this.d(last) + D_NEXT, v.getUint16(H_FREE_HEAD, true), true);
    v.setUint16(H_FREE_HEAD, e, true);
    v.setUint16(H_USED_IDX, nextIdx, true);
    v.setUint8(H_USED_WRAP, nextWrap ? 1 : 0);
  }

  /** After the used descriptor of `id` was published: the update is committed. */
  completed(id: number): void {
    const v = this.v;
    v.setUint8(this.d(this.entryOfId[id]) + D_INFLIGHT, 0);
    v.setUint16(H_OLD_FREE_HEAD, v.getUint16(H_FREE_HEAD, true), true);
    v.setUint16(H_OLD_USED_IDX, v.getUint16(H_USED_IDX, true), true);
    v.setUint8(H_OLD_USED_WRAP, v.getUint8(H_USED_WRAP));
  }
}
