// Scatter-list helpers the target layer needs beyond src/bdev/io.ts: partial scatter of a small
// response buffer, byte reads at a logical offset, prefix views and repeated-block views. None of
// them allocate; the "views" are IoVecs entries pointing into the original buffers.
import { type IoVecs, sliceInto } from '../bdev/io.js';

/** The byte at logical offset pos of the scatter list (pos < iov.totalLen). */
export function iovByte(iov: IoVecs, pos: number): number {
  for (let i = 0; i < iov.count; i++) {
    const l = iov.lens[i];
    if (pos < l) return iov.bufs[i][iov.offs[i] + pos];
    pos -= l;
  }
  return 0;
}

export function iovBe16(iov: IoVecs, pos: number): number {
  return (iovByte(iov, pos) << 8) | iovByte(iov, pos + 1);
}

export function iovBe32(iov: IoVecs, pos: number): number {
  return ((iovByte(iov, pos) << 24) | (iovByte(iov, pos + 1) << 16) | (iovByte(iov, pos + 2) << 8) | iovByte(iov, pos + 3)) >>> 0;
}

/** 64-bit big-endian as a double (inexact above 2^53, see cdb.ts be64). */
export function iovBe64(iov: IoVecs, pos: number): number {
  return iovBe32(iov, pos) * 0x1_0000_0000 + iovBe32(iov, pos + 4);
}

/** Fills dst with entries covering the first `len` bytes of src; false if dst is too small or src too short. */
export function prefixInto(src: IoVecs, dst: IoVecs, len: number): boolean {
  return sliceInto(src, 0, src.count, 0, len, dst) && dst.totalLen === len;
}

/** Number of entries of src that the first `len` bytes span. */
export function segmentsSpanned(src: IoVecs, len: number): number {
  let covered = 0;
  let i = 0;
  while (i < src.count && covered < len) covered += src.lens[i++];
  return i;
}

/**
 * Fills dst with `reps` back-to-back copies of the first `blockLen` bytes of src (as repeated
 * entries pointing at the same bytes); false if dst cannot hold them.
 */
export function repeatInto(src: IoVecs, blockLen: number, reps: number, dst: IoVecs): boolean {
  dst.reset();
  for (let r = 0; r < reps; r++) {
    let left = blockLen;
    for (let i = 0; i < src.count && left > 0; i++) {
      const n = Math.min(src.lens[i], left);
      if (!dst.push(src.bufs[i], src.offs[i], n)) return false;
      left -= n;
    }
  }
  return true;
}

/** Whether the first `len` bytes of the scatter list are all zero. */
export function prefixIsZero(iov: IoVecs, len: number): boolean {
  let left = len;
  for (let i = 0; i < iov.count && left > 0; i++) {
    const n = Math.min(iov.lens[i], left);
    const b = iov.bufs[i];
    const end = iov.offs[i] + n;
    for (let j = iov.offs[i]; j < end; j++) if (b[j] !== 0) return false;
    left -= n;
  }
  return true;
}
