// Fixed-format sense data (SPC-4 4.5.3), as SPDK's spdk_scsi_task_build_sense_data builds it:
// 18 bytes, response code 70h (current error), additional sense length 10.

/** Bytes of fixed-format sense data this layer produces. */
export const FIXED_SENSE_LENGTH = 18;
/** Response code for current errors in fixed format. */
export const SENSE_RESPONSE_CURRENT_FIXED = 0x70;

/**
 * Writes fixed-format sense data at buf[off..off+18). The VALID bit stays clear because the
 * INFORMATION field is never filled in (SPDK sets it anyway; initiators mask it off).
 */
export function writeFixedSense(buf: Uint8Array, off: number, senseKey: number, asc: number, ascq: number): void {
  buf.fill(0, off, off + FIXED_SENSE_LENGTH);
  buf[off] = SENSE_RESPONSE_CURRENT_FIXED;
  buf[off + 2] = senseKey & 0x0f;
  buf[off + 7] = FIXED_SENSE_LENGTH - 8; // ADDITIONAL SENSE LENGTH
  buf[off + 12] = asc;
  buf[off + 13] = ascq;
}

export interface DecodedSense {
  responseCode: number;
  senseKey: number;
  asc: number;
  ascq: number;
  additionalLength: number;
}

/** Decodes fixed-format sense data; returns undefined when it is not fixed format or too short. */
export function decodeFixedSense(buf: Uint8Array, len = buf.length): DecodedSense | undefined {
  if (len < FIXED_SENSE_LENGTH) return undefined;
  const responseCode = buf[0] & 0x7f;
  if (responseCode !== 0x70 && responseCode !== 0x71) return undefined;
  return {
    responseCode,
    senseKey: buf[2] & 0x0f,
    asc: buf[12],
    ascq: buf[13],
    additionalLength: buf[7],
  };
}
