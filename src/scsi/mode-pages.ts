// MODE SENSE data (the page set SPDK's bdev_scsi_mode_sense_page reports) and MODE SELECT
// parameter-list validation. Nothing is changeable: MODE SELECT is validated and ignored, as SPDK
// does, and the changeable-values mask (PC=01b) is all zeros.
import type { IoVecs } from '../bdev/io.js';
import { ModePage } from './constants.js';
import { putBe16, putBe32, putBe64 } from './cdb.js';
import { iovBe16, iovByte } from './iov.js';
import type { ScsiLunInfo } from './lun-info.js';

/** Page length including its header for each supported (page, subpage); 0 when unsupported. */
export function modePageLength(page: number, subpage: number): number {
  if (subpage === 0) {
    switch (page) {
      case ModePage.READ_WRITE_ERROR_RECOVERY:
        return 0x0a + 2;
      case ModePage.DISCONNECT_RECONNECT:
        return 0x0e + 2;
      case ModePage.VERIFY_ERROR_RECOVERY:
        return 0x0a + 2;
      case ModePage.CACHING:
        return 0x12 + 2;
      case ModePage.CONTROL:
        return 0x0a + 2;
      case ModePage.XOR_CONTROL:
        return 0x16 + 2;
      case ModePage.POWER_CONDITION:
        return 0x0a + 2;
      case ModePage.INFORMATIONAL_EXCEPTIONS_CONTROL:
        return 0x0a + 2;
      default:
        return 0;
    }
  }
  if (page === ModePage.CONTROL && subpage === 0x01) return 0x1c + 4; // Control Extension
  return 0;
}

/** Subpages (besides 0) a page has. */
function extraSubpages(page: number): readonly number[] {
  return page === ModePage.CONTROL ? CONTROL_SUBPAGES : NONE;
}
const CONTROL_SUBPAGES = [0x01] as const;
const NONE = [] as const;

function writePage(out: Uint8Array, off: number, page: number, subpage: number, pc: number, info: ScsiLunInfo): number {
  const len = modePageLength(page, subpage);
  out.fill(0, off, off + len);
  if (subpage !== 0) {
    out[off] = page | 0x40; // SPF
    out[off + 1] = subpage;
    putBe16(out, off + 2, len - 4);
  } else {
    out[off] = page;
    out[off + 1] = len - 2;
  }
  if (page === ModePage.CACHING && subpage === 0 && pc !== 1) {
    if (info.writeCache) out[off + 2] |= 0x04; // WCE
    out[off + 2] |= 0x01; // RCD: read cache disabled (SPDK)
  }
  return len;
}

/** Writes the requested page(s) at out[off..]; returns bytes written, 0 when nothing matches. */
function writePages(out: Uint8Array, off: number, page: number, subpage: number, pc: number, info: ScsiLunInfo): number {
  let p = off;
  if (page === ModePage.ALL) {
    if (subpage !== 0x00 && subpage !== 0xff) return 0;
    for (let pg = 0; pg < ModePage.ALL; pg++) {
      if (modePageLength(pg, 0) === 0) continue;
      p += writePage(out, p, pg, 0, pc, info);
      if (subpage === 0xff) for (const sp of extraSubpages(pg)) p += writePage(out, p, pg, sp, pc, info);
    }
    return p - off;
  }
  if (subpage === 0xff) {
    if (modePageLength(page, 0) === 0) return 0;
    p += writePage(out, p, page, 0, pc, info);
    for (const sp of extraSubpages(page)) p += writePage(out, p, page, sp, pc, info);
    return p - off;
  }
  if (modePageLength(page, subpage) === 0) return 0;
  return writePage(out, p, page, subpage, pc, info);
}

export interface ModeSenseRequest {
  /** MODE SENSE (6) rather than (10). */
  six: boolean;
  /** DBD: no block descriptor. */
  dbd: boolean;
  /** LLBAA (MODE SENSE (10) only): 16-byte block descriptor. */
  llbaa: boolean;
  /** Page control: 0 current, 1 changeable, 2 default, 3 saved. */
  pc: number;
  page: number;
  subpage: number;
}

export const ModeSenseError = {
  /** Page/subpage not supported: INVALID FIELD IN CDB. */
  INVALID_FIELD: -1,
  /** PC=11b: SAVING PARAMETERS NOT SUPPORTED. */
  SAVING_NOT_SUPPORTED: -2,
} as const;

