// In-flight I/O tracking for split rings (vhost-user INFLIGHT_SHMFD): a shared-memory log that
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

/** Bytes one queue's region takes, 64-byte aligned. */
export function inflightQueueBytes(queueSize: number): number {
  return Math.ceil((HEADER + DESC * queueSize) / 64) * 64;
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
    for (let h = this.batchFirst, n = this.batchLen; h !== NONE && n > 0; n--) {
      v.setUint8(HEADER + DESC * h, 0);
      h = v.getUint16(HEADER + DESC * h + 6, true);
    }
    v.setUint16(14, usedIdx, true);
    this.batchFirst = this.batchLast = NONE;
    this.batchLen = 0;
  }
}
