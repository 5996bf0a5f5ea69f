// Image creation: a version 3 (compat 1.1) image with 16-bit refcounts, laid out as QEMU does:
// header cluster, refcount table, refcount block(s), L1 table; no data clusters yet.
import { Qcow2Error } from './errors.js';
import { setU64 } from './entries.js';
import { MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, MAX_L1_BYTES, encodeHeaderV3, l1EntriesFor } from './header.js';
import type { ImageFile } from './image-file.js';
import { writeRefcount } from './refcounts.js';

export interface CreateOptions {
  /** Virtual size in bytes (a multiple of 512). */
  size: number;
  /** Bytes per cluster: a power of two from 512 to 2 MiB (default 64 KiB). */
  clusterSize?: number;
  backingFile?: string;
  /** Format of the backing file ("qcow2", "raw"), stored in the backing format extension. */
  backingFormat?: string;
}

const REFCOUNT_ORDER = 4;

/** Writes a new empty image into `file` (which should be empty). */
export async function createImage(file: ImageFile, opts: CreateOptions): Promise<void> {
  const clusterSize = opts.clusterSize ?? 65536;
  const clusterBits = Math.log2(clusterSize);
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new Qcow2Error('invalid', `cluster size ${clusterSize} must be a power of two from 512 to 2 MiB`);
  }
  if (!Number.isSafeInteger(opts.size) || opts.size < 0 || opts.size % 512 !== 0) {
    throw new Qcow2Error('invalid', `virtual size ${opts.size} must be a non-negative multiple of 512`);
  }
  if (opts.backingFormat !== undefined && opts.backingFile === undefined) {
    throw new Qcow2Error('invalid', 'a backing format needs a backing file');
  }
  const l1Size = l1EntriesFor(opts.size, clusterBits);
  if (l1Size * 8 > MAX_L1_BYTES) throw new Qcow2Error('invalid', `virtual size ${opts.size} needs an L1 table larger than ${MAX_L1_BYTES} bytes`);
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / clusterSize));
  const perBlock = (clusterSize * 8) / 2 ** REFCOUNT_ORDER;
  // Fixed point: the refcount blocks must count header + table + blocks + L1.
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const total = 1 + tableClusters + blocks + l1Clusters;
    const b = Math.ceil(total / perBlock);
    const t = Math.ceil((b * 8) / clusterSize);
    if (b === blocks && t === tableClusters) break;
    blocks = b;
    tableClusters = t;
  }
  const tableAt = 1;
  const blocksAt = tableAt + tableClusters;
  const l1At = blocksAt + blocks;
  const total = l1At + l1Clusters;

  const header = encodeHeaderV3({
    clusterBits,
    virtualSize: opts.size,
    l1Size,
    l1TableOffset: l1At * clusterSize,
    refcountTableOffset: tableAt * clusterSize,
    refcountTableClusters: tableClusters,
    refcountOrder: REFCOUNT_ORDER,
    ...(opts.backingFile !== undefined ? { backingFile: opts.backingFile } : {}),
    ...(opts.backingFormat !== undefined ? { backingFormat: opts.backingFormat } : {}),
  });
  const table = new Uint8Array(tableClusters * clusterSize);
  const tv = new DataView(table.buffer);
  const blockData = new Uint8Array(blocks * clusterSize);
  for (let b = 0; b < blocks; b++) setU64(tv, b * 8, (blocksAt + b) * clusterSize);
  for (let c = 0; c < total; c++) {
    const b = Math.floor(c / perBlock);
    writeRefcount(new DataView(blockData.buffer, b * clusterSize, clusterSize), c % perBlock, REFCOUNT_ORDER, 1);
  }
  // Everything but the header first: a crash leaves a file that is not yet a qcow2 image.
  await file.write(table, tableAt * clusterSize);
  await file.write(blockData, blocksAt * clusterSize);
  await file.write(new Uint8Array(l1Clusters * clusterSize), l1At * clusterSize);
  await file.flush();
  await file.write(header, 0);
  await file.flush();
}
