// Reference counts of host clusters (docs/interop/qcow2.txt, "Host cluster management"): the
// refcount table (kept whole in memory) points to refcount blocks (cached, one cluster each)
// holding one entry of refcount_bits = 1 << refcount_order bits (1..64) per host cluster.
//
// Ordering rules this file keeps:
//  - a new refcount block is written (and flushed) before the table entry pointing to it;
//  - a grown refcount table (and the blocks it needs) is written and flushed before the header
//    points to it, and the old table is freed only after the header was flushed;
//  - dirty blocks may be written at any time: the engine applies a decrement only after the
//    reference that counted was removed on disk, so a block on disk never counts less than what
//    the file references (a crash leaks clusters, it never double-uses one).
import { Qcow2Error, hex } from './errors.js';
import { getU64, refTableReservedBits, setU64 } from './entries.js';
import { HEADER_OFFSET, MAX_REFTABLE_BYTES } from './header.js';
import type { ImageFile } from './image-file.js';
import { type CachedTable, MetadataCache } from './l2-cache.js';

/** Entry `index` of a refcount block of width 2^order bits. Bit 0 is the least significant within a byte. */
export function readRefcount(dv: DataView, index: number, order: number): number {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const bit = index * bits;
      return (dv.getUint8(bit >>> 3) >>> (bit & 7)) & ((1 << bits) - 1);
    }
    case 3:
      return dv.getUint8(index);
    case 4:
      return dv.getUint16(index * 2);
    case 5:
      return dv.getUint32(index * 4);
    default:
      return getU64(dv, index * 8);
  }
}

export function writeRefcount(dv: DataView, index: number, order: number, value: number): void {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const bit = index * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      const byte = dv.getUint8(bit >>> 3);
      dv.setUint8(bit >>> 3, (byte & ~mask) | ((value << (bit & 7)) & mask));
      return;
    }
    case 3:
      dv.setUint8(index, value);
      return;
    case 4:
      dv.setUint16(index * 2, value);
      return;
    case 5:
      dv.setUint32(index * 4, value);
      return;
    default:
      setU64(dv, index * 8, value);
  }
}

/** Byte span [start, end) of the block holding entry `index`. */
function entryBytes(index: number, order: number): [number, number] {
  if (order <= 3) {
    const byte = (index << order) >>> 3;
    return [byte, byte + 1];
  }
  const w = 1 << (order - 3);
  return [index * w, index * w + w];
}

export interface RefcountsParams {
  name: string;
  clusterBits: number;
  refcountOrder: number;
  tableOffset: number;
  tableClusters: number;
  /** Bytes of refcount blocks to cache. */
  cacheBytes: number;
}

export class Refcounts {
  readonly clusterSize: number;
  readonly order: number;
  readonly bits: number;
  /** Refcount entries per block. */
  readonly perBlock: number;
  /** Largest refcount an entry holds (2^bits - 1; 2^53 - 1 for 64-bit entries). */
  readonly max: number;
  tableOffset: number;
  tableClusters: number;
  private table: Uint8Array;
  private tableView: DataView;
  private readonly cache: MetadataCache;
  private readonly name: string;

  private constructor(
    private readonly file: ImageFile,
    p: RefcountsParams,
    table: Uint8Array,
  ) {
    this.name = p.name;
    this.clusterSize = 2 ** p.clusterBits;
    this.order = p.refcountOrder;
    this.bits = 2 ** p.refcountOrder;
    this.perBlock = (this.clusterSize * 8) / this.bits;
    this.max = this.bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.bits - 1;
    this.tableOffset = p.tableOffset;
    this.tableClusters = p.tableClusters;
    this.table = table;
    this.tableView = new DataView(table.buffer);
    this.cache = new MetadataCache(file, this.clusterSize, p.cacheBytes);
  }

  static async load(file: ImageFile, p: RefcountsParams): Promise<Refcounts> {
    const table = new Uint8Array(p.tableClusters * 2 ** p.clusterBits);
    await file.read(table, p.tableOffset);
    return new Refcounts(file, p, table);
  }

  /** Host offsets of all refcount blocks (built on first use). */
  private blocks: Set<number> | undefined;

  isBlock(offset: number): boolean {
    if (this.blocks === undefined) {
      this.blocks = new Set();
      for (let i = 0; i < this.tableEntries; i++) {
        const v = getU64(this.tableView, i * 8);
        if (v !== 0) this.blocks.add(v);
      }
    }
    return this.blocks.has(offset);
  }

  get tableEntries(): number {
    return this.table.byteLength / 8;
  }

