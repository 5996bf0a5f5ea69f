// Encoding of the 64-bit table entries (L1, L2, refcount table). All qcow2 numbers are big
// endian. Entries are read as two 32-bit halves instead of BigInt so that the hot path (a
// cache-hit lookup) allocates nothing; host offsets stay below 2^56, and anything at or above
// 2^53 is past the end of any real file, so plain numbers are exact where it matters.

export const TWO32 = 0x1_0000_0000;

/** Bit 63 of L1/L2 entries: the cluster's refcount is exactly one (writable in place). */
export const COPIED_HI = 0x8000_0000;
/** Bit 62 of L2 entries: compressed cluster descriptor. */
export const COMPRESSED_HI = 0x4000_0000;
/** Bit 0 of a standard L2 descriptor (v3): the cluster reads as zeros. */
export const ZERO_LO = 0x1;

/** Reads an unsigned 64-bit big-endian value as a number (exact below 2^53). */
export function getU64(dv: DataView, off: number): number {
  return dv.getUint32(off) * TWO32 + dv.getUint32(off + 4);
}

/** Writes a non-negative integer (< 2^53) as a 64-bit big-endian value. */
export function setU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, Math.floor(v / TWO32));
  dv.setUint32(off + 4, v >>> 0);
}

/** Bits 9..55 of an L1/L2/refcount-table entry: a cluster-aligned host offset. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ff_ffff) * TWO32 + ((lo & 0xffff_fe00) >>> 0);
}

/** Reserved bits of an L1 entry: 0-8 and 56-62. */
export function l1ReservedBits(hi: number, lo: number): boolean {
  return (lo & 0x1ff) !== 0 || (hi & 0x7f00_0000) !== 0;
}

/** Reserved bits of a standard (uncompressed) L2 entry: 1-8 and 56-61. */
export function l2ReservedBits(hi: number, lo: number): boolean {
  return (lo & 0x1fe) !== 0 || (hi & 0x3f00_0000) !== 0;
}

/** Reserved bits of a refcount table entry: 0-8 (QEMU writes none above 55 either). */
export function refTableReservedBits(hi: number, lo: number): boolean {
  return (lo & 0x1ff) !== 0 || (hi & 0xff00_0000) !== 0;
}

/** Where a compressed cluster's deflate stream lies in the file. */
export interface CompressedDescriptor {
  /** Byte offset of the compressed data (not aligned). */
  offset: number;
  /** Bytes from offset to the end of its last 512-byte sector (may include another cluster's head). */
  length: number;
}

/**
 * Compressed cluster descriptor (bits 0..61): x = 62 - (cluster_bits - 8) bits of host offset,
 * then the number of additional 512-byte sectors. Rare, so BigInt is fine here.
 */
export function decodeCompressed(hi: number, lo: number, clusterBits: number): CompressedDescriptor {
  const v = (BigInt(hi & 0x3fff_ffff) << 32n) | BigInt(lo >>> 0);
  const x = BigInt(62 - (clusterBits - 8));
  const offset = Number(v & ((1n << x) - 1n));
  const extraSectors = Number(v >> x);
  // The data runs from offset to the end of sector (offset/512 + extraSectors).
  const length = (extraSectors + 1) * 512 - (offset % 512);
  return { offset, length };
}

/** Compressed descriptor for (offset, length) as QEMU writes it (used by tests and diagnostics). */
export function encodeCompressed(offset: number, length: number, clusterBits: number): { hi: number; lo: number } {
  const x = BigInt(62 - (clusterBits - 8));
  const extraSectors = BigInt(Math.floor((offset + length - 1) / 512) - Math.floor(offset / 512));
  const v = (1n << 62n) | (extraSectors << x) | BigInt(offset);
  return { hi: Number(v >> 32n), lo: Number(v & 0xffff_ffffn) };
}
