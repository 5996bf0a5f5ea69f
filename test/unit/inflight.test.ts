// In-flight tracking (vhost-user.rst "Inflight I/O tracking"): what a restarted back-end recovers
// from a packed region after dying at each point of the protocol, and that a front-end scribbling
// over the shared region cannot make the back-end write outside it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PackedInflight, SplitInflight, inflightQueueBytes } from '../../src/virtio/inflight.js';

const SIZE = 8;
const F_NEXT = 1;
const F_WRITE = 2;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;

/** A packed ring in plain memory, written like a driver at wrap counter 1. */
function ring(): DataView {
  return new DataView(new ArrayBuffer(16 * SIZE));
}
function putDesc(r: DataView, slot: number, addr: number, len: number, id: number, flags: number): void {
  r.setBigUint64(16 * slot, BigInt(addr), true);
  r.setUint32(16 * slot + 8, len, true);
  r.setUint16(16 * slot + 12, id, true);
  r.setUint16(16 * slot + 14, flags | F_AVAIL, true); // available at wrap 1
}
const flagsOf = (r: DataView) => (slot: number) => r.getUint16(16 * slot + 14, true);
const fresh = { avail: { idx: 0, wrap: true }, used: { idx: 0, wrap: true } };

/** Requests A (3 descriptors, id 5) and B (1 descriptor, id 2) fetched from a fresh region. */
function twoRequests() {
  const buf = new SharedArrayBuffer(inflightQueueBytes(SIZE, true));
  const r = ring();
  putDesc(r, 0, 0x1000, 16, 5, F_NEXT);
  putDesc(r, 1, 0x2000, 4096, 5, F_NEXT | F_WRITE);
  putDesc(r, 2, 0x3000, 1, 5, F_WRITE);
  putDesc(r, 3, 0x4000, 16, 2, 0);
  const inf = new PackedInflight(buf, 0, SIZE);
  assert.deepEqual(inf.recover(fresh, flagsOf(r)).resubmit, []);
  inf.fetched(r, 0, 0, 3, 5);
  inf.fetched(r, 0, 3, 1, 2);
  return { buf, r, inf };
}

/** The device writes the used descriptor for `id` at `slot` (wrap 1). */
function writeUsed(r: DataView, slot: number, id: number): void {
  r.setUint16(16 * slot + 12, id, true);
  r.setUint16(16 * slot + 14, F_AVAIL | F_USED, true);
}

