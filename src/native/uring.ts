// Typed facade over the addon's io_uring and file-syscall functions (native/uring.cc). Like the
// rest of the addon every call returns a non-negative result or -errno; no policy lives here.
import { errnoName } from '../util/errno.js';
import { native } from './index.js';

/** A read or write of bytes [skip, skip+len) of a scatter list at file `offset`; align > 0 checks O_DIRECT alignment. */
export type RwArgs = [fd: number, offset: number, bufs: Uint8Array[], offs: Uint32Array, lens: Uint32Array, count: number, skip: number, len: number, align: number];

/** One io_uring with a registered eventfd; slot numbers are the SQEs' user_data. */
export interface UringRing {
  /** io_uring_queue_init with IORING_SETUP_* `flags` (default none) + eventfd + io_uring_register_eventfd: 0 | -errno. */
  init(flags?: number): number;
  eventFd(): number;
  /** The IORING_SETUP_* flags the open ring was created with. */
  setupFlags(): number;
  /**
   * Queues IORING_OP_READV/WRITEV of bytes [skip, skip+len) of the scatter list at `offset`, with
   * iovecs pointing into the views. -EINVAL: align > 0 and an iovec is not aligned to it;
   * -E2BIG: more segments than maxIovPerSlot; -EAGAIN: SQ full; -EFAULT: bad scatter list.
   */
  prepRw(write: boolean, slot: number, ...args: RwArgs): number;
  /** prepRw of the one segment buf[off, off+len): the common case, at half the call's cost. */
  prepRw1(write: boolean, slot: number, ...args: Rw1Args): number;
  /** prepRw1 through fixed buffer `index`, which must hold buf[off, off+len) (-ENOENT: none there, -EFAULT: outside it). */
  prepRwFixed(write: boolean, slot: number, ...args: [...Rw1Args, index: number]): number;
  /** An empty table of n fixed buffers: 0 | -errno. */
  registerBuffers(n: number): number;
  /** Fixed buffer `index` becomes the view's bytes (the kernel pins their pages), or empty (null): 0 | -errno. */
  setBuffer(index: number, view: Uint8Array | null): number;
  prepFsync(slot: number, fd: number, datasync: boolean): number;
  prepFallocate(slot: number, fd: number, mode: number, offset: number, len: number): number;
  /** io_uring_submit: SQEs submitted | -errno. */
  submit(): number;
  /** Copies up to `max` CQEs into out as (user_data, res) pairs; never blocks. */
  reap(out: Int32Array, max: number): number;
  /** Blocks until a CQE is available: 0 | -ETIME | -errno. */
  wait(timeoutMs: number): number;
  close(): void;
}

export interface UringConstants {
  O_RDONLY: number;
  O_RDWR: number;
  O_DIRECT: number;
  S_IFMT: number;
  S_IFREG: number;
  S_IFBLK: number;
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  FALLOC_FL_ZERO_RANGE: number;
  IORING_SETUP_COOP_TASKRUN: number;
  IORING_SETUP_TASKRUN_FLAG: number;
  IORING_SETUP_SINGLE_ISSUER: number;
  IORING_SETUP_DEFER_TASKRUN: number;
}

/** The same for the one segment buf[off, off+len). */
export type Rw1Args = [fd: number, offset: number, buf: Uint8Array, off: number, len: number, align: number];

type RwFn = (...args: RwArgs) => number;

interface UringAddon {
  Uring: new (entries: number, maxIovPerSlot: number) => UringRing;
  /** Synchronous preadv/pwritev(2) of bytes [skip, skip+len) of the scatter list: bytes | -errno. */
  filePreadv: RwFn;
  filePwritev: RwFn;
  /** pread/pwrite(2) of the one segment buf[off, off+len): bytes | -errno. */
  filePread1: (...args: Rw1Args) => number;
  filePwrite1: (...args: Rw1Args) => number;
  /** open(2) with O_CLOEXEC added: fd | -errno. */
  fileOpen(path: string, flags: number): number;
  /** statx into out = [mode, size, blksize, blocks, dioMemAlign, dioOffsetAlign, rdevMajor, rdevMinor]. */
  fileStat(fd: number, out: Float64Array): number;
  /** fstatfs(2)'s f_type (the file system's magic number) | -errno. */
  fileFsType(fd: number): number;
  fileFdatasync(fd: number): number;
  fileFallocate(fd: number, mode: number, offset: number, len: number): number;
  blkGetSize64(fd: number): number;
  blkGetSectorSize(fd: number): number;
  blkDiscard(fd: number, offset: number, len: number): number;
  blkZeroout(fd: number, offset: number, len: number): number;
  /** posix_memalign'ed zeroed memory as a SharedArrayBuffer | -errno. */
  allocAligned(size: number, align: number): SharedArrayBuffer | number;
  uringConstants: UringConstants;
}

export const uringNative = native as unknown as UringAddon;
export const fileConst: UringConstants = uringNative.uringConstants;

export interface FileStat {
  mode: number;
  size: number;
  blksize: number;
  /** Allocated 512-byte units. */
  blocks: number;
  dioMemAlign: number;
  dioOffsetAlign: number;
  isBlockDevice: boolean;
  isRegular: boolean;
}

/** statx(fd) (with STATX_DIOALIGN); returns -errno on failure. */
export function fileStat(fd: number): FileStat | number {
  const out = new Float64Array(8);
  const rc = uringNative.fileStat(fd, out);
  if (rc < 0) return rc;
  const fmt = out[0] & fileConst.S_IFMT;
  return {
    mode: out[0],
    size: out[1],
    blksize: out[2],
    blocks: out[3],
    dioMemAlign: out[4],
    dioOffsetAlign: out[5],
    isBlockDevice: fmt === fileConst.S_IFBLK,
    isRegular: fmt === fileConst.S_IFREG,
  };
}

/** Aligned, zero-filled memory for O_DIRECT bounce and zero buffers; throws on failure. */
export function allocAligned(size: number, align: number): Uint8Array {
  const r = uringNative.allocAligned(size, align);
  if (typeof r === 'number') throw new Error(`posix_memalign(${size}, ${align}) failed: ${errnoName(r)}`);
  return new Uint8Array(r);
}
