// The unit of work between a device and a bdev. Devices preallocate one BdevIo per ring slot and
// reuse it: the scatter list holds references to preallocated guest-memory windows plus offsets,
// so submitting and completing an I/O allocates nothing.

export const IoType = {
  READ: 0,
  WRITE: 1,
  FLUSH: 2,
  UNMAP: 3,
  WRITE_ZEROES: 4,
} as const;
export type IoType = (typeof IoType)[keyof typeof IoType];

export const IoStatus = {
  SUCCESS: 0,
  FAILED: 1,
  /** The bdev cannot take more right now; the device retries later. */
  NOMEM: 2,
} as const;
export type IoStatus = (typeof IoStatus)[keyof typeof IoStatus];

/** A scatter list of byte ranges inside shared buffers (guest memory windows). */
export class IoVecs {
  readonly bufs: Uint8Array[];
  readonly offs: Uint32Array;
  readonly lens: Uint32Array;
  count = 0;
  totalLen = 0;

  constructor(readonly capacity: number) {
    this.bufs = new Array<Uint8Array>(capacity);
    this.offs = new Uint32Array(capacity);
    this.lens = new Uint32Array(capacity);
  }

  reset(): void {
    this.count = 0;
    this.totalLen = 0;
  }

  /** Appends a range; returns false when the list is full. */
  push(buf: Uint8Array, off: number, len: number): boolean {
    if (this.count === this.capacity) return false;
    const i = this.count++;
    this.bufs[i] = buf;
    this.offs[i] = off;
    this.lens[i] = len;
    this.totalLen += len;
    return true;
  }
}

export interface BdevIo {
  type: IoType;
  /** Byte offset on the bdev. */
  offset: number;
  /** Byte length (for READ/WRITE equal to iov.totalLen). */
  length: number;
  iov: IoVecs;
  /** Called exactly once by the channel when the I/O is done. */
  complete(status: IoStatus): void;
}

const bufferCopy = Buffer.prototype.copy;

/** Copies `len` bytes between two Uint8Arrays without creating views (Buffer#copy accepts them). */
export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, len: number): void {
  bufferCopy.call(src, dst, dstOff, srcOff, srcOff + len);
}

/** Copies the scatter list into `dst` starting at dstOff (device WRITE → flat store). */
export function gatherInto(iov: IoVecs, dst: Uint8Array, dstOff: number): void {
  for (let i = 0; i < iov.count; i++) {
    copyBytes(iov.bufs[i], iov.offs[i], dst, dstOff, iov.lens[i]);
    dstOff += iov.lens[i];
  }
}

/** Copies from `src` into the scatter list (flat store → device READ). */
export function scatterFrom(iov: IoVecs, src: Uint8Array, srcOff: number): void {
  for (let i = 0; i < iov.count; i++) {
    copyBytes(src, srcOff, iov.bufs[i], iov.offs[i], iov.lens[i]);
    srcOff += iov.lens[i];
  }
}

const ZEROS = new Uint8Array(64 * 1024);

/**
 * Zeroes `len` bytes of `dst` at `off`. TypedArray#fill on SharedArrayBuffer memory is an order of
 * magnitude slower than copying from a zero buffer (measured: 1.9 µs vs 0.26 µs per 4 KiB).
 */
export function zeroBytes(dst: Uint8Array, off: number, len: number): void {
  while (len > 0) {
    const n = len < ZEROS.length ? len : ZEROS.length;
    bufferCopy.call(ZEROS, dst, off, 0, n);
    off += n;
    len -= n;
  }
}

/** Zero-fills the scatter list. */
export function zeroFill(iov: IoVecs): void {
  for (let i = 0; i < iov.count; i++) zeroBytes(iov.bufs[i], iov.offs[i], iov.lens[i]);
}

/** Copies the first `len` bytes of src into the scatter list (len <= iov.totalLen). */
export function scatterPrefix(iov: IoVecs, src: Uint8Array, len: number): void {
  let srcOff = 0;
  for (let i = 0; i < iov.count && srcOff < len; i++) {
    const n = Math.min(iov.lens[i], len - srcOff);
    copyBytes(src, srcOff, iov.bufs[i], iov.offs[i], n);
    srcOff += n;
  }
}