describe('packed in-flight region', () => {
  it('a fresh region starts at the vring base with nothing to resubmit', () => {
    const buf = new SharedArrayBuffer(inflightQueueBytes(SIZE, true));
    const base = { avail: { idx: 3, wrap: false }, used: { idx: 3, wrap: false } };
    const out = new PackedInflight(buf, 0, SIZE).recover(base, flagsOf(ring()));
    assert.deepEqual(out, { ...base, resubmit: [] });
  });

  it('after a crash, requests in flight come back oldest first with their descriptors', () => {
    const { buf, r } = twoRequests();
    const out = new PackedInflight(buf, 0, SIZE).recover(fresh, flagsOf(r));
    assert.deepEqual(out.resubmit.map((x) => [x.id, x.num]), [[5, 3], [2, 1]]);
    const a = new DataView(out.resubmit[0].descs.buffer);
    assert.deepEqual([a.getBigUint64(16, true), a.getUint32(24, true), a.getUint16(30, true) & 3], [0x2000n, 4096, F_NEXT | F_WRITE]);
    assert.deepEqual(out.used, { idx: 0, wrap: true });
    assert.deepEqual(out.avail, { idx: 4, wrap: true });
  });

  it('a completed request is not resubmitted; the ring positions move past it', () => {
    const { buf, r, inf } = twoRequests();
    inf.completing(2, 1, true);
    writeUsed(r, 0, 2);
    inf.completed(2);
    const out = new PackedInflight(buf, 0, SIZE).recover(fresh, flagsOf(r));
    assert.deepEqual(out.resubmit.map((x) => x.id), [5]);
    assert.deepEqual(out.used, { idx: 1, wrap: true });
    assert.deepEqual(out.avail, { idx: 4, wrap: true });
  });

  it('a completion cut off before the guest saw it is rolled back (resubmitted)', () => {
    const { buf, r, inf } = twoRequests();
    inf.completing(2, 1, true);
    const out = new PackedInflight(buf, 0, SIZE).recover(fresh, flagsOf(r));
    assert.deepEqual(out.resubmit.map((x) => x.id), [5, 2]);
    assert.deepEqual(out.used, { idx: 0, wrap: true });
  });

  it('a completion the guest saw but the region did not finish is committed (not resubmitted)', () => {
    const { buf, r, inf } = twoRequests();
    inf.completing(5, 3, true);
    writeUsed(r, 0, 5);
    const out = new PackedInflight(buf, 0, SIZE).recover(fresh, flagsOf(r));
    assert.deepEqual(out.resubmit.map((x) => x.id), [2]);
    assert.deepEqual(out.used, { idx: 3, wrap: true });
    assert.deepEqual(out.avail, { idx: 4, wrap: true });
  });

  it('entries recycle across the ring wrap, and recovery keeps working', () => {
    const buf = new SharedArrayBuffer(inflightQueueBytes(SIZE, true));
    const r = ring();
    const inf = new PackedInflight(buf, 0, SIZE);
    inf.recover(fresh, flagsOf(r));
    // 20 one-descriptor requests, each completed before the next: the ring wraps twice.
    let slot = 0;
    let wrap = true;
    for (let i = 0; i < 20; i++) {
      putDesc(r, slot, 0x1000 * i, 16, i % SIZE, 0);
      inf.fetched(r, 0, slot, 1, i % SIZE);
      const next = (slot + 1) % SIZE;
      const nextWrap: boolean = next === 0 ? !wrap : wrap;
      inf.completing(i % SIZE, next, nextWrap);
      writeUsed(r, slot, i % SIZE);
      inf.completed(i % SIZE);
      slot = next;
      wrap = nextWrap;
    }
    putDesc(r, slot, 0x9000, 16, 7, 0);
    inf.fetched(r, 0, slot, 1, 7);
    const out = new PackedInflight(buf, 0, SIZE).recover(fresh, flagsOf(r));
    assert.deepEqual(out.resubmit.map((x) => x.id), [7]);
    assert.deepEqual(out.used, { idx: slot, wrap });
    assert.deepEqual(out.avail, { idx: (slot + 1) % SIZE, wrap: slot + 1 === SIZE ? !wrap : wrap });
  });

  it('a garbage region stops recovery with an error instead of looping or reading out of bounds', () => {
    const buf = new SharedArrayBuffer(inflightQueueBytes(SIZE, true));
    const v = new DataView(buf);
    v.setUint16(8, 1, true);
    v.setUint16(10, SIZE, true);
    v.setUint16(12, 0xffff, true); // free list empty
    v.setUint16(14, 0xffff, true);
    for (let e = 0; e < SIZE; e++) {
      v.setUint8(32 + 32 * e, 1); // every entry "in flight"
      v.setUint16(32 + 32 * e + 2, e, true); // next: itself
      v.setUint16(32 + 32 * e + 6, 0xffff, true); // num out of range
    }
    assert.throws(() => new PackedInflight(buf, 0, SIZE).recover(fresh, flagsOf(ring())), /descriptors|beyond/);
  });

  it('links the front-end overwrote in the shared region are bounds-checked (packed and split)', () => {
    const { buf, inf } = twoRequests();
    const v = new DataView(buf);
    for (let e = 0; e < SIZE; e++) v.setUint16(32 + 32 * e + 4, 0xfffe, true); // every "last"
    assert.doesNotThrow(() => {
      inf.completing(2, 1, true);
      inf.completed(2);
    });
    const sbuf = new SharedArrayBuffer(inflightQueueBytes(SIZE));
    const split = new SplitInflight(sbuf, 0, SIZE);
    split.recover(0);
    split.begin(3);
    split.begin(5);
    split.completed(3);
    split.completed(5);
    const sv = new DataView(sbuf);
    sv.setUint16(16 + 16 * 3 + 6, 0x7777, true); // the batch link 3 -> 5
    assert.doesNotThrow(() => {
      split.prePublish();
      split.postPublish(2);
    });
  });
});
