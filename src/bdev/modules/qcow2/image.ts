// Qcow2Image: the qcow2 format engine. Guest offsets are translated through the L1 table (kept
// whole in memory) and L2 tables (bounded cache); writes allocate clusters, copy-on-write the
// parts of a new cluster the write does not cover, and update the mapping; zeroing and discard
// change L2 entries only. All image I/O goes through ImageFile.
//
// Crash consistency. Metadata changes are kept in memory and written in this order by flush()
// (and when a full L2 cache has to make room), with a file flush between the steps:
//   1. guest data and copy-on-write data (written by the caller / prepareWrite before commit())
//   2. refcount blocks                 (increments before anything references the new clusters)
//   3. L2 tables                       (a new L2 table is on disk before the L1 entry to it)
//   4. L1 entries
//   5. refcount decrements of clusters whose last reference was removed in steps 3-4; only then
//      may those clusters be reused.
// Refcount blocks and tables that have to be created are written through immediately (see
// refcounts.ts). A crash at any point therefore leaves at most leaked clusters.
//
// The dirty bit (v3). A write acknowledged with its metadata still in memory is lost if the
// process dies, and that is allowed until the guest's next FLUSH returns. But a front-end that
// reconnects to a restarted vhostd resubmits the requests it had in flight, a FLUSH among them,
// and that FLUSH must not succeed over writes that vanished. So before the first metadata change
// after a write-back is acknowledged, the header gets the dirty bit (one header write, no flush:
// a killed process leaves its writes in the page cache); the write-back clears it. An image
// opened with the bit set (and no lazy refcounts: then QEMU's meaning applies and it is refused)
// is `openedUnclean`: the devices fail the FLUSHes of a resumed session (devices/blk/unclean-resume.ts).
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';
import { ClusterAllocator } from './allocator.js';
import {
  COMPRESSED_HI,
  COPIED_HI,
  TWO32,
  ZERO_LO,
  decodeCompressed,
  entryOffset,
  l1ReservedBits,
  l2ReservedBits,
} from './entries.js';
import { Qcow2Error, hex } from './errors.js';
import { HEADER_OFFSET, INCOMPAT, type Qcow2Header, l2Entries, readHeader, u64Bytes, writeRefusal } from './header.js';
import type { ImageFile } from './image-file.js';
import { type CachedTable, MetadataCache } from './l2-cache.js';
import { ClusterRangeLock, Mutex } from './locks.js';
import { Refcounts } from './refcounts.js';

/**
 * How a piece of the guest range is stored:
 *  data         at hostOffset in the image file (contiguous for `length` bytes)
 *  zero         reads as zeros (zero flag, v3)
 *  unallocated  reads from the backing file, or zeros without one
 *  compressed   inside the compressed cluster at hostOffset (compressedLength bytes of deflate data);
 *               decompress with readCompressedCluster() and take guestOffset % clusterSize onwards
 */
export type ExtentKind = 'data' | 'zero' | 'unallocated' | 'compressed';

export interface Extent {
  kind: ExtentKind;
  guestOffset: number;
  length: number;
  /** data: host offset of guestOffset; compressed: start of the compressed data; otherwise 0. */
  hostOffset: number;
  /** compressed only (else 0). */
  compressedLength: number;
}

/** Reads guest bytes [guestOffset, guestOffset + buf.length) of the backing image into buf (zeros past its end). */
export type BackingRead = (buf: Uint8Array, guestOffset: number) => Promise<void>;

export interface OpenOptions {
  readonly: boolean;
  /** Bytes of L2 tables to cache (default max(1 MiB, 8 clusters)). */
  l2CacheBytes?: number;
  /** Bytes of refcount blocks to cache (default max(256 KiB, 4 clusters)). */
  refcountCacheBytes?: number;
  /** Used in error messages ("disk.qcow2: ..."). */
  name?: string;
  /** Source of backing-file content for copy-on-write and read(); required to write to an image with a backing file. */
  backingRead?: BackingRead;
}

export interface BackingInfo {
  /** Backing file name as stored in the image (relative names are relative to the image's directory). */
  file: string;
  /** Format from the backing format extension, if present ("qcow2", "raw"). */
  format?: string;
}

/** Where prepareWrite() wants the guest data written. */
export interface HostExtent {
  guestOffset: number;
  length: number;
  hostOffset: number;
}

export interface WritePlan {
  /** In guest order; together exactly the requested range. Write the data there, then commit(). */
  readonly extents: readonly HostExtent[];
  /** Publishes the new mapping (in memory; on disk at the next flush). Call only after every data write completed. */
  commit(): Promise<void>;
  /** The data writes failed: drop the plan; newly allocated clusters are freed at the next flush. */
  abort(): Promise<void>;
}

/** One guest cluster of a write that needs a new host cluster (or a preallocated one). */
interface ClusterChange {
  guestCluster: number;
  host: number;
  /** What the parts not covered by the write contain. */
  source: 'backing' | 'zeros' | 'compressed' | 'host';
  /** compressed: descriptor; host: old cluster. */
  oldOffset: number;
  oldLength: number;
  /** The old reference to drop once the new mapping is on disk. */
  releaseOld: boolean;
  /** host was allocated for this write (freed again on abort); false for a reused preallocated zero cluster. */
  allocated: boolean;
  /** host was allocated where nothing was ever written (ClusterAllocator.allocate): it reads as zeros. */
  fresh: boolean;
}

