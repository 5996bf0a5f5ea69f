// Control-thread memory table of one vhost-user session: validates regions from SET_MEM_TABLE /
// ADD_MEM_REG, maps their fds, and releases mappings QEMU removed (after reactors let go).
import { mmapShared, native } from '../native/index.js';
import { uringNative } from '../native/uring.js';
import { type MemoryRegionDesc, MemoryError, type RegionShare } from './region.js';

const MAX_ADDRESS = 2 ** 53;
/** statfs(2) f_type of hugetlbfs. */
const HUGETLBFS_MAGIC = 0x958458f6;

export interface MappedRegion {
  desc: MemoryRegionDesc;
  mappingId: number;
  share: RegionShare;
}

function overlaps(a0: number, alen: number, b0: number, blen: number): boolean {
  return a0 < b0 + blen && b0 < a0 + alen;
}

export class MemoryTable {
  private regions: MappedRegion[] = [];

  constructor(readonly maxRegions: number) {}

  get count(): number {
    return this.regions.length;
  }

  shares(): RegionShare[] {
    return this.regions.map((r) => r.share);
  }

  /** Checks one region on its own and against `others`; throws MemoryError. */
  static validate(desc: MemoryRegionDesc, others: MemoryRegionDesc[]): void {
    const { guestPhysAddr: gpa, memorySize: size, userspaceAddr: uva, mmapOffset } = desc;
    if (size === 0) throw new MemoryError('memory region of size 0');
    if (gpa + size > MAX_ADDRESS || uva + size > MAX_ADDRESS || mmapOffset + size > MAX_ADDRESS) {
      throw new MemoryError(`memory region gpa 0x${gpa.toString(16)} size 0x${size.toString(16)} overflows`);
    }
    for (const o of others) {
      if (overlaps(gpa, size, o.guestPhysAddr, o.memorySize)) {
        throw new MemoryError(`memory region gpa 0x${gpa.toString(16)}+0x${size.toString(16)} overlaps gpa 0x${o.guestPhysAddr.toString(16)}`);
      }
      if (overlaps(uva, size, o.userspaceAddr, o.memorySize)) {
        throw new MemoryError(`memory region uva 0x${uva.toString(16)}+0x${size.toString(16)} overlaps uva 0x${o.userspaceAddr.toString(16)}`);
      }
    }
  }

  /** Maps one region; the fd is always consumed (closed). */
  private static map(desc: MemoryRegionDesc, fd: number): MappedRegion {
    try {
      const length = desc.mmapOffset + desc.memorySize;
      let m: ReturnType<typeof mmapShared>;
      try {
        m = mmapShared(fd, length, 0);
      } catch (e) {
        throw new MemoryError(`cannot map memory region gpa 0x${desc.guestPhysAddr.toString(16)} size 0x${desc.memorySize.toString(16)}: ${(e as Error).message}`);
      }
      return {
        desc,
        mappingId: m.id,
        share: {
          gpa: desc.guestPhysAddr,
          size: desc.memorySize,
          uva: desc.userspaceAddr,
          base: desc.mmapOffset,
          buffer: m.buffer,
          mappingId: m.id,
          hugepages: uringNative.fileFsType(fd) === HUGETLBFS_MAGIC,
        },
      };
    } finally {
      native.close(fd);
    }
  }

  /**
   * Replaces the whole table (SET_MEM_TABLE). Returns the previous regions: the caller releases
   * them once reactors run on the new table. All fds are consumed, on success and failure.
   */
  replace(descs: MemoryRegionDesc[], fds: number[]): MappedRegion[] {
    const mapped: MappedRegion[] = [];
    // fds[0, consumed) were handed to map(), which closes its fd whether it succeeds or not.
    let consumed = 0;
    try {
      if (descs.length > this.maxRegions) throw new MemoryError(`${descs.length} memory regions, at most ${this.maxRegions}`);
      descs.forEach((d, i) => MemoryTable.validate(d, descs.slice(0, i)));
      while (consumed < descs.length) {
        const i = consumed++;
        mapped.push(MemoryTable.map(descs[i], fds[i]));
      }
    } catch (e) {
      for (let i = consumed; i < fds.length; i++) native.close(fds[i]);
      MemoryTable.release(mapped);
      throw e;
    }
    const old = this.regions;
    this.regions = mapped;
    return old;
  }

  /** ADD_MEM_REG. The fd is consumed. */
  add(desc: MemoryRegionDesc, fd: number): void {
    try {
      if (this.regions.length >= this.maxRegions) throw new MemoryError(`memory slot limit ${this.maxRegions} reached`);
      MemoryTable.validate(
        desc,
        this.regions.map((r) => r.desc),
      );
    } catch (e) {
      native.close(fd);
      throw e;
    }
    this.regions.push(MemoryTable.map(desc, fd));
  }

  /** REM_MEM_REG: removes the region matching gpa, size and uva; returns it for later release. */
  remove(desc: MemoryRegionDesc): MappedRegion {
    const i = this.regions.findIndex(
      (r) => r.desc.guestPhysAddr === desc.guestPhysAddr && r.desc.memorySize === desc.memorySize && r.desc.userspaceAddr === desc.userspaceAddr,
    );
    if (i < 0) throw new MemoryError(`REM_MEM_REG: no region at gpa 0x${desc.guestPhysAddr.toString(16)} size 0x${desc.memorySize.toString(16)}`);
    return this.regions.splice(i, 1)[0];
  }

  clear(): MappedRegion[] {
    const old = this.regions;
    this.regions = [];
    return old;
  }

  /** Drops the guest files now; the address ranges stay valid until the last view is collected. */
  static release(regions: MappedRegion[]): void {
    for (const r of regions) native.releaseMapping(r.mappingId);
  }
}
