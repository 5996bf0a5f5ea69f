// The qcow2 header (docs/interop/qcow2.txt, "Header" and "Header extensions"): parsing with
// every check an image must pass before the engine trusts a single offset in it, and the few
// writes the engine makes to it (feature bits, a moved refcount table, a fresh header).
import { type ImageFile } from './image-file.js';
import { Qcow2Error, hex } from './errors.js';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
export const V2_HEADER_LENGTH = 72;
export const V3_HEADER_LENGTH = 104;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21; // QEMU's implementation limit (2 MiB)
/** QEMU refuses larger tables; so do we (keeps a whole table in memory cheap). */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
export const MAX_BACKING_NAME = 1023;

/** Byte offsets of the header fields the engine rewrites. */
export const HEADER_OFFSET = {
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  incompatibleFeatures: 72,
  autoclearFeatures: 88,
} as const;

export const INCOMPAT = {
  dirty: 1n << 0n,
  corrupt: 1n << 1n,
  externalData: 1n << 2n,
  compressionType: 1n << 3n,
  extendedL2: 1n << 4n,
} as const;
export const COMPAT = {
  lazyRefcounts: 1n << 0n,
} as const;
const KNOWN_INCOMPAT = INCOMPAT.dirty | INCOMPAT.corrupt | INCOMPAT.externalData | INCOMPAT.compressionType | INCOMPAT.extendedL2;

export const EXT = {
  end: 0x00000000,
  backingFormat: 0xe2792aca,
  featureNames: 0x6803f857,
  bitmaps: 0x23852875,
  fullDiskEncryption: 0x0537be77,
  externalDataFile: 0x44415441,
} as const;

export interface FeatureName {
  type: 'incompatible' | 'compatible' | 'autoclear';
  bit: number;
  name: string;
}

export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  virtualSize: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  backingFileOffset: number;
  backingFileSize: number;
  backingFile?: string;
  backingFormat?: string;
  featureNames: FeatureName[];
  hasBitmapsExtension: boolean;
  /**
   * Incompatible bit 0: the image was not closed cleanly. With lazy refcounts (QEMU) its refcounts
   * may be too low; without (vhostd sets it while metadata waits in its cache) clusters may leak.
   */
  dirty: boolean;
  /** Compatible bit 0: refcount updates may be deferred (QEMU's lazy_refcounts=on). */
  lazyRefcounts: boolean;
  /** Incompatible bit 1: QEMU found corruption; must not be written. */
  corrupt: boolean;
}

/** L2 entries per table (8 bytes each; extended L2 is not supported). */
export function l2Entries(clusterBits: number): number {
  return 2 ** (clusterBits - 3);
}

/** L1 entries needed to map virtualSize bytes. */
export function l1EntriesFor(virtualSize: number, clusterBits: number): number {
  const perL1 = 2 ** (clusterBits + clusterBits - 3);
  return Math.ceil(virtualSize / perL1);
}

function u64(dv: DataView, off: number): bigint {
  return dv.getBigUint64(off);
}

