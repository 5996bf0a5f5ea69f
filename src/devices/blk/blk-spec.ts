// virtio-blk constants and the device description a reactor needs (virtio 1.x §5.2).
import type { OpenSpec } from '../../bdev/bdev.js';

export const BlkFeature = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
} as const;

export const BlkReqType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  GET_LIFETIME: 10,
  DISCARD: 11,
  WRITE_ZEROES: 13,
  SECURE_ERASE: 14,
} as const;

export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

export const SECTOR_SIZE = 512;
export const BLK_ID_BYTES = 20;
export const WRITE_ZEROES_FLAG_UNMAP = 1;

/** Everything a reactor needs to serve virtio-blk requests for one controller. */
export interface BlkDeviceSpec {
  kind: 'blk';
  name: string;
  bdev: OpenSpec;
  readonly: boolean;
  blockSize: number;
  capacityBytes: number;
  serial: string;
  segMax: number;
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
  /** Whether the bdev takes UNMAP (DISCARD and WRITE_ZEROES with the unmap flag). */
  unmap: boolean;
  writeZeroes: boolean;
}
