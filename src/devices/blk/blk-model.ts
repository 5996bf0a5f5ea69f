// virtio-blk features and config space for a bdev (virtio 1.x §5.2.4), as the vhost-user
// session offers them to QEMU.
import type { Bdev } from '../../bdev/bdev.js';
import { IoType } from '../../bdev/io.js';
import type { OpenSpec } from '../../bdev/bdev.js';
import type { DeviceModel } from '../../vhost-user/device-model.js';
import { ProtocolFeature } from '../../vhost-user/protocol.js';
import { VirtioFeature, bit } from '../../virtio/features.js';
import { BlkFeature, type BlkDeviceSpec, SECTOR_SIZE } from './blk-spec.js';

export const BLK_MAX_QUEUES = 64;
/** Data segments per request (SPDK advertises about the same). */
export const BLK_SEG_MAX = 126;
export const BLK_SIZE_MAX = 1 << 20;
const MAX_DISCARD_SECTORS = 0x400000;
const CONFIG_SIZE = 60;

export interface BlkOptions {
  readonly: boolean;
  /** Offer VIRTIO_F_RING_PACKED (SPDK's packed_ring). */
  packedRing: boolean;
}

export class BlkModel implements DeviceModel {
  readonly maxQueues = BLK_MAX_QUEUES;
  /** QEMU's vhost-user-blk reads its config space from the back-end. */
  readonly protocolFeatures = bit(ProtocolFeature.CONFIG);
  readonly chainCapacity = BLK_SEG_MAX + 8;
  readonly features: bigint;
  private readonly blkSpec: BlkDeviceSpec;

  constructor(
    readonly name: string,
    private readonly bdev: Bdev,
    /** What the reactors open the bdev from (the registry's openSpec). */
    bdevSpec: OpenSpec,
    readonly opts: BlkOptions,
  ) {
    const unmap = bdev.supportsIo(IoType.UNMAP) && !opts.readonly;
    const writeZeroes = bdev.supportsIo(IoType.WRITE_ZEROES) && !opts.readonly;
    let f =
      bit(VirtioFeature.VERSION_1) |
      bit(VirtioFeature.RING_INDIRECT_DESC) |
      bit(VirtioFeature.RING_EVENT_IDX) |
      bit(BlkFeature.SIZE_MAX) |
      bit(BlkFeature.SEG_MAX) |
      bit(BlkFeature.BLK_SIZE) |
      bit(BlkFeature.TOPOLOGY) |
      bit(BlkFeature.MQ) |
      bit(BlkFeature.FLUSH);
    if (opts.readonly) f |= bit(BlkFeature.RO);
    if (opts.packedRing) f |= bit(VirtioFeature.RING_PACKED);
    if (unmap) f |= bit(BlkFeature.DISCARD);
    if (writeZeroes) f |= bit(BlkFeature.WRITE_ZEROES);
    this.features = f;
    this.blkSpec = {
      kind: 'blk',
      name,
      bdev: bdevSpec,
      readonly: opts.readonly,
      blockSize: bdev.blockSize,
      capacityBytes: bdev.blockSize * bdev.numBlocks,
      serial: bdev.name,
      segMax: BLK_SEG_MAX,
      maxDiscardSectors: MAX_DISCARD_SECTORS,
      maxWriteZeroesSectors: MAX_DISCARD_SECTORS,
      unmap,
      writeZeroes,
      ...(bdevSpec.affinity !== undefined ? { affinity: bdevSpec.affinity } : {}),
    };
  }

  spec(): BlkDeviceSpec {
    return this.blkSpec;
  }

  readConfig(): Uint8Array {
    const out = new Uint8Array(256);
    const v = new DataView(out.buffer);
    const s = this.blkSpec;
    v.setBigUint64(0, BigInt(Math.floor(s.capacityBytes / SECTOR_SIZE)), true);
    v.setUint32(8, BLK_SIZE_MAX, true);
    v.setUint32(12, BLK_SEG_MAX, true);
    v.setUint32(20, s.blockSize, true);
    // topology: physical_block_exp 0, alignment 0, min_io_size and opt_io_size in logical blocks
    v.setUint16(26, 1, true);
    v.setUint32(28, 0, true);
    v.setUint16(34, BLK_MAX_QUEUES, true);
    const granularity = s.blockSize / SECTOR_SIZE;
    v.setUint32(36, s.maxDiscardSectors, true);
    v.setUint32(40, 1, true);
    v.setUint32(44, granularity, true);
    v.setUint32(48, s.maxWriteZeroesSectors, true);
    v.setUint32(52, 1, true);
    out[56] = s.unmap ? 1 : 0;
    return out.subarray(0, Math.max(CONFIG_SIZE, 256));
  }
}
