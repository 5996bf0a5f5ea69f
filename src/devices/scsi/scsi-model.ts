// virtio-scsi features and config space for a controller, and its current targets (the snapshot
// a new session starts from; hot-plug changes reach running sessions by message).
import type { DeviceModel } from '../../vhost-user/device-model.js';
import { VirtioFeature, bit } from '../../virtio/features.js';
import { CDB_SIZE, MAX_SCSI_TARGETS, SENSE_SIZE, ScsiFeature, type ScsiDeviceSpec, type ScsiTargetSpec } from './scsi-spec.js';

export const SCSI_REQUEST_QUEUES = 64;
const SEG_MAX = 126;
const MAX_SECTORS = 0x2000;
const CMD_PER_LUN = 128;

export class ScsiModel implements DeviceModel {
  readonly maxQueues = 2 + SCSI_REQUEST_QUEUES;
  readonly protocolFeatures = 0n;
  readonly chainCapacity = SEG_MAX + 8;
  readonly features =
    bit(VirtioFeature.VERSION_1) |
    bit(VirtioFeature.RING_INDIRECT_DESC) |
    bit(VirtioFeature.RING_EVENT_IDX) |
    bit(VirtioFeature.RING_PACKED) |
    bit(ScsiFeature.INOUT) |
    bit(ScsiFeature.HOTPLUG) |
    bit(ScsiFeature.CHANGE);
  readonly targets = new Map<number, ScsiTargetSpec>();

  constructor(readonly name: string) {}

  spec(): ScsiDeviceSpec {
    const targets = [...this.targets.values()];
    // A LUN whose bdev wants one reactor (a writable qcow2 image) keeps the session's queues on it
    // (hot-attaching one to a running session spread over reactors is refused: vhost-service.ts).
    const affinity = targets.find((t) => t.bdev.affinity !== undefined)?.bdev.affinity;
    return { kind: 'scsi', name: this.name, segMax: SEG_MAX, hotplug: true, targets, ...(affinity !== undefined ? { affinity } : {}) };
  }

  readConfig(): Uint8Array {
    const out = new Uint8Array(256);
    const v = new DataView(out.buffer);
    v.setUint32(0, SCSI_REQUEST_QUEUES, true);
    v.setUint32(4, SEG_MAX, true);
    v.setUint32(8, MAX_SECTORS, true);
    v.setUint32(12, CMD_PER_LUN, true);
    v.setUint32(16, 16, true); // event_info_size
    v.setUint32(20, SENSE_SIZE, true);
    v.setUint32(24, CDB_SIZE, true);
    v.setUint16(28, 0, true); // max_channel
    v.setUint16(30, MAX_SCSI_TARGETS - 1, true);
    v.setUint32(32, 0, true); // max_lun: LUN 0 only, as SPDK
    return out;
  }
}