/** Upper bound of MODE SENSE data (header + long block descriptor + every page). */
export const MODE_SENSE_MAX_LENGTH = 512;

/** Builds MODE SENSE data into out; returns its length or a ModeSenseError. */
export function buildModeSense(req: ModeSenseRequest, info: ScsiLunInfo, out: Uint8Array): number {
  if (req.pc === 3) return ModeSenseError.SAVING_NOT_SUPPORTED;
  const hlen = req.six ? 4 : 8;
  const blen = req.dbd ? 0 : !req.six && req.llbaa ? 16 : 8;
  const plen = writePages(out, hlen + blen, req.page, req.subpage, req.pc, info);
  if (plen === 0) return ModeSenseError.INVALID_FIELD;
  const total = hlen + blen + plen;
  const deviceSpecific = info.readonly ? 0x80 : 0; // WP
  out.fill(0, 0, hlen + blen);
  if (req.six) {
    out[0] = total - 1; // MODE DATA LENGTH
    out[1] = 0; // MEDIUM TYPE
    out[2] = deviceSpecific;
    out[3] = blen;
  } else {
    putBe16(out, 0, total - 2);
    out[2] = 0;
    out[3] = deviceSpecific;
    out[4] = blen === 16 ? 0x01 : 0; // LONGLBA
    putBe16(out, 6, blen);
  }
  if (blen === 16) {
    putBe64(out, hlen, info.numBlocks);
    putBe32(out, hlen + 12, info.blockSize);
  } else if (blen === 8) {
    putBe32(out, hlen, info.numBlocks > 0xffffffff ? 0xffffffff : info.numBlocks);
    putBe32(out, hlen + 4, info.blockSize & 0xffffff); // byte 4 DENSITY CODE 0, bytes 5-7 BLOCK LENGTH
  }
  return total;
}

export const ModeSelectResult = {
  OK: 0,
  INVALID_FIELD_IN_CDB: 1,
  INVALID_FIELD_IN_PARAMETER_LIST: 2,
  PARAMETER_LIST_LENGTH_ERROR: 3,
} as const;
export type ModeSelectResult = (typeof ModeSelectResult)[keyof typeof ModeSelectResult];

/**
 * Validates a MODE SELECT parameter list of `pllen` bytes at the start of `data`: header, block
 * descriptor length, and that every page is one MODE SENSE reports, with its exact length.
 */
export function validateModeSelect(six: boolean, data: IoVecs, pllen: number): ModeSelectResult {
  if (pllen === 0) return ModeSelectResult.OK;
  const hlen = six ? 4 : 8;
  if (pllen < hlen || data.totalLen < pllen) return ModeSelectResult.INVALID_FIELD_IN_CDB;
  const bdl = six ? iovByte(data, 3) : iovBe16(data, 6);
  const longLba = !six && (iovByte(data, 4) & 0x01) !== 0;
  if (bdl !== 0 && bdl !== (longLba ? 16 : 8)) return ModeSelectResult.INVALID_FIELD_IN_PARAMETER_LIST;
  let pos = hlen + bdl;
  if (pos > pllen) return ModeSelectResult.PARAMETER_LIST_LENGTH_ERROR;
  while (pos < pllen) {
    if (pllen - pos < 2) return ModeSelectResult.PARAMETER_LIST_LENGTH_ERROR;
    const b0 = iovByte(data, pos);
    const page = b0 & 0x3f;
    let subpage = 0;
    let len: number;
    if (b0 & 0x40) {
      if (pllen - pos < 4) return ModeSelectResult.PARAMETER_LIST_LENGTH_ERROR;
      subpage = iovByte(data, pos + 1);
      len = iovBe16(data, pos + 2) + 4;
    } else {
      len = iovByte(data, pos + 1) + 2;
    }
    if (pos + len > pllen) return ModeSelectResult.PARAMETER_LIST_LENGTH_ERROR;
    const expected = modePageLength(page, subpage);
    if (expected === 0 || expected !== len) return ModeSelectResult.INVALID_FIELD_IN_PARAMETER_LIST;
    pos += len;
  }
  return ModeSelectResult.OK;
}
