// Byte access across a chain's scatter list without creating views: copy a header out or cut a
// sub-range into another scatter list (writing a response in is io.ts's scatterPrefix).
import { type IoVecs, copyBytes } from '../bdev/io.js';

/** Copies `len` bytes starting at byte `skip` of segments [from, to) of `src` into `dst`; returns bytes copied. */
export function readBytes(src: IoVecs, from: number, to: number, skip: number, dst: Uint8Array, len: number): number {
  let done = 0;
  for (let i = from; i < to && done < len; i++) {
    let segLen = src.lens[i];
    if (skip >= segLen) {
      skip -= segLen;
      continue;
    }
    segLen -= skip;
    const n = Math.min(segLen, len - done);
    copyBytes(src.bufs[i], src.offs[i] + skip, dst, done, n);
    skip = 0;
    done += n;
  }
  return done;
}

/** Sets `dst` to the byte range [skip, skip+len) of segments [from, to) of `src`; false if it does not fit. */
export function sliceInto(src: IoVecs, from: number, to: number, skip: number, len: number, dst: IoVecs): boolean {
  dst.reset();
  for (let i = from; i < to && len > 0; i++) {
    let segLen = src.lens[i];
    if (skip >= segLen) {
      skip -= segLen;
      continue;
    }
    segLen -= skip;
    const n = Math.min(segLen, len);
    if (!dst.push(src.bufs[i], src.offs[i] + skip, n)) return false;
    skip = 0;
    len -= n;
  }
  return true;
}
