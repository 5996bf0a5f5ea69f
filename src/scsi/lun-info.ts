// What a logical unit needs to know about its bdev, as plain structured-cloneable data: the control
// thread builds it from a Bdev and ships it to the reactor that opens the BdevChannel.
import type { Bdev } from '../bdev/bdev.js';
import { IoType } from '../bdev/io.js';

export interface ScsiLunInfo {
  /** bdev name: unit serial number (VPD 80h) and the NAA / T10 designators (VPD 83h). */
  name: string;
  /** bdev product name: INQUIRY PRODUCT IDENTIFICATION, e.g. "Malloc disk". */
  productName: string;
  blockSize: number;
  numBlocks: number;
  uuid: string;
  /** Writes are refused with DATA PROTECT / WRITE PROTECTED and MODE SENSE reports WP. */
  readonly: boolean;
  /** The bdev takes UNMAP: enables the UNMAP command, LBPME, and the provisioning VPD page. */
  supportsUnmap: boolean;
  /** The bdev takes WRITE_ZEROES: WRITE SAME of a zero block uses it. */
  supportsWriteZeroes: boolean;
  /** The bdev takes FLUSH: SYNCHRONIZE CACHE issues one (otherwise it succeeds at once). */
  supportsFlush: boolean;
  /** Report a volatile write cache (WCE in the caching mode page); SPDK's malloc has none. */
  writeCache: boolean;
}

export interface ScsiLunInfoOptions {
  readonly?: boolean;
  writeCache?: boolean;
}

/** Snapshot of a bdev's metadata for a SCSI logical unit. */
export function scsiLunInfoFromBdev(bdev: Bdev, opts: ScsiLunInfoOptions = {}): ScsiLunInfo {
  return {
    name: bdev.name,
    productName: bdev.productName,
    blockSize: bdev.blockSize,
    numBlocks: bdev.numBlocks,
    uuid: bdev.uuid,
    readonly: opts.readonly ?? false,
    supportsUnmap: bdev.supportsIo(IoType.UNMAP),
    supportsWriteZeroes: bdev.supportsIo(IoType.WRITE_ZEROES),
    supportsFlush: bdev.supportsIo(IoType.FLUSH),
    writeCache: opts.writeCache ?? false,
  };
}