  /** Host offset of refcount block `index` (0: none), validated before anyone reads through it. */
  blockOffset(index: number): number {
    if (index >= this.tableEntries) return 0;
    const hi = this.tableView.getUint32(index * 8);
    const lo = this.tableView.getUint32(index * 8 + 4);
    if (hi === 0 && lo === 0) return 0;
    const off = getU64(this.tableView, index * 8);
    const where = `${this.name}: refcount table entry ${index} (${hex(off)})`;
    if (refTableReservedBits(hi, lo)) throw new Qcow2Error('corrupt', `${where} has reserved bits set or is not cluster aligned`);
    if (off < this.clusterSize) throw new Qcow2Error('corrupt', `${where} points into the image header`);
    if (off + this.clusterSize > this.file.size()) throw new Qcow2Error('corrupt', `${where} points past the end of the file (size ${this.file.size()})`);
    if (off < this.tableOffset + this.tableClusters * this.clusterSize && this.tableOffset < off + this.clusterSize) {
      throw new Qcow2Error('corrupt', `${where} points into the refcount table`);
    }
    return off;
  }

  private async block(cluster: number, pin: boolean): Promise<CachedTable | undefined> {
    const off = this.blockOffset(Math.floor(cluster / this.perBlock));
    return off === 0 ? undefined : this.cache.load(off, pin);
  }

  /** Refcount of host cluster `cluster` (an index, not an offset). */
  async get(cluster: number): Promise<number> {
    const b = await this.block(cluster, false);
    return b === undefined ? 0 : readRefcount(b.view, cluster % this.perBlock, this.order);
  }

  /** Like get() when the block is cached (or absent); undefined when it would need a read. */
  getCached(cluster: number): number | undefined {
    const off = this.blockOffset(Math.floor(cluster / this.perBlock));
    if (off === 0) return 0;
    const b = this.cache.get(off);
    return b === undefined ? undefined : readRefcount(b.view, cluster % this.perBlock, this.order);
  }

  /** Adds `delta` to a cluster's refcount; refuses to overflow the width or go below zero. Returns the new count. */
  async add(cluster: number, delta: number): Promise<number> {
    const b = await this.block(cluster, true);
    const at = `${this.name}: refcount of cluster ${hex(cluster * this.clusterSize)}`;
    if (b === undefined) {
      if (delta < 0) throw new Qcow2Error('corrupt', `${at} is already 0 (no refcount block), cannot decrement`);
      throw new Qcow2Error('corrupt', `${at}: no refcount block covers it`);
    }
    const i = cluster % this.perBlock;
    const cur = readRefcount(b.view, i, this.order);
    const next = cur + delta;
    if (cur > this.max || next > this.max) {
      throw new Qcow2Error('limit', `${at} would exceed ${this.max} (refcount_bits ${this.bits})`);
    }
    if (next < 0) throw new Qcow2Error('corrupt', `${at} is ${cur}, cannot decrement by ${-delta}`);
    writeRefcount(b.view, i, this.order, next);
    const [s, e] = entryBytes(i, this.order);
    this.cache.markDirty(b, s, e);
    return next;
  }

  hasDirty(): boolean {
    return this.cache.hasDirty();
  }

  async writeBackDirty(): Promise<void> {
    await this.cache.writeBackDirty();
  }

  /** Keeps the block cache within its size: dirty blocks may be written any time (see top). */
  async trim(): Promise<void> {
    while (!this.cache.evictClean()) {
      const t = this.cache.oldestDirty();
      if (t === undefined) break;
      await this.cache.writeBack(t);
    }
  }

  /**
   * Makes sure refcount blocks cover clusters [first, first + count), where `end` is the first
   * cluster past everything in use and first >= end (allocation at the end of the file). New
   * blocks and a grown table are placed at `end`. Returns the new end (unchanged: the range is
   * covered, nothing was placed) and clusters freed by moving the table.
   */
  async ensureCovered(first: number, count: number, end: number): Promise<{ end: number; freed: number[] }> {
    const lastIndex = Math.floor((first + count - 1) / this.perBlock);
    for (let t = Math.floor(first / this.perBlock); t <= lastIndex; t++) {
      if (t >= this.tableEntries) return this.growTable(end, lastIndex);
      if (this.blockOffset(t) !== 0) continue;
      if (Math.floor(end / this.perBlock) === t) await this.createSelfCoveringBlock(t, end);
      else await this.createBlock(t, end);
      return { end: end + 1, freed: [] };
    }
    return { end, freed: [] };
  }

