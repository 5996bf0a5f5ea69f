// A guest memory region as shared between the control thread and reactors: a SharedArrayBuffer
// over the mmap'ed fd plus the three address spaces that locate it.

/** A region as the front-end describes it (vhost-user SET_MEM_TABLE / ADD_MEM_REG). */
export interface MemoryRegionDesc {
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  mmapOffset: number;
}

/** A memory table change the front-end asked for that cannot be honoured (bad region, map failure). */
export class MemoryError extends Error {}

/** Structured-cloneable region description sent to reactors. */
export interface RegionShare {
  /** Guest physical address of the first byte. */
  gpa: number;
  size: number;
  /** QEMU's virtual address of the first byte (vring addresses are given in this space). */
  uva: number;
  /** Offset of the first byte inside `buffer` (the fd was mapped from offset 0 to honour mmap_offset). */
  base: number;
  buffer: SharedArrayBuffer;
  /** The native mapping behind `buffer` (native.mappingFaulted), when it is one. */
  mappingId?: number;
  /** The front-end's file is on hugetlbfs: resident, so its pages may be pinned for I/O (native/pinnable.ts). */
  hugepages?: boolean;
}

/** Views are cut into windows so no typed array exceeds what one can address (VMs with tens of GiB). */
export const WINDOW_SHIFT = 30;
export const WINDOW_SIZE = 2 ** WINDOW_SHIFT;
