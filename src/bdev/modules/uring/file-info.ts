// Opening and sizing the backing file of a uring/aio bdev on the control thread: O_DIRECT with a
// logged fallback to buffered I/O, regular file vs block device, size and logical block size.
import type { Logger } from 'pino';
import { native } from '../../../native/index.js';
import { fileConst, fileStat, uringNative } from '../../../native/uring.js';
import { Errno, type ErrnoName } from '../../../util/errno.js';
import { VhostdError } from '../../../util/errors.js';

/**
 * An RPC error with code -errno (as SPDK replies) whose message is strerror() followed by what
 * exactly was wrong, e.g. "No such file or directory: cannot open /x". `errno`: a name, or a
 * number of either sign.
 */
export function fileError(errno: ErrnoName | number, detail: string): VhostdError {
  return VhostdError.errnoWithDetail(errno, detail);
}

export interface OpenedFile {
  fd: number;
  /** Opened with O_DIRECT. */
  direct: boolean;
  blockDevice: boolean;
  /** File size, or BLKGETSIZE64 for a block device. */
  sizeBytes: number;
  /** BLKSSZGET of a block device; 0 for a regular file (not detectable, as in SPDK). */
  logicalBlockSize: number;
  /** Alignment O_DIRECT needs for buffer addresses and lengths (0 when buffered). */
  dioAlign: number;
  /** A regular file on a memory file system (tmpfs, ramfs): its I/O never waits for a device. */
  inMemory: boolean;
}

/** statfs(2) f_type of the file systems whose files live in RAM (linux/magic.h). */
const MEMORY_FS_MAGIC = new Set([0x01021994 /* TMPFS_MAGIC */, 0x858458f6 /* RAMFS_MAGIC */]);

export interface OpenOptions {
  readonly: boolean;
  log: Logger;
  /** Skip O_DIRECT (tests; a block size the file's direct I/O alignment does not divide). */
  buffered?: boolean;
}

function openFd(filename: string, readonly: boolean, direct: boolean): number {
  const flags = (readonly ? fileConst.O_RDONLY : fileConst.O_RDWR) | (direct ? fileConst.O_DIRECT : 0);
  return uringNative.fileOpen(filename, flags);
}

/** Opens `filename` (O_DIRECT unless refused) and sizes it; throws an RPC error, leaking no fd. */
export function openBackingFile(filename: string, opts: OpenOptions): OpenedFile {
  if (filename === '') throw fileError('EINVAL', 'filename must not be empty');
  let direct = !opts.buffered;
  let fd = openFd(filename, opts.readonly, direct);
  if (fd === -Errno.EINVAL && direct) {
    // tmpfs before Linux 6.6, ramfs, some FUSE file systems: no O_DIRECT at all.
    opts.log.warn({ filename }, `O_DIRECT refused by the file system of ${filename} (EINVAL): using buffered I/O`);
    direct = false;
    fd = openFd(filename, opts.readonly, false);
  }
  if (fd < 0) throw fileError(fd, `cannot open ${filename}${opts.readonly ? ' read-only' : ' read-write'}`);
  try {
    const st = fileStat(fd);
    if (typeof st === 'number') throw fileError(st, `cannot stat ${filename}`);
    if (st.isBlockDevice) {
      const size = uringNative.blkGetSize64(fd);
      if (size < 0) throw fileError(size, `BLKGETSIZE64 failed on ${filename}`);
      const lbs = uringNative.blkGetSectorSize(fd);
      if (lbs < 0) throw fileError(lbs, `BLKSSZGET failed on ${filename}`);
      const dioAlign = direct ? Math.max(512, lbs, st.dioMemAlign) : 0;
      return { fd, direct, blockDevice: true, sizeBytes: size, logicalBlockSize: lbs, dioAlign, inMemory: false };
    }
    if (!st.isRegular) throw fileError('EINVAL', `${filename} is neither a regular file nor a block device`);
    if (direct && st.dioOffsetAlign === 0) {
      // statx says this file has no direct I/O even though open() accepted the flag.
      opts.log.warn({ filename }, `${filename} does not support direct I/O (statx): using buffered I/O`);
      native.close(fd);
      fd = -1;
      fd = openFd(filename, opts.readonly, false);
      if (fd < 0) throw fileError(fd, `cannot open ${filename}`);
      direct = false;
    }
    const dioAlign = direct ? Math.max(512, st.dioOffsetAlign, st.dioMemAlign) : 0;
    const inMemory = MEMORY_FS_MAGIC.has(uringNative.fileFsType(fd));
    return { fd, direct, blockDevice: false, sizeBytes: st.size, logicalBlockSize: 0, dioAlign, inMemory };
  } catch (e) {
    if (fd >= 0) native.close(fd);
    throw e;
  }
}