const KIND_DATA = 0;
const KIND_ZERO = 1;
const KIND_UNALLOCATED = 2;
const KIND_COMPRESSED = 3;
const KIND_NAMES: ExtentKind[] = ['data', 'zero', 'unallocated', 'compressed'];

/** Largest chunk written at once by writeZeroes() when zeros have to be written as data. */
const ZERO_CHUNK = 1 << 20;

export class Qcow2Image {
  readonly name: string;
  /** Opened read-only, or frozen (freeze()). */
  private ro: boolean;
  readonly header: Qcow2Header;
  readonly virtualSize: number;
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly backing: BackingInfo | undefined;

  private readonly l2PerTable: number;
  private readonly l1: Uint8Array;
  private readonly l1View: DataView;
  private readonly l1Dirty = new Set<number>();
  private readonly l2Cache: MetadataCache;
  private readonly refcounts: Refcounts;
  private readonly allocator: ClusterAllocator;
  private readonly backingRead: BackingRead | undefined;
  private readonly meta = new Mutex();
  private readonly clusterLocks = new ClusterRangeLock();
  /** References removed in memory whose clusters are released after the next metadata write-back. */
  private pendingFrees: { offset: number; bytes: number; discardHost: boolean }[] = [];
  private closed = false;
  /** The last decompressed cluster (reads of one compressed cluster come in pieces). */
  private lastCompressed: { offset: number; data: Uint8Array } | undefined;

  /** Whether the header in the file has the dirty bit now. */
  private dirtyOnDisk: boolean;
  /** Opened for writing with the dirty bit set: a process died with metadata unwritten (see the top). */
  readonly openedUnclean: boolean;

  private constructor(
    private readonly file: ImageFile,
    header: Qcow2Header,
    opts: OpenOptions,
    l1: Uint8Array,
    refcounts: Refcounts,
  ) {
    this.name = opts.name ?? 'qcow2 image';
    this.ro = opts.readonly;
    this.header = header;
    this.virtualSize = header.virtualSize;
    this.clusterSize = header.clusterSize;
    this.clusterBits = header.clusterBits;
    this.backing = header.backingFile === undefined ? undefined : { file: header.backingFile, ...(header.backingFormat !== undefined ? { format: header.backingFormat } : {}) };
    this.l2PerTable = l2Entries(header.clusterBits);
    this.l1 = l1;
    this.l1View = new DataView(l1.buffer);
    this.l2Cache = new MetadataCache(file, this.clusterSize, opts.l2CacheBytes ?? Math.max(1 << 20, 8 * this.clusterSize));
    this.refcounts = refcounts;
    this.allocator = new ClusterAllocator(refcounts, this.clusterSize, file.size());
    this.backingRead = opts.backingRead;
    this.dirtyOnDisk = header.dirty;
    this.openedUnclean = header.dirty && !opts.readonly;
  }

  /** Opens an image: validates the header, loads the L1 and refcount tables. Throws Qcow2Error when refused. */
  static async open(file: ImageFile, opts: OpenOptions): Promise<Qcow2Image> {
    const name = opts.name ?? 'qcow2 image';
    const header = await readHeader(file, name);
    const refusal = opts.readonly ? undefined : writeRefusal(header, name);
    if (refusal !== undefined) throw new Qcow2Error(refusal.kind, refusal.message, { errno: 'EROFS' });
    const l1 = new Uint8Array(header.l1Size * 8);
    await file.read(l1, header.l1TableOffset);
    const refcounts = await Refcounts.load(file, {
      name,
      clusterBits: header.clusterBits,
      refcountOrder: header.refcountOrder,
      tableOffset: header.refcountTableOffset,
      tableClusters: header.refcountTableClusters,
      cacheBytes: opts.refcountCacheBytes ?? Math.max(256 << 10, 4 * header.clusterSize),
    });
    if (!opts.readonly && header.autoclearFeatures !== 0n) {
      // We do not maintain what autoclear bits describe (bitmaps): clearing them tells QEMU so.
      await file.write(u64Bytes(0n), HEADER_OFFSET.autoclearFeatures);
      await file.flush();
    }
    return new Qcow2Image(file, header, opts, l1, refcounts);
  }

  // ---- validation of pointers read from the image ----

  private corrupt(msg: string): Qcow2Error {
    return new Qcow2Error('corrupt', `${this.name}: ${msg}`);
  }

  /** End of the image: the file size, or further when clusters were allocated but not written yet. */
  private imageEnd(): number {
    return Math.max(this.file.size(), this.allocator.endOffset);
  }

  /** Whether [off, off + len) overlaps the header cluster, the L1 table or the refcount table. */
  private overlapsFixedMetadata(off: number, len: number): string | undefined {
    if (off < this.clusterSize) return 'the image header';
    const l1Off = this.header.l1TableOffset;
    const l1Len = this.l1.byteLength;
    if (l1Len > 0 && off < l1Off + l1Len && l1Off < off + len) return 'the L1 table';
    const rtOff = this.refcounts.tableOffset;
    if (off < rtOff + this.refcounts.tableClusters * this.clusterSize && rtOff < off + len) return 'the refcount table';
    return undefined;
  }

