// UNMAP parameter list (SBC-3 5.28.2): an 8-byte header and 16-byte block descriptors (LBA, count),
// read in place from the data-out scatter list. Every descriptor is validated before anything is
// unmapped, so a bad list changes nothing.
import type { IoVecs } from '../bdev/io.js';
import { MAX_UNMAP_BLOCK_DESCRIPTORS, MAX_UNMAP_LBA_COUNT } from './constants.js';
import { iovBe16, iovBe32, iovBe64 } from './iov.js';

export const UnmapError = {
  /** Data-out shorter than PARAMETER LIST LENGTH: INVALID FIELD IN CDB. */
  SHORT_DATA: -1,
  /** 0 < PARAMETER LIST LENGTH < 8: PARAMETER LIST LENGTH ERROR. */
  LIST_LENGTH: -2,
  /** Too many descriptors or LBAs: INVALID FIELD IN PARAMETER LIST. */
  INVALID_LIST: -3,
  /** A descriptor reaches past the last LBA: LBA OUT OF RANGE. */
  OUT_OF_RANGE: -4,
} as const;

export const UNMAP_HEADER_LENGTH = 8;
export const UNMAP_DESCRIPTOR_LENGTH = 16;

/** LBA of descriptor i. */
export function unmapDescriptorLba(data: IoVecs, i: number): number {
  return iovBe64(data, UNMAP_HEADER_LENGTH + i * UNMAP_DESCRIPTOR_LENGTH);
}

/** NUMBER OF LOGICAL BLOCKS of descriptor i. */
export function unmapDescriptorBlocks(data: IoVecs, i: number): number {
  return iovBe32(data, UNMAP_HEADER_LENGTH + i * UNMAP_DESCRIPTOR_LENGTH + 8);
}

/**
 * Validates the parameter list of `pllen` bytes; returns the number of descriptors to process
 * (0: nothing to do) or an UnmapError. A BLOCK DESCRIPTOR DATA LENGTH beyond the parameter list
 * is clamped to it and a partial trailing descriptor ignored (as Linux's LIO target does).
 */
export function checkUnmapParameters(data: IoVecs, pllen: number, numBlocks: number): number {
  if (pllen === 0) return 0;
  if (pllen < UNMAP_HEADER_LENGTH) return UnmapError.LIST_LENGTH;
  if (data.totalLen < pllen) return UnmapError.SHORT_DATA;
  const bddl = Math.min(iovBe16(data, 2), pllen - UNMAP_HEADER_LENGTH);
  const count = Math.floor(bddl / UNMAP_DESCRIPTOR_LENGTH);
  if (count > MAX_UNMAP_BLOCK_DESCRIPTORS) return UnmapError.INVALID_LIST;
  let total = 0;
  for (let i = 0; i < count; i++) {
    const lba = unmapDescriptorLba(data, i);
    const blocks = unmapDescriptorBlocks(data, i);
    total += blocks;
    if (total > MAX_UNMAP_LBA_COUNT) return UnmapError.INVALID_LIST;
    if (lba > numBlocks || blocks > numBlocks - lba) return UnmapError.OUT_OF_RANGE;
  }
  return count;
}
