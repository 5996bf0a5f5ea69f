// Guest memory registered with a channel's io_uring as fixed buffers. An O_DIRECT read or write of
// ordinary user memory pins its pages in the kernel for every I/O (get_user_pages) and unpins them
// at completion; with the memory registered once, READ_FIXED/WRITE_FIXED use the pages pinned
// then. fio on a loop device, QD 32, pinned to one core: 3.6-4.0 -> 3.2-3.9 us of CPU per I/O.
//
// Only memory native/pinnable.ts allows is registered: guest memory on hugetlbfs, which is
// resident anyway (pinning ordinary memfd guest memory would fault in all of it). It is
// registered in 64 MiB chunks on first use, so the first I/O into a chunk pays its pinning
// (~6 ms for a chunk not yet touched), never a whole 1 GiB window (~100 ms). A chunk stays pinned
// until its view is retired (the region was removed or replaced: seen through pinEpoch at the next
// I/O or poll) or the channel closes.
import type { Logger } from 'pino';
import { mayPin, pinEpoch } from '../../../native/pinnable.js';
import type { UringRing } from '../../../native/uring.js';
import { Errno, errnoName } from '../../../util/errno.js';

const CHUNK_SHIFT = 26;
const CHUNK_BYTES = 2 ** CHUNK_SHIFT;
/** Fixed buffers per ring: 64 GiB of guest memory in 64 MiB chunks. */
const TABLE_SIZE = 1024;
/** A chunk not registered (yet). */
const UNREGISTERED = -1;
/** Views seen and not pinnable: one Map hit per I/O instead of a WeakSet lookup. */
const NOT_PINNABLE = new Int32Array(0);

export class FixedBuffers {
  /**
   * Per view seen, the fixed buffer index of each of its chunks (UNREGISTERED), or NOT_PINNABLE.
   * Weak: a channel sees short-lived views too (qcow2 metadata buffers), never to be kept alive.
   */
  private readonly chunks = new WeakMap<Uint8Array, Int32Array>();
  /** The views with chunks registered: kept until retired, when their chunks are let go. */
  private readonly holding = new Map<Uint8Array, Int32Array>();
  private readonly freeIndexes: number[] = [];
  private epoch = pinEpoch[0];
  private tableReady = false;
  private disabled = false;
  /** Chunks registered now. */
  registered = 0;

  constructor(
    /** The channel's ring: the buffers are its, and so are the prepRwFixed calls that use them. */
    readonly ring: UringRing,
    private readonly log: Logger,
  ) {}

  /** The fixed buffer that holds view[off, off + len), registering its chunk on first use; -1: none (use the plain path). */
  indexFor(view: Uint8Array, off: number, len: number): number {
    this.poll();
    let idx = this.chunks.get(view);
    if (idx === undefined) {
      if (this.disabled) return -1;
      idx = mayPin(view) ? new Int32Array(Math.ceil(view.length / CHUNK_BYTES)).fill(UNREGISTERED) : NOT_PINNABLE;
      this.chunks.set(view, idx);
    }
    if (idx.length === 0) return -1;
    const c = Math.floor(off / CHUNK_BYTES);
    if (Math.floor((off + len - 1) / CHUNK_BYTES) !== c) return -1;
    const i = idx[c];
    return i !== UNREGISTERED ? i : this.register(view, idx, c);
  }

  /** Lets go of retired views' chunks, if any view was retired since the last look (every poll). */
  poll(): void {
    if (pinEpoch[0] !== this.epoch) this.sweep();
  }

  /** Lets go of the chunks of retired views. */
  private sweep(): void {
    this.epoch = pinEpoch[0];
    for (const [view, idx] of this.holding) {
      if (mayPin(view)) continue;
      for (let c = 0; c < idx.length; c++) {
        if (idx[c] === UNREGISTERED) continue;
        this.ring.setBuffer(idx[c], null);
        this.freeIndexes.push(idx[c]);
        this.registered--;
      }
      this.holding.delete(view);
      this.chunks.delete(view);
    }
  }

  private register(view: Uint8Array, idx: Int32Array, c: number): number {
    if (this.disabled) return -1;
    if (!mayPin(view)) {
      // Retired since it was first seen (an I/O that still holds a removed region's view).
      this.chunks.set(view, NOT_PINNABLE);
      return -1;
    }
    if (!this.tableReady) {
      const rc = this.ring.registerBuffers(TABLE_SIZE);
      if (rc < 0) return this.disable(`the fixed buffer table could not be set up (${errnoName(rc)})`);
      this.tableReady = true;
      for (let i = TABLE_SIZE - 1; i >= 0; i--) this.freeIndexes.push(i);
      this.log.info('guest memory on hugepages: registering it with io_uring as fixed buffers, in 64 MiB chunks as I/O first uses them');
    }
    const i = this.freeIndexes.pop();
    if (i === undefined) return -1; // the table is full: this chunk takes the plain path
    const start = c * CHUNK_BYTES;
    const rc = this.ring.setBuffer(i, view.subarray(start, Math.min(view.length, start + CHUNK_BYTES)));
    if (rc < 0) {
      this.freeIndexes.push(i);
      const hint = rc === -Errno.ENOMEM ? ': the memlock limit (ulimit -l) is too low for it; raise it or give vhostd CAP_IPC_LOCK' : '';
      return this.disable(`registering 64 MiB of guest memory failed (${errnoName(rc)})${hint}`);
    }
    idx[c] = i;
    this.holding.set(view, idx);
    this.registered++;
    return i;
  }

  private disable(why: string): number {
    this.disabled = true;
    this.log.warn(`io_uring fixed buffers off for this channel: ${why}; I/O goes the plain way`);
    return -1;
  }
}
