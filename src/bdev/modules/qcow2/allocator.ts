// Host cluster allocation: clusters freed by this engine are reused first (a sorted free list,
// filled only once their refcount reached 0 on the way to disk), otherwise clusters are taken
// at the end of the file, growing refcount blocks and the refcount table as needed. Every
// allocation increments refcounts before the caller may reference the clusters. Leaked
// clusters already in an image are not searched for (qemu-img check -r leaks reclaims them).
import { Qcow2Error } from './errors.js';
import type { Refcounts } from './refcounts.js';

/** Host offsets must stay below 2^56 (L2 entry bits 9..55); keep them exact numbers too. */
const MAX_HOST_OFFSET = 2 ** 53;

export class ClusterAllocator {
  /** First cluster past everything allocated (the end of the file, in clusters). */
  private end: number;
  /** Cluster indices with refcount 0, sorted. */
  private readonly free: number[] = [];

  constructor(
    private readonly refcounts: Refcounts,
    private readonly clusterSize: number,
    fileSize: number,
  ) {
    this.end = Math.ceil(fileSize / clusterSize);
  }

  get endOffset(): number {
    return this.end * this.clusterSize;
  }

  /**
   * Allocates `count` contiguous clusters (refcount 1 each): the host offset of the first, and
   * whether they are fresh, i.e. taken past the end of the file as it was at open and of
   * everything allocated since: nothing ever wrote them, so they read as zeros (a reused cluster
   * holds what its previous owner wrote).
   */
  async allocate(count: number): Promise<{ offset: number; fresh: boolean }> {
    const reused = this.takeFreeRun(count);
    if (reused >= 0) {
      for (let c = reused; c < reused + count; c++) await this.refcounts.add(c, 1);
      return { offset: reused * this.clusterSize, fresh: false };
    }
    for (;;) {
      const e = this.end;
      if ((e + count) * this.clusterSize > MAX_HOST_OFFSET) throw new Qcow2Error('limit', 'the image file would exceed 2^53 bytes');
      const r = await this.refcounts.ensureCovered(e, count, e);
      this.addFree(r.freed);
      if (r.end === e) break;
      this.end = r.end;
    }
    const first = this.end;
    this.end += count;
    for (let c = first; c < first + count; c++) await this.refcounts.add(c, 1);
    return { offset: first * this.clusterSize, fresh: true };
  }

  /**
   * Drops one reference from every cluster overlapping [offset, offset + bytes). Call only after
   * the reference was removed on disk. Returns the clusters that became free.
   */
  async release(offset: number, bytes: number): Promise<number[]> {
    const freed: number[] = [];
    const last = Math.ceil((offset + bytes) / this.clusterSize);
    for (let c = Math.floor(offset / this.clusterSize); c < last; c++) {
      if ((await this.refcounts.add(c, -1)) === 0) freed.push(c);
    }
    this.addFree(freed);
    return freed;
  }

  private addFree(clusters: number[]): void {
    for (const c of clusters) {
      let lo = 0;
      let hi = this.free.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.free[mid]! < c) lo = mid + 1;
        else hi = mid;
      }
      if (this.free[lo] !== c) this.free.splice(lo, 0, c);
    }
  }

  /** Removes and returns the first run of `count` consecutive free clusters, or -1. */
  private takeFreeRun(count: number): number {
    let runStart = 0;
    for (let i = 0; i < this.free.length; i++) {
      if (i > 0 && this.free[i] !== this.free[i - 1]! + 1) runStart = i;
      if (i - runStart + 1 === count) {
        const first = this.free[runStart]!;
        this.free.splice(runStart, count);
        return first;
      }
    }
    return -1;
  }
}
