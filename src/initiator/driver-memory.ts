// "Guest" memory of the userspace initiator: a memfd shared with the target, with a bump
// allocator for rings and buffers.
import { closeSync, ftruncateSync, openSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { check, mmapShared, native } from '../native/index.js';
import type { MemoryRegionDesc } from '../vhost-user/protocol.js';

/** A made-up process address for the region, as QEMU would report its own mapping. */
const FAKE_UVA_BASE = 0x7f0000000000;

export class DriverMemory {
  readonly fd: number;
  readonly u8: Uint8Array;
  readonly view: DataView;
  private next = 0;

  /**
   * `hugetlbfs`: a hugetlbfs mount (e.g. /dev/hugepages) to back the memory with a file there
   * instead of a memfd, as a VM with hugepage memory does: SPDK's vhost target needs that. `size`
   * must then be a multiple of the huge page size.
   */
  constructor(
    readonly size: number,
    readonly gpaBase = 0,
    hugetlbfs?: string,
  ) {
    if (hugetlbfs) {
      const path = join(hugetlbfs, `vhostd-initiator-${process.pid}-${Math.random().toString(36).slice(2)}`);
      const fd = openSync(path, 'w+', 0o600);
      unlinkSync(path);
      try {
        ftruncateSync(fd, size);
      } catch (e) {
        closeSync(fd);
        throw e;
      }
      this.fd = fd;
    } else this.fd = check('memfd_create', native.memfdCreate('vhostd-initiator', size));
    const m = mmapShared(this.fd, size, 0);
    this.u8 = new Uint8Array(m.buffer);
    this.view = new DataView(m.buffer);
  }

  get uvaBase(): number {
    return FAKE_UVA_BASE + this.gpaBase;
  }

  region(): MemoryRegionDesc {
    return { guestPhysAddr: this.gpaBase, memorySize: this.size, userspaceAddr: this.uvaBase, mmapOffset: 0 };
  }

  /** Allocates `len` bytes aligned to `align`; returns the guest-physical address. */
  alloc(len: number, align = 64): number {
    const off = Math.ceil(this.next / align) * align;
    if (off + len > this.size) throw new Error(`initiator memory exhausted (${this.size} bytes)`);
    this.next = off + len;
    return this.gpaBase + off;
  }

  /** Offset in u8/view of a guest-physical address. */
  off(gpa: number): number {
    return gpa - this.gpaBase;
  }

  gpaToUva(gpa: number): number {
    return FAKE_UVA_BASE + gpa;
  }

  close(): void {
    native.close(this.fd);
  }
}
