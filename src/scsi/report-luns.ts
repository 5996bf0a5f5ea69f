// REPORT LUNS parameter data (SPC-4 6.33) for the single-level LUNs of one target.
import { putBe32 } from './cdb.js';

/** Writes the 8-byte SAM single-level address of `lun` (SPDK's spdk_scsi_lun_id_int_to_fmt). */
export function putLunId(out: Uint8Array, off: number, lun: number): void {
  out.fill(0, off, off + 8);
  if (lun < 0x100) {
    out[off + 1] = lun; // peripheral device addressing
  } else if (lun < 0x4000) {
    out[off] = 0x40 | (lun >>> 8); // flat space addressing
    out[off + 1] = lun & 0xff;
  }
}

/**
 * Builds REPORT LUNS data for SELECT REPORT `select` listing `luns`; returns its length, or -1
 * when SELECT REPORT is not one of 00h (all), 01h (well-known only: none here) or 02h (all).
 */
export function buildReportLuns(select: number, luns: readonly number[], out: Uint8Array): number {
  if (select !== 0x00 && select !== 0x01 && select !== 0x02) return -1;
  const listed = select === 0x01 ? 0 : luns.length;
  out.fill(0, 0, 8);
  putBe32(out, 0, listed * 8); // LUN LIST LENGTH
  for (let i = 0; i < listed; i++) putLunId(out, 8 + i * 8, luns[i]);
  return 8 + listed * 8;
}
