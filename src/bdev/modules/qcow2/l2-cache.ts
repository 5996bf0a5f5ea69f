// A bounded cache of one-cluster metadata tables, keyed by their host offset: the L2 tables
// (and, in a second instance, the refcount blocks). LRU through Map insertion order: a hit
// re-inserts the entry. A hit is synchronous, so a read whose L2 table is cached is translated
// without a Promise.
//
// Dirty tracking is per table as one byte span (the entries changed since the last write-back);
// write-back writes that span rounded to 512 bytes, not the whole cluster. The cache never writes
// on its own: WHEN a dirty table may reach the file depends on other metadata (refcounts first,
// L1 after), so the owner decides through writeBackDirty() and the trim hook, and the cache only
// ever evicts clean tables.
import type { ImageFile } from './image-file.js';

export interface CachedTable {
  /** Host offset of the table (cluster aligned). */
  readonly offset: number;
  readonly data: Uint8Array;
  readonly view: DataView;
  /** Changed bytes [dirtyStart, dirtyEnd); clean when dirtyStart >= dirtyEnd. */
  dirtyStart: number;
  dirtyEnd: number;
}

function makeTable(offset: number, data: Uint8Array): CachedTable {
  return { offset, data, view: new DataView(data.buffer, data.byteOffset, data.byteLength), dirtyStart: 0, dirtyEnd: 0 };
}

export function isDirty(t: CachedTable): boolean {
  return t.dirtyStart < t.dirtyEnd;
}

export class MetadataCache {
  /** Tables the cache holds before it evicts clean ones. */
  readonly capacity: number;
  private readonly tables = new Map<number, CachedTable>();
  private readonly loading = new Map<number, Promise<CachedTable>>();

  constructor(
    private readonly file: ImageFile,
    /** Bytes per table (the cluster size). */
    readonly tableSize: number,
    capacityBytes: number,
  ) {
    // At least two tables, so a request that spans an L2 boundary never thrashes.
    this.capacity = Math.max(2, Math.floor(capacityBytes / tableSize));
  }

  get size(): number {
    return this.tables.size;
  }

  /** The cached table at `offset`, made most recently used; undefined on a miss. Synchronous. */
  get(offset: number): CachedTable | undefined {
    const t = this.tables.get(offset);
    if (t !== undefined) {
      this.tables.delete(offset);
      this.tables.set(offset, t);
    }
    return t;
  }

  /**
   * The table at `offset`, read from the file on a miss (concurrent misses share one read). It
   * is inserted when there is room or `pin` asks for it (the caller is going to modify it; the
   * cache may then exceed its capacity until the owner trims); otherwise the caller gets a
   * private copy that is not cached, which is fine for a lookup.
   */
  async load(offset: number, pin: boolean): Promise<CachedTable> {
    const hit = this.get(offset);
    if (hit !== undefined) return hit;
    let p = this.loading.get(offset);
    if (p === undefined) {
      p = (async () => {
        const data = new Uint8Array(this.tableSize);
        await this.file.read(data, offset);
        return makeTable(offset, data);
      })();
      this.loading.set(offset, p);
      p.then(
        () => this.loading.delete(offset),
        () => this.loading.delete(offset),
      );
    }
    const t = await p;
    // Someone may have inserted (and modified) it meanwhile: theirs wins.
    const now = this.get(offset);
    if (now !== undefined) return now;
    if (pin || this.tables.size < this.capacity || this.evictOneClean()) this.tables.set(offset, t);
    return t;
  }

  /** Inserts a table that was just allocated (all zero, all dirty: it must reach the file). */
  insertNew(offset: number): CachedTable {
    const t = makeTable(offset, new Uint8Array(this.tableSize));
    t.dirtyStart = 0;
    t.dirtyEnd = this.tableSize;
    this.tables.set(offset, t);
    return t;
  }

  markDirty(t: CachedTable, start: number, end: number): void {
    if (t.dirtyStart >= t.dirtyEnd) {
      t.dirtyStart = start;
      t.dirtyEnd = end;
    } else {
      t.dirtyStart = Math.min(t.dirtyStart, start);
      t.dirtyEnd = Math.max(t.dirtyEnd, end);
    }
  }

  /** Forgets a table (its cluster was freed); pending changes are dropped. */
  drop(offset: number): void {
    this.tables.delete(offset);
  }

  hasDirty(): boolean {
    for (const t of this.tables.values()) if (isDirty(t)) return true;
    return false;
  }

  /** Writes one table's dirty span (rounded to 512-byte sectors) and marks it clean. */
  async writeBack(t: CachedTable): Promise<void> {
    if (!isDirty(t)) return;
    const start = Math.floor(t.dirtyStart / 512) * 512;
    const end = Math.min(this.tableSize, Math.ceil(t.dirtyEnd / 512) * 512);
    // Clear first: a change made while the write is in flight marks it dirty again.
    t.dirtyStart = t.dirtyEnd = 0;
    try {
      await this.file.write(t.data.slice(start, end), t.offset + start);
    } catch (err) {
      this.markDirty(t, start, end);
      throw err;
    }
  }

  /** Writes every dirty table, in host-offset order. */
  async writeBackDirty(): Promise<void> {
    const dirty = [...this.tables.values()].filter(isDirty).sort((a, b) => a.offset - b.offset);
    for (const t of dirty) await this.writeBack(t);
  }

  /** Evicts least recently used clean tables until within capacity; returns whether it got there. */
  evictClean(): boolean {
    while (this.tables.size > this.capacity) if (!this.evictOneClean()) return false;
    return true;
  }

  /** The least recently used dirty table (for owners whose dirty tables may be written any time). */
  oldestDirty(): CachedTable | undefined {
    for (const t of this.tables.values()) if (isDirty(t)) return t;
    return undefined;
  }

  private evictOneClean(): boolean {
    for (const [off, t] of this.tables) {
      if (!isDirty(t)) {
        this.tables.delete(off);
        return true;
      }
    }
    return false;
  }
}
