// Standard INQUIRY data (SPC-3 format, as SPDK's bdev_scsi_inquiry fills it) and the reply for a
// logical unit that does not exist.
import { DISK_REVISION, DISK_VENDOR, PERIPHERAL_DEVICE_TYPE_DISK, PERIPHERAL_NOT_CONNECTED } from './constants.js';
import { putBe16 } from './cdb.js';

/** Full standard INQUIRY data length: 36 mandatory bytes plus the version descriptors and reserved area. */
export const STANDARD_INQUIRY_LENGTH = 96;
/** SPC-3 VERSION value. */
const VERSION_SPC3 = 0x05;

/** Writes `text` as ASCII into dst[off..off+len), space padded and truncated (spdk_strcpy_pad). */
export function putPaddedAscii(dst: Uint8Array, off: number, text: string, len: number, pad = 0x20): void {
  let i = 0;
  for (; i < len && i < text.length; i++) {
    const c = text.charCodeAt(i);
    dst[off + i] = c < 0x20 || c > 0x7e ? 0x3f /* '?' */ : c;
  }
  dst.fill(pad, off + i, off + len);
}

/** Builds the 96-byte standard INQUIRY data into out; returns its length. */
export function buildStandardInquiry(productName: string, out: Uint8Array): number {
  out.fill(0, 0, STANDARD_INQUIRY_LENGTH);
  out[0] = PERIPHERAL_DEVICE_TYPE_DISK; // qualifier 000b: connected
  out[1] = 0; // RMB=0
  out[2] = VERSION_SPC3;
  out[3] = 0x12; // HISUP | RESPONSE DATA FORMAT 2
  out[4] = STANDARD_INQUIRY_LENGTH - 5; // ADDITIONAL LENGTH
  out[5] = 0; // no TPGS, 3PC, PROTECT
  out[6] = 0x10; // MULTIP
  out[7] = 0x02; // CMDQUE
  putPaddedAscii(out, 8, DISK_VENDOR, 8);
  putPaddedAscii(out, 16, productName, 16);
  putPaddedAscii(out, 32, DISK_REVISION, 4);
  out.fill(0x20, 36, 56); // vendor specific: spaces
  // 56: CLOCKING/QAS/IUS = 0, 57 reserved; version descriptors as SPDK claims them
  putBe16(out, 58, 0x0960); // iSCSI
  putBe16(out, 60, 0x0300); // SPC-3
  putBe16(out, 62, 0x0320); // SBC-2
  putBe16(out, 64, 0x0040); // SAM-2
  return STANDARD_INQUIRY_LENGTH;
}

/** Length of the INQUIRY reply for a missing LUN (SPDK: spdk_scsi_task_process_null_lun). */
export const NULL_LUN_INQUIRY_LENGTH = 36;

/** INQUIRY data for an unsupported LUN: qualifier 011b, device type 1Fh, nothing else. */
export function buildNullLunInquiry(out: Uint8Array): number {
  out.fill(0, 0, NULL_LUN_INQUIRY_LENGTH);
  out[0] = PERIPHERAL_NOT_CONNECTED;
  out[4] = NULL_LUN_INQUIRY_LENGTH - 5;
  return NULL_LUN_INQUIRY_LENGTH;
}