  /** Host offset of the L2 table for L1 index `i` (0: none). Throws on a bad entry. */
  private l2TableOffset(i: number): number {
    const hi = this.l1View.getUint32(i * 8);
    const lo = this.l1View.getUint32(i * 8 + 4);
    if (hi === 0 && lo === 0) return 0;
    const off = entryOffset(hi, lo);
    const where = `L1 entry ${i} (L2 table at ${hex(off)})`;
    if (l1ReservedBits(hi, lo)) throw this.corrupt(`${where} has reserved bits set or is not aligned`);
    if (off === 0) return 0; // only the COPIED flag: treat as unallocated, as QEMU does
    if (off % this.clusterSize !== 0) throw this.corrupt(`${where} is not aligned to a cluster`);
    if (off + this.clusterSize > this.imageEnd()) throw this.corrupt(`${where} points past the end of the file (size ${this.file.size()})`);
    const meta = this.overlapsFixedMetadata(off, this.clusterSize);
    if (meta !== undefined) throw this.corrupt(`${where} points into ${meta}`);
    return off;
  }

  /**
   * Classifies L2 entry `i` of `t` (guest cluster `gc`): returns the kind and sets `this.hostOut`
   * / `this.lenOut` (no allocation per entry on the lookup path).
   */
  private hostOut = 0;
  private lenOut = 0;
  /** Where an L2 entry is, for error messages (built only when one is thrown: classify runs per request). */
  private l2Where(t: CachedTable, i: number, gc: number): string {
    return `L2 table at ${hex(t.offset)}, entry ${i} (guest offset ${hex(gc * this.clusterSize)})`;
  }

