// Byte moves of the bdev layer: the small-copy loop, the native memmove/memset for blocks (guest
// memory is a SharedArrayBuffer), and bounds that hold on both paths.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IoVecs, copyBytes, gatherInto, scatterFrom, zeroBytes } from '../../src/bdev/io.js';

const shared = (n: number) => new Uint8Array(new SharedArrayBuffer(n));
const pattern = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 1) & 0xff);

describe('bdev byte moves', () => {
  for (const len of [1, 16, 64, 65, 4096, 70000]) {
    it(`copyBytes moves exactly ${len} bytes between a plain and a shared buffer, both ways`, () => {
      const src = pattern(len + 10);
      const dst = shared(len + 20);
      copyBytes(src, 3, dst, 5, len);
      assert.deepEqual(dst.subarray(5, 5 + len), src.subarray(3, 3 + len));
      assert.equal(dst[4], 0);
      assert.equal(dst[5 + len], 0);
      const back = new Uint8Array(len);
      copyBytes(dst, 5, back, 0, len);
      assert.deepEqual(back, src.subarray(3, 3 + len));
    });
  }

  it('zeroBytes clears exactly its range', () => {
    const b = shared(9000).fill(0xaa);
    zeroBytes(b, 100, 8192);
    assert.equal(b[99], 0xaa);
    assert.ok(b.subarray(100, 8292).every((x) => x === 0));
    assert.equal(b[8292], 0xaa);
  });

  it('ranges outside a buffer throw on both paths instead of touching other memory', () => {
    const a = new Uint8Array(4096);
    const b = shared(4096);
    for (const len of [16, 4096]) {
      assert.throws(() => copyBytes(a, 1, b, 0, len + 4096 - len), RangeError);
      assert.throws(() => copyBytes(a, 0, b, 4096 - len + 1, len), RangeError);
      assert.throws(() => copyBytes(a, -1, b, 0, len), RangeError);
    }
    assert.throws(() => zeroBytes(b, 1, 4096), RangeError);
  });

  it('gather and scatter walk a scatter list in order', () => {
    const guest = shared(3 * 4096);
    const iov = new IoVecs(3);
    iov.push(guest, 8192, 512);
    iov.push(guest, 0, 4096);
    iov.push(guest, 5000, 100);
    const flat = pattern(4708);
    scatterFrom(iov, flat, 0);
    const again = new Uint8Array(4708);
    gatherInto(iov, again, 0);
    assert.deepEqual(again, flat);
    assert.deepEqual(guest.subarray(0, 4096), flat.subarray(512, 4608));
  });
});