/** A u64 field that must be an exact offset/size: refuses values past 2^53. */
function offset64(dv: DataView, off: number, what: string, name: string): number {
  const v = u64(dv, off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Qcow2Error('corrupt', `${name}: ${what} 0x${v.toString(16)} is out of range`);
  return Number(v);
}

function featureLabel(h: { featureNames: FeatureName[] }, type: FeatureName['type'], bit: number): string {
  const known = h.featureNames.find((f) => f.type === type && f.bit === bit);
  return known ? `bit ${bit} ("${known.name}")` : `bit ${bit}`;
}

/** Reads and validates the header of `file`. Throws Qcow2Error for anything the engine cannot trust. */
export async function readHeader(file: ImageFile, name: string): Promise<Qcow2Header> {
  const fileSize = file.size();
  if (fileSize < V2_HEADER_LENGTH) {
    throw new Qcow2Error('corrupt', `${name}: file is too small to be a qcow2 image (${fileSize} bytes)`);
  }
  const head = new Uint8Array(V3_HEADER_LENGTH);
  await file.read(head, 0);
  const dv = new DataView(head.buffer);
  const bits = dv.getUint32(20);
  if (dv.getUint32(0) !== QCOW2_MAGIC) throw new Qcow2Error('corrupt', `${name}: not a qcow2 image (bad magic)`);
  if (bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    throw new Qcow2Error('unsupported', `${name}: cluster_bits ${bits} is outside the supported range ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS} (512 B..2 MiB clusters)`);
  }
  // Header and extensions live in the first cluster.
  const cluster0 = new Uint8Array(2 ** bits);
  await file.read(cluster0, 0);
  return parseHeader(cluster0, fileSize, name);
}

/** Validates a header held in `cluster0` (the first cluster, or at least its header part). */
export function parseHeader(cluster0: Uint8Array, fileSize: number, name: string): Qcow2Header {
  const dv = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  const bad = (msg: string) => new Qcow2Error('corrupt', `${name}: ${msg}`);
  const unsupported = (msg: string) => new Qcow2Error('unsupported', `${name}: ${msg}`);
  if (cluster0.byteLength < V2_HEADER_LENGTH || fileSize < V2_HEADER_LENGTH) {
    throw bad(`file is too small to be a qcow2 image (${fileSize} bytes)`);
  }
  if (dv.getUint32(0) !== QCOW2_MAGIC) throw bad('not a qcow2 image (bad magic)');
  const version = dv.getUint32(4);
  if (version !== 2 && version !== 3) throw unsupported(`qcow2 version ${version} is not supported (only 2 and 3)`);
  const clusterBits = dv.getUint32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw unsupported(`cluster_bits ${clusterBits} is outside the supported range ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  }
  const clusterSize = 2 ** clusterBits;
  if (cluster0.byteLength < Math.min(clusterSize, V3_HEADER_LENGTH)) throw bad('header is truncated');

  let headerLength = V2_HEADER_LENGTH;
  let refcountOrder = 4;
  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  if (version === 3) {
    if (fileSize < V3_HEADER_LENGTH) throw bad(`file is too small for a version 3 header (${fileSize} bytes)`);
    headerLength = dv.getUint32(100);
    if (headerLength < V3_HEADER_LENGTH || headerLength % 8 !== 0 || headerLength > clusterSize || headerLength > cluster0.byteLength) {
      throw bad(`header_length ${headerLength} is invalid (a multiple of 8, at least ${V3_HEADER_LENGTH}, within the first cluster)`);
    }
    incompatibleFeatures = u64(dv, 72);
    compatibleFeatures = u64(dv, 80);
    autoclearFeatures = u64(dv, 88);
    refcountOrder = dv.getUint32(96);
    if (refcountOrder > 6) throw bad(`refcount_order ${refcountOrder} is invalid (at most 6, 64-bit refcounts)`);
  }

  const cryptMethod = dv.getUint32(32);
  if (cryptMethod !== 0) {
    throw unsupported(`encrypted images are not supported (crypt_method ${cryptMethod} = ${cryptMethod === 1 ? 'AES' : cryptMethod === 2 ? 'LUKS' : 'unknown'})`);
  }

  // Backing file name: inside the first cluster, after the extensions.
  const backingFileOffset = offset64(dv, 8, 'backing_file_offset', name);
  const backingFileSize = dv.getUint32(16);
  let backingFile: string | undefined;
  if (backingFileOffset !== 0) {
    if (backingFileSize > MAX_BACKING_NAME) throw bad(`backing file name is too long (${backingFileSize} bytes, at most ${MAX_BACKING_NAME})`);
    if (backingFileOffset < headerLength || backingFileOffset + backingFileSize > clusterSize || backingFileOffset + backingFileSize > cluster0.byteLength) {
      throw bad(`backing file name at ${hex(backingFileOffset)} (${backingFileSize} bytes) is not inside the header cluster`);
    }
    backingFile = new TextDecoder().decode(cluster0.subarray(backingFileOffset, backingFileOffset + backingFileSize));
  }

  // Header extensions: from the end of the header up to the backing file name (or the cluster end).
  const extEnd = backingFileOffset !== 0 ? backingFileOffset : Math.min(clusterSize, cluster0.byteLength);
  const featureNames: FeatureName[] = [];
  let backingFormat: string | undefined;
  let hasBitmapsExtension = false;
  let compressionType = 0;
  if (version === 3 && headerLength > 104) compressionType = cluster0[104]!;
  for (let off = headerLength; off + 8 <= extEnd; ) {
    const type = dv.getUint32(off);
    const len = dv.getUint32(off + 4);
    if (type === EXT.end) break;
    const data = off + 8;
    if (data + len > extEnd) throw bad(`header extension ${hex(type)} at ${hex(off)} (${len} bytes) extends past the header area (ends at ${hex(extEnd)})`);
    if (type === EXT.backingFormat) {
      backingFormat = new TextDecoder().decode(cluster0.subarray(data, data + len));
    } else if (type === EXT.featureNames) {
      for (let e = data; e + 48 <= data + len; e += 48) {
        const t = cluster0[e]!;
        const raw = cluster0.subarray(e + 2, e + 48);
        const nul = raw.indexOf(0);
        featureNames.push({
          type: t === 0 ? 'incompatible' : t === 1 ? 'compatible' : 'autoclear',
          bit: cluster0[e + 1]!,
          name: new TextDecoder().decode(nul < 0 ? raw : raw.subarray(0, nul)),
        });
      }
    } else if (type === EXT.bitmaps) {
      hasBitmapsExtension = true;
    }
    // Other types (encryption header, data file name, unknown) are ignored: their features are
    // refused through incompatible bits / crypt_method, and unknown extensions are optional.
    off = data + Math.ceil(len / 8) * 8;
  }

  const h = { featureNames };
  if (incompatibleFeatures & INCOMPAT.externalData) throw unsupported('images with an external data file are not supported');
  if (incompatibleFeatures & INCOMPAT.compressionType) {
    throw unsupported(`compression type ${compressionType === 1 ? 'zstd' : compressionType} is not supported (only zlib)`);
  }
  if (compressionType !== 0) throw bad(`compression_type ${compressionType} is set without the compression type feature bit`);
  if (incompatibleFeatures & INCOMPAT.extendedL2) {
    throw unsupported('images with extended L2 entries (subclusters, -o extended_l2=on) are not supported');
  }
  const unknown = incompatibleFeatures & ~KNOWN_INCOMPAT;
  if (unknown !== 0n) {
    for (let b = 0; b < 64; b++) {
      if (unknown & (1n << BigInt(b))) throw unsupported(`unknown incompatible feature ${featureLabel(h, 'incompatible', b)} is set`);
    }
  }

  const virtualSize = offset64(dv, 24, 'virtual size', name);
  const l1Size = dv.getUint32(36);
  const l1TableOffset = offset64(dv, 40, 'l1_table_offset', name);
  const refcountTableOffset = offset64(dv, 48, 'refcount_table_offset', name);
  const refcountTableClusters = dv.getUint32(56);
  const nbSnapshots = dv.getUint32(60);
  const snapshotsOffset = offset64(dv, 64, 'snapshots_offset', name);

  const table = (what: string, off: number, bytes: number) => {
    if (off % clusterSize !== 0) throw bad(`${what} offset ${hex(off)} is not aligned to a cluster (${clusterSize} bytes)`);
    if (off < clusterSize) throw bad(`${what} at ${hex(off)} overlaps the image header`);
    if (off + bytes > fileSize) throw bad(`${what} at ${hex(off)} (${bytes} bytes) extends past the end of the file (size ${fileSize})`);
  };
  const l1Needed = l1EntriesFor(virtualSize, clusterBits);
  if (l1Size < l1Needed) throw bad(`L1 table has ${l1Size} entries, too few for the virtual size ${virtualSize} (needs ${l1Needed})`);
  if (l1Size * 8 > MAX_L1_BYTES) throw unsupported(`L1 table of ${l1Size} entries is larger than ${MAX_L1_BYTES} bytes`);
  if (l1Size > 0) table('L1 table', l1TableOffset, l1Size * 8);
  if (refcountTableClusters === 0) throw bad('refcount table is empty (refcount_table_clusters 0)');
  if (refcountTableClusters * clusterSize > MAX_REFTABLE_BYTES) {
    throw unsupported(`refcount table of ${refcountTableClusters} clusters is larger than ${MAX_REFTABLE_BYTES} bytes`);
  }
  table('refcount table', refcountTableOffset, refcountTableClusters * clusterSize);
  const l1End = l1TableOffset + Math.ceil((l1Size * 8) / clusterSize) * clusterSize;
  const rtEnd = refcountTableOffset + refcountTableClusters * clusterSize;
  if (l1Size > 0 && l1TableOffset < rtEnd && refcountTableOffset < l1End) {
    throw bad(`L1 table at ${hex(l1TableOffset)} overlaps the refcount table at ${hex(refcountTableOffset)}`);
  }
  if (nbSnapshots > 0) table('snapshot table', snapshotsOffset, 40 * nbSnapshots);

  return {
    version,
    clusterBits,
    clusterSize,
    virtualSize,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    backingFileOffset,
    backingFileSize,
    ...(backingFile !== undefined ? { backingFile } : {}),
    ...(backingFormat !== undefined ? { backingFormat } : {}),
    featureNames,
    hasBitmapsExtension,
    dirty: (incompatibleFeatures & INCOMPAT.dirty) !== 0n,
    lazyRefcounts: (compatibleFeatures & COMPAT.lazyRefcounts) !== 0n,
    corrupt: (incompatibleFeatures & INCOMPAT.corrupt) !== 0n,
  };
}

/**
 * Why the image cannot be opened for writing, or undefined. A dirty image without lazy refcounts
 * is writable: its refcounts were written before the references (only leaks are possible).
 */
export function writeRefusal(h: Qcow2Header, name: string): { kind: 'corrupt' | 'unsupported'; message: string } | undefined {
  if (h.corrupt) return { kind: 'corrupt', message: `${name}: the image is marked corrupt (incompatible feature bit 1); it can only be opened read-only (repair it with qemu-img check -r all)` };
  if (h.dirty && h.lazyRefcounts) {
    return { kind: 'unsupported', message: `${name}: the image is marked dirty with lazy refcounts (its refcounts may be stale after a crash); repair it with qemu-img check -r all before writing` };
  }
  if (h.nbSnapshots > 0) return { kind: 'unsupported', message: `${name}: the image has ${h.nbSnapshots} internal snapshot(s); writing to images with internal snapshots is not supported` };
  return undefined;
}

/** A big-endian u64 field as bytes, for rewriting one header field in place. */
export function u64Bytes(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v));
  return b;
}

export interface NewHeaderFields {
  clusterBits: number;
  virtualSize: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  /** Refcount width = 2^refcountOrder bits. */
  refcountOrder: number;
  backingFile?: string;
  backingFormat?: string;
}

/**
 * A complete version 3 header cluster: header (104 bytes), the backing format extension when
 * given, a feature name table (so older tools can name our bits), the end marker and the backing
 * file name after the extensions.
 */
export function encodeHeaderV3(f: NewHeaderFields): Uint8Array {
  const clusterSize = 2 ** f.clusterBits;
  const buf = new Uint8Array(clusterSize);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, QCOW2_MAGIC);
  dv.setUint32(4, 3);
  dv.setUint32(20, f.clusterBits);
  dv.setBigUint64(24, BigInt(f.virtualSize));
  dv.setUint32(32, 0);
  dv.setUint32(36, f.l1Size);
  dv.setBigUint64(40, BigInt(f.l1TableOffset));
  dv.setBigUint64(48, BigInt(f.refcountTableOffset));
  dv.setUint32(56, f.refcountTableClusters);
  dv.setUint32(60, 0);
  dv.setBigUint64(64, 0n);
  // incompatible / compatible / autoclear features: none.
  dv.setUint32(96, f.refcountOrder);
  dv.setUint32(100, V3_HEADER_LENGTH);
  let off = V3_HEADER_LENGTH;
  const enc = new TextEncoder();
  const ext = (type: number, data: Uint8Array) => {
    dv.setUint32(off, type);
    dv.setUint32(off + 4, data.byteLength);
    buf.set(data, off + 8);
    off += 8 + Math.ceil(data.byteLength / 8) * 8;
  };
  if (f.backingFormat !== undefined) ext(EXT.backingFormat, enc.encode(f.backingFormat));
  const features: [number, number, string][] = [
    [0, 0, 'dirty bit'],
    [0, 1, 'corrupt bit'],
    [0, 2, 'external data file'],
    [0, 3, 'compression type'],
    [0, 4, 'extended L2 entries'],
    [1, 0, 'lazy refcounts'],
    [2, 0, 'bitmaps'],
    [2, 1, 'raw external data'],
  ];
  const table = new Uint8Array(features.length * 48);
  features.forEach(([type, bit, n], i) => {
    table[i * 48] = type;
    table[i * 48 + 1] = bit;
    table.set(enc.encode(n), i * 48 + 2);
  });
  // The table is optional: left out when it would not leave room for the backing file name
  // (512-byte clusters).
  const nameLength = f.backingFile === undefined ? 0 : enc.encode(f.backingFile).byteLength;
  if (off + 8 + table.byteLength + 8 + nameLength <= clusterSize) ext(EXT.featureNames, table);
  off += 8; // end-of-extensions marker (type 0, length 0), already zero
  if (f.backingFile !== undefined) {
    const nameBytes = enc.encode(f.backingFile);
    if (nameBytes.byteLength > MAX_BACKING_NAME) throw new Qcow2Error('invalid', `backing file name is too long (${nameBytes.byteLength} bytes, at most ${MAX_BACKING_NAME})`);
    if (off + nameBytes.byteLength > clusterSize) throw new Qcow2Error('invalid', 'backing file name does not fit into the header cluster');
    dv.setBigUint64(8, BigInt(off));
    dv.setUint32(16, nameBytes.byteLength);
    buf.set(nameBytes, off);
  }
  return buf;
}
