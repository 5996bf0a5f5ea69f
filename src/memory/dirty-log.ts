// The dirty-page log of live migration (vhost-user SET_LOG_BASE, QEMU's vhost_log): one bit per
// 4 KiB page of guest-physical address space, in a shared memfd QEMU reads and clears while the
// guest runs. While LOG_ALL is on, every guest page the device writes is marked here after the
// write, so the next migration pass copies it again; a missed bit leaves stale data in the
// migrated guest.
//
// Bits are set with an atomic OR (Atomics.or is sequentially consistent, so the data written
// before is visible first, as QEMU requires), since QEMU shares one log among all vhost devices of
// a VM and clears it word by word with an atomic exchange.

/** Structured-cloneable description of a mapped log, sent to reactors. */
export interface DirtyLogShare {
  buffer: SharedArrayBuffer;
  /** Offset of the log's first byte in `buffer` (SET_LOG_BASE's mmap_offset). */
  base: number;
  /** Log size in bytes (SET_LOG_BASE's mmap_size). */
  size: number;
}

export const LOG_PAGE_SHIFT = 12;
export const LOG_PAGE_SIZE = 1 << LOG_PAGE_SHIFT;

export class DirtyLog {
  /** The log as 32-bit words: page p is bit p % 32 of word p / 32 (QEMU's u64 chunks, little-endian). */
  private readonly words: Uint32Array | undefined;
  /** Bytes at the log's start and end that are not a whole word (an odd mmap_offset or size). */
  private readonly bytes: Uint8Array;
  /** Pages the log covers. */
  readonly pages: number;

  constructor(share: DirtyLogShare) {
    this.pages = share.size * 8;
    this.bytes = new Uint8Array(share.buffer, share.base, share.size);
    if (share.base % 4 === 0) this.words = new Uint32Array(share.buffer, share.base, Math.floor(share.size / 4));
  }

  /**
   * Marks every page of [gpa, gpa + len) dirty; returns false (marking nothing) when the range
   * reaches past the pages the log covers.
   */
  mark(gpa: number, len: number): boolean {
    if (len <= 0) return true;
    const first = Math.floor(gpa / LOG_PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    if (last >= this.pages) return false;
    const words = this.words;
    for (let page = first; page <= last; page++) {
      const w = page >>> 5;
      if (words !== undefined && w < words.length) {
        // Always the locked OR, even on a bit that looks set: it also orders the data writes
        // before it ahead of QEMU's exchange that collects the bit.
        Atomics.or(words, w, 1 << (page & 31));
      } else {
        Atomics.or(this.bytes, page >>> 3, 1 << (page & 7));
      }
    }
    return true;
  }

  /** Whether page `page` is marked (tests, diagnostics). */
  isMarked(page: number): boolean {
    return page < this.pages && (this.bytes[page >>> 3] & (1 << (page & 7))) !== 0;
  }
}