  /** A new block at cluster `at`, which it covers itself (refcount 1): block first, then the table entry. */
  private async createSelfCoveringBlock(index: number, at: number): Promise<void> {
    const data = new Uint8Array(this.clusterSize);
    writeRefcount(new DataView(data.buffer), at % this.perBlock, this.order, 1);
    await this.file.write(data, at * this.clusterSize);
    await this.file.flush();
    setU64(this.tableView, index * 8, at * this.clusterSize);
    this.blocks?.add(at * this.clusterSize);
    await this.file.write(this.table.slice(index * 8, index * 8 + 8), this.tableOffset + index * 8);
  }

  /**
   * A new block at cluster `at`, which an existing block counts: the block, then its own
   * refcount, then the table entry.
   */
  private async createBlock(index: number, at: number): Promise<void> {
    const home = Math.floor(at / this.perBlock);
    if (this.blockOffset(home) === 0) throw new Qcow2Error('corrupt', `${this.name}: refcount block ${home} is missing below the end of the image`);
    await this.file.write(new Uint8Array(this.clusterSize), at * this.clusterSize);
    await this.add(at, 1);
    await this.cache.writeBackDirty();
    await this.file.flush();
    setU64(this.tableView, index * 8, at * this.clusterSize);
    this.blocks?.add(at * this.clusterSize);
    await this.file.write(this.table.slice(index * 8, index * 8 + 8), this.tableOffset + index * 8);
  }

  /**
   * Moves the refcount table to a larger one at `end`, preceded by the new refcount blocks
   * needed to count the new table and themselves (as QEMU does, all in one area at the end).
   */
  private async growTable(end: number, neededIndex: number): Promise<{ end: number; freed: number[] }> {
    const cs = this.clusterSize;
    const oldEntries = this.tableEntries;
    let entries = Math.max(neededIndex + 1, Math.ceil(oldEntries * 1.5));
    let tableClusters = 0;
    let missing: number[] = [];
    for (;;) {
      tableClusters = Math.ceil((entries * 8) / cs);
      // Fixed point: k new blocks + the table at [end, end + k + tableClusters) must be covered.
      let k = 0;
      for (;;) {
        missing = [];
        const last = Math.floor((end + k + tableClusters - 1) / this.perBlock);
        for (let t = Math.floor(end / this.perBlock); t <= last; t++) if (t >= oldEntries || this.blockOffset(t) === 0) missing.push(t);
        if (missing.length <= k) break;
        k = missing.length;
      }
      const last = Math.floor((end + k + tableClusters - 1) / this.perBlock);
      if (last < entries) break;
      entries = last + 1;
    }
    if (tableClusters * cs > MAX_REFTABLE_BYTES) {
      throw new Qcow2Error('limit', `${this.name}: the refcount table would grow beyond ${MAX_REFTABLE_BYTES} bytes`);
    }
    const blocksAt = end;
    const tableAt = end + missing.length;
    const spanEnd = tableAt + tableClusters; // clusters [end, spanEnd) are the new metadata
    const table = new Uint8Array(tableClusters * cs);
    table.set(this.table);
    const tableView = new DataView(table.buffer);
    // New blocks, each counting the part of the new area it covers.
    for (let i = 0; i < missing.length; i++) {
      const t = missing[i]!;
      const data = new Uint8Array(cs);
      const dv = new DataView(data.buffer);
      for (let c = Math.max(end, t * this.perBlock); c < Math.min(spanEnd, (t + 1) * this.perBlock); c++) {
        writeRefcount(dv, c % this.perBlock, this.order, 1);
      }
      await this.file.write(data, (blocksAt + i) * cs);
      setU64(tableView, t * 8, (blocksAt + i) * cs);
      this.blocks?.add((blocksAt + i) * cs);
    }
    // Existing blocks covering the start of the new area.
    for (let c = end; c < spanEnd; c++) {
      const t = Math.floor(c / this.perBlock);
      if (t < oldEntries && !missing.includes(t)) await this.add(c, 1);
    }
    await this.cache.writeBackDirty();
    await this.file.write(table, tableAt * cs);
    await this.file.flush();
    // Switch the header to the new table (offset and cluster count are adjacent fields).
    const fields = new Uint8Array(12);
    const fv = new DataView(fields.buffer);
    setU64(fv, 0, tableAt * cs);
    fv.setUint32(8, tableClusters);
    await this.file.write(fields, HEADER_OFFSET.refcountTableOffset);
    await this.file.flush();
    const oldOffset = this.tableOffset;
    const oldClusters = this.tableClusters;
    this.table = table;
    this.tableView = tableView;
    this.tableOffset = tableAt * cs;
    this.tableClusters = tableClusters;
    // Nothing points to the old table any more: free it.
    const freed: number[] = [];
    for (let c = oldOffset / cs; c < oldOffset / cs + oldClusters; c++) if ((await this.add(c, -1)) === 0) freed.push(c);
    return { end: spanEnd, freed };
  }
}