  private classify(t: CachedTable, i: number, gc: number): number {
    const hi = t.view.getUint32(i * 8);
    const lo = t.view.getUint32(i * 8 + 4);
    this.hostOut = 0;
    this.lenOut = 0;
    if (hi === 0 && lo === 0) return KIND_UNALLOCATED;
    if (hi & COMPRESSED_HI) {
      const d = decodeCompressed(hi, lo, this.clusterBits);
      if (d.offset < this.clusterSize || d.offset >= this.imageEnd()) {
        throw this.corrupt(`${this.l2Where(t, i, gc)}: compressed data at ${hex(d.offset)} is ${d.offset < this.clusterSize ? 'inside the image header' : `past the end of the file (size ${this.file.size()})`}`);
      }
      this.hostOut = d.offset;
      this.lenOut = d.length;
      return KIND_COMPRESSED;
    }
    if (l2ReservedBits(hi, lo)) throw this.corrupt(`${this.l2Where(t, i, gc)} has reserved bits set`);
    const host = entryOffset(hi, lo);
    const zero = (lo & ZERO_LO) !== 0;
    if (zero && this.header.version === 2) throw this.corrupt(`${this.l2Where(t, i, gc)} has the zero flag set in a version 2 image`);
    if (host === 0) {
      if (zero) return KIND_ZERO;
      // Offset 0 with bit 63 is only valid with an external data file.
      throw this.corrupt(`${this.l2Where(t, i, gc)} maps to host offset 0`);
    }
    if (host % this.clusterSize !== 0) throw this.corrupt(`${this.l2Where(t, i, gc)}: data cluster at ${hex(host)} is not aligned to a cluster`);
    if (host >= this.imageEnd()) throw this.corrupt(`${this.l2Where(t, i, gc)}: data cluster at ${hex(host)} is past the end of the file (size ${this.file.size()})`);
    const meta = this.overlapsFixedMetadata(host, this.clusterSize);
    if (meta !== undefined) throw this.corrupt(`${this.l2Where(t, i, gc)}: data cluster at ${hex(host)} points into ${meta}`);
    this.hostOut = host;
    return zero ? KIND_ZERO : KIND_DATA;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.virtualSize) {
      throw new Qcow2Error('invalid', `${this.name}: request [${offset}, +${length}) is outside the virtual disk (${this.virtualSize} bytes)`);
    }
    if (this.closed) throw new Qcow2Error('invalid', `${this.name}: the image is closed`);
  }

  // ---- mapping ----

  /**
   * Appends extents for [pos, end) to `out` as far as the needed L2 tables are cached (or `extra`
   * is the one missing); returns where it stopped (end when done).
   */
  private mapFrom(pos: number, end: number, out: Extent[], extra?: CachedTable): number {
    const cs = this.clusterSize;
    while (pos < end) {
      const gc = Math.floor(pos / cs);
      const l1i = Math.floor(gc / this.l2PerTable);
      const l2Off = this.l2TableOffset(l1i);
      if (l2Off === 0) {
        const stop = Math.min(end, (l1i + 1) * this.l2PerTable * cs);
        push(out, KIND_UNALLOCATED, pos, stop - pos, 0, 0);
        pos = stop;
        continue;
      }
      const t = extra !== undefined && extra.offset === l2Off ? extra : this.l2Cache.get(l2Off);
      if (t === undefined) return pos;
      const lastGc = Math.min(Math.ceil(end / cs), (l1i + 1) * this.l2PerTable);
      for (let c = gc; c < lastGc; c++) {
        const kind = this.classify(t, c % this.l2PerTable, c);
        const stop = Math.min(end, (c + 1) * cs);
        const inCluster = pos - c * cs;
        if (kind === KIND_DATA) push(out, KIND_DATA, pos, stop - pos, this.hostOut + inCluster, 0);
        else if (kind === KIND_COMPRESSED) push(out, KIND_COMPRESSED, pos, stop - pos, this.hostOut, this.lenOut);
        else push(out, kind, pos, stop - pos, 0, 0);
        pos = stop;
      }
    }
    return pos;
  }

  /**
   * Synchronous translation when every L2 table it needs is cached; undefined otherwise (then
   * use mapRange). Throws Qcow2Error on a bad range or a corrupt table entry.
   */
  tryMapCached(offset: number, length: number): Extent[] | undefined {
    this.checkRange(offset, length);
    const out: Extent[] = [];
    return this.mapFrom(offset, offset + length, out) === offset + length ? out : undefined;
  }

  /**
   * The common case of tryMapCached without allocating: when [offset, offset + length) is one
   * contiguous run of allocated data clusters whose L2 tables are cached, the host offset of
   * `offset`; otherwise -1 (then use tryMapCached / mapRange). Throws like tryMapCached.
   */
  tryMapDataCached(offset: number, length: number): number {
    this.checkRange(offset, length);
    if (length === 0) return -1;
    const cs = this.clusterSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    let host0 = -1;
    for (let gc = first; gc <= last; gc++) {
      const l2Off = this.l2TableOffset(Math.floor(gc / this.l2PerTable));
      if (l2Off === 0) return -1;
      const t = this.l2Cache.get(l2Off);
      if (t === undefined) return -1;
      if (this.classify(t, gc % this.l2PerTable, gc) !== KIND_DATA) return -1;
      if (gc === first) host0 = this.hostOut + (offset - first * cs);
      else if (this.hostOut !== host0 - (offset - first * cs) + (gc - first) * cs) return -1;
    }
    return host0;
  }

  /**
   * The write fast path, an overwrite in place: when every cluster of [offset, offset + length)
   * is a data cluster only this mapping references (the L2 entry's COPIED flag and a cached
   * refcount of 1), its L2 table is cached, the run is contiguous in the file and no other
   * request holds those clusters, it locks them and returns the host offset of `offset` and the
   * lock's release (the caller writes the data there, then releases). The mapping does not
   * change, so there is nothing to commit. undefined: use prepareWrite.
   */
  tryOverwriteCached(offset: number, length: number): { host: number; release: () => void } | undefined {
    this.checkWritable();
    const host = this.tryMapDataCached(offset, length);
    if (host < 0) return undefined;
    const cs = this.clusterSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const hostFirst = host - (offset - first * cs);
    for (let gc = first; gc <= last; gc++) {
      const t = this.l2Cache.get(this.l2TableOffset(Math.floor(gc / this.l2PerTable)));
      if (t === undefined || (t.view.getUint32((gc % this.l2PerTable) * 8) & COPIED_HI) === 0) return undefined;
      const h = hostFirst + (gc - first) * cs;
      if (this.refcounts.getCached(h / cs) !== 1 || this.isMetadataCluster(h)) return undefined;
    }
    const release = this.clusterLocks.tryAcquire(first, last + 1);
    return release === undefined ? undefined : { host, release };
  }

  /** Translates [offset, offset + length) into extents, loading L2 tables as needed. */
  async mapRange(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    const out: Extent[] = [];
    const end = offset + length;
    let pos = this.mapFrom(offset, end, out);
    while (pos < end) {
      const l2Off = this.l2TableOffset(Math.floor(pos / this.clusterSize / this.l2PerTable));
      const t = await this.l2Cache.load(l2Off, false);
      pos = this.mapFrom(pos, end, out, t);
    }
    return out;
  }

  /** The decompressed guest cluster of a `compressed` extent (clusterSize bytes). */
  async readCompressedCluster(hostOffset: number, compressedLength: number): Promise<Uint8Array> {
    const last = this.lastCompressed;
    if (last !== undefined && last.offset === hostOffset) return last.data;
    const raw = new Uint8Array(compressedLength);
    await this.file.read(raw, hostOffset);
    let out: Buffer;
    try {
      // QEMU writes raw deflate; the stream may be followed by the next cluster's bytes.
      out = inflateRawSync(raw, { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: this.clusterSize });
    } catch (err) {
      throw new Qcow2Error('corrupt', `${this.name}: compressed cluster at ${hex(hostOffset)} cannot be decompressed (${(err as Error).message})`, { cause: err });
    }
    if (out.byteLength < this.clusterSize) {
      throw this.corrupt(`compressed cluster at ${hex(hostOffset)} decompresses to ${out.byteLength} bytes, not a whole cluster (${this.clusterSize})`);
    }
    const data = new Uint8Array(out.buffer, out.byteOffset, this.clusterSize);
    this.lastCompressed = { offset: hostOffset, data };
    return data;
  }

  /** Reads guest bytes into buf (convenience: mapRange + the reads each extent needs). */
  async read(buf: Uint8Array, offset: number): Promise<void> {
    const extents = this.tryMapCached(offset, buf.byteLength) ?? (await this.mapRange(offset, buf.byteLength));
    await Promise.all(
      extents.map(async (e) => {
        const dst = buf.subarray(e.guestOffset - offset, e.guestOffset - offset + e.length);
        switch (e.kind) {
          case 'data':
            return this.file.read(dst, e.hostOffset);
          case 'zero':
            dst.fill(0);
            return;
          case 'unallocated':
            if (this.backingRead !== undefined) return this.backingRead(dst, e.guestOffset);
            dst.fill(0);
            return;
          case 'compressed': {
            const c = await this.readCompressedCluster(e.hostOffset, e.compressedLength);
            const at = e.guestOffset % this.clusterSize;
            dst.set(c.subarray(at, at + e.length));
          }
        }
      }),
    );
  }

  // ---- writing ----

  private checkWritable(): void {
    if (this.readonly) throw new Qcow2Error('invalid', `${this.name}: the image is open read-only`, { errno: 'EROFS' });
  }

  /** Whether a host cluster is an L2 table of the active L1 table or a refcount block (never guest data). */
  private isMetadataCluster(host: number): boolean {
    if (this.l2Tables === undefined) {
      this.l2Tables = new Set();
      for (let i = 0; i < this.header.l1Size; i++) {
        const hi = this.l1View.getUint32(i * 8);
        const lo = this.l1View.getUint32(i * 8 + 4);
        if (hi !== 0 || lo !== 0) this.l2Tables.add(entryOffset(hi, lo));
      }
    }
    return this.l2Tables.has(host) || this.refcounts.isBlock(host);
  }
  private l2Tables: Set<number> | undefined;

  /** The L2 table for L1 index `l1i`, pinned in the cache; allocates a zeroed one when `create` and there is none. */
  private async l2ForUpdate(l1i: number, create: boolean): Promise<CachedTable | undefined> {
    const off = this.l2TableOffset(l1i);
    if (off !== 0) return this.l2Cache.load(off, true);
    if (!create) return undefined;
    const { offset: host } = await this.allocator.allocate(1);
    // Written (zeroed) in step 3 of the write-back, before the L1 entry in step 4.
    const t = this.l2Cache.insertNew(host);
    this.l2Tables?.add(host);
    this.l1View.setUint32(l1i * 8, (COPIED_HI | Math.floor(host / TWO32)) >>> 0);
    this.l1View.setUint32(l1i * 8 + 4, host >>> 0);
    this.l1Dirty.add(l1i);
    return t;
  }

  /** Sets L2 entry for guest cluster gc (the table must be pinned: call right after l2ForUpdate). */
  private setL2(t: CachedTable, gc: number, hi: number, lo: number): void {
    const i = gc % this.l2PerTable;
    t.view.setUint32(i * 8, hi >>> 0);
    t.view.setUint32(i * 8 + 4, lo >>> 0);
    this.l2Cache.markDirty(t, i * 8, i * 8 + 8);
  }

  /** The current entry of guest cluster gc for a metadata operation (loads the table). */
  private async lookup(gc: number): Promise<{ kind: number; host: number; len: number }> {
    const t = await this.l2ForUpdate(Math.floor(gc / this.l2PerTable), false);
    if (t === undefined) return { kind: KIND_UNALLOCATED, host: 0, len: 0 };
    const kind = this.classify(t, gc % this.l2PerTable, gc);
    return { kind, host: this.hostOut, len: this.lenOut };
  }

  /**
   * Prepares a guest write of [offset, offset + length): clusters that are not writable in place
   * get new host clusters, whose parts outside the range are filled (copy-on-write from the
   * backing file, the old compressed or shared cluster, or zeros) before this resolves. The
   * guest clusters stay locked against other writes, zeroing and discard until commit()/abort().
   */
  async prepareWrite(offset: number, length: number): Promise<WritePlan> {
    this.checkWritable();
    this.checkRange(offset, length);
    const cs = this.clusterSize;
    if (length === 0) return { extents: [], commit: async () => {}, abort: async () => {} };
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const unlock = await this.clusterLocks.acquire(first, last + 1);
    let changes: ClusterChange[] = [];
    const hosts: number[] = [];
    try {
      changes = await this.meta.run(async () => {
        const found: ClusterChange[] = [];
        // Decide per cluster, then allocate runs of new clusters contiguously.
        let run: ClusterChange[] = [];
        const flushRun = async () => {
          if (run.length === 0) return;
          const { offset: base, fresh } = await this.allocator.allocate(run.length);
          run.forEach((ch, k) => {
            ch.host = base + k * cs;
            ch.fresh = fresh;
            hosts[ch.guestCluster - first] = ch.host;
          });
          run = [];
        };
        for (let gc = first; gc <= last; gc++) {
          const e = await this.lookup(gc);
          if (e.kind === KIND_DATA || (e.kind === KIND_ZERO && e.host !== 0)) {
            const c = e.host / cs;
            const rc = this.refcounts.getCached(c) ?? (await this.refcounts.get(c));
            if (rc === 0) throw this.corrupt(`guest offset ${hex(gc * cs)} maps to cluster ${hex(e.host)} whose refcount is 0`);
            if (this.isMetadataCluster(e.host)) throw this.corrupt(`guest offset ${hex(gc * cs)} maps to cluster ${hex(e.host)}, which holds an L2 table or refcount block`);
            if (rc === 1) {
              await flushRun();
              hosts[gc - first] = e.host;
              // A preallocated zero cluster: fill the rest with zeros, clear the flag at commit.
              if (e.kind === KIND_ZERO) found.push({ guestCluster: gc, host: e.host, source: 'zeros', oldOffset: 0, oldLength: 0, releaseOld: false, allocated: false, fresh: false });
              continue;
            }
            const ch: ClusterChange = { guestCluster: gc, host: 0, source: e.kind === KIND_ZERO ? 'zeros' : 'host', oldOffset: e.host, oldLength: cs, releaseOld: true, allocated: true, fresh: false };
            found.push(ch);
            run.push(ch);
            continue;
          }
          const ch: ClusterChange =
            e.kind === KIND_COMPRESSED
              ? { guestCluster: gc, host: 0, source: 'compressed', oldOffset: e.host, oldLength: e.len, releaseOld: true, allocated: true, fresh: false }
              : { guestCluster: gc, host: 0, source: e.kind === KIND_ZERO ? 'zeros' : 'backing', oldOffset: 0, oldLength: 0, releaseOld: false, allocated: true, fresh: false };
          const covered = (gc > first || offset % cs === 0) && (gc < last || (offset + length) % cs === 0 || offset + length === this.virtualSize);
          if (!covered && ch.source === 'backing' && this.backing !== undefined && this.backingRead === undefined) {
            throw new Qcow2Error('unsupported', `${this.name}: writing needs copy-on-write from the backing file ${this.backing.file}, but no backing reader was given at open`);
          }
          found.push(ch);
          run.push(ch);
        }
        await flushRun();
        return found;
      });
      await this.trimCaches();
      // Copy-on-write outside the metadata lock: the cluster lock keeps others away.
      const head = offset - first * cs;
      const tail = offset + length - last * cs;
      for (const ch of changes) {
        if (ch.guestCluster === first && head > 0) await this.fillOutside(ch, 0, head);
        if (ch.guestCluster === last && tail < cs) await this.fillOutside(ch, tail, cs);
      }
    } catch (err) {
      // Nothing references the new clusters yet: give them back at the next write-back.
      await this.meta.run(async () => {
        for (const ch of changes) if (ch.allocated && ch.host !== 0) this.pendingFrees.push({ offset: ch.host, bytes: cs, discardHost: true });
      });
      unlock();
      throw err;
    }
    const extents: HostExtent[] = [];
    for (let gc = first; gc <= last; gc++) {
      const s = Math.max(offset, gc * cs);
      const e = Math.min(offset + length, (gc + 1) * cs);
      const host = hosts[gc - first]! + (s - gc * cs);
      const prev = extents[extents.length - 1];
      if (prev !== undefined && prev.hostOffset + prev.length === host) prev.length += e - s;
      else extents.push({ guestOffset: s, length: e - s, hostOffset: host });
    }
    let done = false;
    const finish = async (commit: boolean) => {
      if (done) throw new Qcow2Error('invalid', `${this.name}: write plan already finished`);
      done = true;
      try {
        await this.meta.run(async () => {
          for (const ch of changes) {
            if (commit) {
              const t = (await this.l2ForUpdate(Math.floor(ch.guestCluster / this.l2PerTable), true))!;
              this.setL2(t, ch.guestCluster, COPIED_HI | Math.floor(ch.host / TWO32), ch.host >>> 0);
              if (ch.releaseOld) this.pendingFrees.push({ offset: ch.oldOffset, bytes: ch.oldLength, discardHost: ch.source === 'host' });
            } else if (ch.allocated) {
              this.pendingFrees.push({ offset: ch.host, bytes: cs, discardHost: true });
            }
          }
          if (commit && changes.length > 0) await this.markDirtyLocked();
        });
        await this.trimCaches();
      } finally {
        unlock();
      }
    };
    return { extents, commit: () => finish(true), abort: () => finish(false) };
  }

  /** Writes the part [from, to) of a changed cluster that the guest write does not cover. */
  private async fillOutside(ch: ClusterChange, from: number, to: number): Promise<void> {
    if (to <= from) return;
    const cs = this.clusterSize;
    const buf = new Uint8Array(to - from);
    const guest = ch.guestCluster * cs + from;
    /** Whether buf is still all zeros without looking (nothing was read into it). */
    let untouched = true;
    switch (ch.source) {
      case 'backing':
        if (this.backingRead !== undefined) {
          // Past the virtual size there is nothing to copy.
          const inDisk = Math.max(0, Math.min(buf.byteLength, this.virtualSize - guest));
          if (inDisk > 0) {
            await this.backingRead(buf.subarray(0, inDisk), guest);
            untouched = false;
          }
        }
        break;
      case 'zeros':
        break;
      case 'compressed': {
        const c = await this.readCompressedCluster(ch.oldOffset, ch.oldLength);
        buf.set(c.subarray(from, to));
        untouched = false;
        break;
      }
      case 'host':
        await this.file.read(buf, ch.oldOffset + from);
        untouched = false;
        break;
    }
    // A cluster nothing ever wrote (taken at the end of the file: writes to other new clusters may
    // have moved the end past it since) already reads as zeros.
    if ((ch.fresh || ch.host + from >= this.file.size()) && (untouched || isAllZero(buf))) return;
    await this.file.write(buf, ch.host + from);
  }

  /** Writes buf at guest offset (convenience: prepareWrite, the data writes, commit). */
  async write(buf: Uint8Array, offset: number): Promise<void> {
    const plan = await this.prepareWrite(offset, buf.byteLength);
    try {
      await Promise.all(plan.extents.map((e) => this.file.write(buf.subarray(e.guestOffset - offset, e.guestOffset - offset + e.length), e.hostOffset)));
    } catch (err) {
      await plan.abort();
      throw err;
    }
    await plan.commit();
  }

  /** Writes zeros as data (where the zero flag cannot be used), in chunks. */
  private async writeZeroes(offset: number, length: number): Promise<void> {
    const zeros = new Uint8Array(Math.min(length, ZERO_CHUNK));
    for (let pos = offset; pos < offset + length; pos += ZERO_CHUNK) {
      const n = Math.min(ZERO_CHUNK, offset + length - pos);
      await this.write(zeros.subarray(0, n), pos);
    }
  }

  /** Whether [offset, offset + length) already reads as zeros without looking at a backing file's content. */
  private async readsAsZero(offset: number, length: number): Promise<boolean> {
    const ext = await this.mapRange(offset, length);
    return ext.every((e) => e.kind === 'zero' || (e.kind === 'unallocated' && this.backing === undefined));
  }

  /**
   * Makes [offset, offset + length) read as zeros. Whole clusters use metadata: the zero flag on
   * version 3 images (with `deallocate` the host cluster is freed, otherwise kept as a
   * preallocated zero cluster), or unallocating them on version 2 images without a backing file;
   * everything else (partial clusters, version 2 with a backing file) is written as zeros.
   */
  async zeroRange(offset: number, length: number, opts: { deallocate: boolean }): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    const cs = this.clusterSize;
    const end = offset + length;
    const fullStart = Math.ceil(offset / cs) * cs;
    // The last cluster of a disk whose size is not cluster aligned counts as whole.
    const fullEnd = end === this.virtualSize ? Math.max(fullStart, end) : Math.floor(end / cs) * cs;
    const v2 = this.header.version === 2;
    const metadataOnly = !v2 || (this.backing === undefined && opts.deallocate);
    if (fullStart >= fullEnd || !metadataOnly) {
      if (!(await this.readsAsZero(offset, length))) await this.writeZeroes(offset, length);
      return;
    }
    if (offset < fullStart && !(await this.readsAsZero(offset, fullStart - offset))) await this.writeZeroes(offset, fullStart - offset);
    await this.changeWholeClusters(fullStart / cs, Math.ceil(fullEnd / cs), opts.deallocate ? 'deallocate' : 'keep');
    if (fullEnd < end && !(await this.readsAsZero(fullEnd, end - fullEnd))) await this.writeZeroes(fullEnd, end - fullEnd);
  }

  /**
   * Discards [offset, offset + length): whole clusters inside it are deallocated and then read
   * as zeros, except on version 2 images with a backing file, where they read the backing
   * file's content again. Partial clusters are left unchanged (discard is advisory).
   */
  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    const cs = this.clusterSize;
    const end = offset + length;
    const fullStart = Math.ceil(offset / cs) * cs;
    const fullEnd = end === this.virtualSize ? Math.max(fullStart, end) : Math.floor(end / cs) * cs;
    if (fullStart >= fullEnd) return;
    await this.changeWholeClusters(fullStart / cs, Math.ceil(fullEnd / cs), this.header.version === 2 ? 'unallocate' : 'deallocate');
  }

  /**
   * Rewrites the L2 entries of guest clusters [first, end):
   *  keep        zero flag, host cluster kept (preallocated) where it is ours alone
   *  deallocate  zero flag without a host cluster (plain unallocated when no backing file)
   *  unallocate  entry 0 (reads the backing file again)
   */
  private async changeWholeClusters(first: number, end: number, mode: 'keep' | 'deallocate' | 'unallocate'): Promise<void> {
    const cs = this.clusterSize;
    const unlock = await this.clusterLocks.acquire(first, end);
    try {
      await this.meta.run(async () => {
        let changed = false;
        for (let gc = first; gc < end; gc++) {
          const l1i = Math.floor(gc / this.l2PerTable);
          const needZeroFlag = mode !== 'unallocate' && this.backing !== undefined;
          let t = await this.l2ForUpdate(l1i, false);
          if (t === undefined) {
            if (!needZeroFlag) {
              gc = (l1i + 1) * this.l2PerTable - 1; // the whole L2 range is unallocated already
              continue;
            }
            t = (await this.l2ForUpdate(l1i, true))!;
          }
          const kind = this.classify(t, gc % this.l2PerTable, gc);
          const host = this.hostOut;
          const len = this.lenOut;
          if (kind === KIND_UNALLOCATED && !needZeroFlag) continue;
          if (kind === KIND_ZERO && (host === 0 || mode === 'keep')) continue;
          let keepHost = 0;
          if (mode === 'keep' && kind === KIND_DATA && (this.refcounts.getCached(host / cs) ?? (await this.refcounts.get(host / cs))) === 1) keepHost = host;
          if (keepHost !== 0) this.setL2(t, gc, COPIED_HI | Math.floor(keepHost / TWO32), (keepHost >>> 0) | ZERO_LO);
          else if (needZeroFlag || (mode === 'keep' && this.header.version === 3)) this.setL2(t, gc, 0, ZERO_LO);
          else this.setL2(t, gc, 0, 0);
          changed = true;
          if (keepHost === 0 && kind === KIND_COMPRESSED) this.pendingFrees.push({ offset: host, bytes: len, discardHost: false });
          else if (keepHost === 0 && host !== 0) this.pendingFrees.push({ offset: host, bytes: cs, discardHost: true });
        }
        if (changed) await this.markDirtyLocked();
      });
      await this.trimCaches();
    } finally {
      unlock();
    }
  }

  // ---- write-back ----

  /** Keeps both caches within their size; a full L2 cache of dirty tables costs a metadata write-back. */
  private async trimCaches(): Promise<void> {
    await this.meta.run(async () => {
      await this.refcounts.trim();
      if (!this.l2Cache.evictClean()) {
        await this.writeBackLocked();
        this.l2Cache.evictClean();
      }
    });
  }

  /** The ordered metadata write-back (see the top of this file). Holds the metadata mutex. */
  private async writeBackLocked(): Promise<void> {
    const l2 = this.l2Cache.hasDirty();
    const l1 = this.l1Dirty.size > 0;
    const rc = this.refcounts.hasDirty();
    await this.file.flush(); // 1. data
    if (rc) {
      await this.refcounts.writeBackDirty(); // 2.
      await this.file.flush();
    }
    if (l2) {
      await this.l2Cache.writeBackDirty(); // 3.
      await this.file.flush();
    }
    if (l1) {
      await this.writeL1Dirty(); // 4.
      await this.file.flush();
    }
    if (this.pendingFrees.length > 0) {
      // 5. The references are gone on disk: release the clusters.
      const frees = this.pendingFrees;
      this.pendingFrees = [];
      const discard: number[] = [];
      for (const f of frees) {
        const freed = await this.allocator.release(f.offset, f.bytes);
        for (const c of freed) {
          this.l2Cache.drop(c * this.clusterSize);
          if (this.lastCompressed !== undefined && Math.floor(this.lastCompressed.offset / this.clusterSize) === c) this.lastCompressed = undefined;
          if (f.discardHost) discard.push(c);
        }
      }
      await this.refcounts.writeBackDirty();
      await this.file.flush();
      if (this.file.discard !== undefined) for (const c of discard) await this.file.discard(c * this.clusterSize, this.clusterSize);
    }
    await this.markCleanLocked();
  }

  /** Sets the dirty bit before a metadata change that is only in memory is acknowledged (see the top). */
  private async markDirtyLocked(): Promise<void> {
    if (this.dirtyOnDisk || this.header.version < 3) return;
    await this.file.write(u64Bytes(this.header.incompatibleFeatures | INCOMPAT.dirty), HEADER_OFFSET.incompatibleFeatures);
    this.dirtyOnDisk = true;
  }

  /** Clears the dirty bit once every metadata change is written back and flushed. */
  private async markCleanLocked(): Promise<void> {
    if (!this.dirtyOnDisk || this.l2Cache.hasDirty() || this.l1Dirty.size > 0 || this.refcounts.hasDirty() || this.pendingFrees.length > 0) return;
    // Not flushed itself: a clear that is lost only makes the next open think it unclean.
    await this.file.write(u64Bytes(this.header.incompatibleFeatures & ~INCOMPAT.dirty), HEADER_OFFSET.incompatibleFeatures);
    this.dirtyOnDisk = false;
  }

  /** Writes the dirty L1 entries, one 512-byte sector per group. */
  private async writeL1Dirty(): Promise<void> {
    const sectors = new Set<number>();
    for (const i of this.l1Dirty) sectors.add(Math.floor((i * 8) / 512));
    this.l1Dirty.clear();
    for (const s of [...sectors].sort((a, b) => a - b)) {
      const start = s * 512;
      const end = Math.min(start + 512, this.l1.byteLength);
      await this.file.write(this.l1.slice(start, end), this.header.l1TableOffset + start);
    }
  }

  /** Makes every completed write and metadata change durable (ordered write-back, then file flush). */
  async flush(): Promise<void> {
    if (this.closed) return;
    if (this.readonly) return;
    await this.meta.run(() => this.writeBackLocked());
  }

  get readonly(): boolean {
    return this.ro;
  }

  /**
   * Writes the metadata back (as flush), then refuses writes from now on: the image becomes the
   * read-only backing file of a new overlay (bdev_qcow2_snapshot), its caches kept warm. Call it
   * with no write under way.
   */
  async freeze(): Promise<void> {
    if (this.closed || this.ro) return;
    await this.meta.run(async () => {
      await this.writeBackLocked();
      this.ro = true;
    });
  }

  /** Flushes (read-write) and refuses further requests. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
  }
}

function push(out: Extent[], kind: number, guestOffset: number, length: number, hostOffset: number, compressedLength: number): void {
  const prev = out[out.length - 1];
  if (prev !== undefined && prev.kind === KIND_NAMES[kind] && kind !== KIND_COMPRESSED && prev.guestOffset + prev.length === guestOffset) {
    if (kind !== KIND_DATA || prev.hostOffset + prev.length === hostOffset) {
      prev.length += length;
      return;
    }
  }
  out.push({ kind: KIND_NAMES[kind]!, guestOffset, length, hostOffset, compressedLength });
}

/** Whether every byte of buf is 0, 8 bytes at a time where it can (a cluster is up to 2 MiB). */
function isAllZero(buf: Uint8Array): boolean {
  const head = Math.min(buf.byteLength, (8 - (buf.byteOffset % 8)) % 8);
  for (let i = 0; i < head; i++) if (buf[i] !== 0) return false;
  const words = Math.floor((buf.byteLength - head) / 8);
  const w = new BigUint64Array(buf.buffer, buf.byteOffset + head, words);
  for (let i = 0; i < words; i++) if (w[i] !== 0n) return false;
  for (let i = head + words * 8; i < buf.byteLength; i++) if (buf[i] !== 0) return false;
  return true;
}
