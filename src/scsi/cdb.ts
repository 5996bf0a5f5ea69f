// CDB decoding helpers: big-endian field readers and the CDB length implied by an opcode's group.
// Readers take plain byte arrays and never allocate.

export function be16(b: Uint8Array, off: number): number {
  return (b[off] << 8) | b[off + 1];
}

export function be24(b: Uint8Array, off: number): number {
  return (b[off] << 16) | (b[off + 1] << 8) | b[off + 2];
}

export function be32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

/**
 * A 64-bit big-endian unsigned integer as a double. Exact below 2^53; above that the result is
 * inexact but still greater than any real block count, which is all range checks need.
 */
export function be64(b: Uint8Array, off: number): number {
  return be32(b, off) * 0x1_0000_0000 + be32(b, off + 4);
}

export function putBe16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

export function putBe32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** Writes a non-negative integer below 2^53 as 64-bit big-endian. */
export function putBe64(b: Uint8Array, off: number, v: number): void {
  const hi = Math.floor(v / 0x1_0000_0000);
  putBe32(b, off, hi >>> 0);
  putBe32(b, off + 4, v >>> 0);
}

/**
 * CDB length implied by the opcode's group code (SPC-4 4.2.5.1): 6, 10, 12 or 16 bytes; 0 for the
 * reserved and vendor-specific groups (3, 6, 7), whose length this target cannot know.
 */
export function cdbLengthForOpcode(opcode: number): number {
  switch (opcode >>> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

/** NACA bit of a CONTROL byte: normal ACA is not supported (NormACA=0 in INQUIRY). */
export function controlByteHasNaca(control: number): boolean {
  return (control & 0x04) !== 0;
}
