// READ CAPACITY (10) and READ CAPACITY (16) parameter data (SBC-3 5.16 / 5.17).
import { putBe32, putBe64 } from './cdb.js';
import type { ScsiLunInfo } from './lun-info.js';

export const READ_CAPACITY_10_LENGTH = 8;
export const READ_CAPACITY_16_LENGTH = 32;

/** Last LBA and block length; FFFFFFFFh when the last LBA does not fit (use READ CAPACITY (16)). */
export function buildReadCapacity10(info: ScsiLunInfo, out: Uint8Array): number {
  const last = Math.max(info.numBlocks - 1, 0);
  putBe32(out, 0, last > 0xffffffff ? 0xffffffff : last);
  putBe32(out, 4, info.blockSize);
  return READ_CAPACITY_10_LENGTH;
}

/** 32 bytes: last LBA, block length, LBPPBE 0, LBPME when the bdev supports unmap (as SPDK). */
export function buildReadCapacity16(info: ScsiLunInfo, out: Uint8Array): number {
  out.fill(0, 0, READ_CAPACITY_16_LENGTH);
  putBe64(out, 0, Math.max(info.numBlocks - 1, 0));
  putBe32(out, 8, info.blockSize);
  out[13] = 0; // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
  if (info.supportsUnmap) out[14] |= 0x80; // LBPME
  return READ_CAPACITY_16_LENGTH;
}
