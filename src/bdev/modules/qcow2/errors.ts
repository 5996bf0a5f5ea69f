// Every failure the qcow2 engine reports on purpose is a Qcow2Error: a refused image, a
// corrupted table met during a request, a request the engine cannot serve. Its message is meant
// for an operator ("disk.qcow2: L1 table at 0x30000 extends past the end of the file ..."),
// `errno` for the bdev layer that turns it into a status.
import type { ErrnoName } from '../../../util/errno.js';

export type Qcow2ErrorKind =
  /** The image (or a table in it) breaks the format: refuse, never write through it. */
  | 'corrupt'
  /** Valid qcow2, but uses something this engine does not implement. */
  | 'unsupported'
  /** The request itself is wrong (out of range, write to a read-only image). */
  | 'invalid'
  /** A refcount would exceed its width, the image would exceed a limit. */
  | 'limit';

const ERRNO_OF: Record<Qcow2ErrorKind, ErrnoName> = {
  corrupt: 'EIO',
  unsupported: 'ENOTSUP',
  invalid: 'EINVAL',
  limit: 'ENOSPC',
};

export class Qcow2Error extends Error {
  override readonly name = 'Qcow2Error';
  readonly errno: ErrnoName;

  constructor(
    readonly kind: Qcow2ErrorKind,
    message: string,
    options?: { cause?: unknown; errno?: ErrnoName },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.errno = options?.errno ?? ERRNO_OF[kind];
  }
}

/** "0x30000": offsets in messages are hex, as qemu-img check prints them. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
