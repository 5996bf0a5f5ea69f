// virtio-scsi constants and layouts (virtio 1.x §5.6) and the description a reactor builds the
// device from.
import type { OpenSpec } from '../../bdev/bdev.js';
import type { ScsiLunInfo } from '../../scsi/index.js';

export const ScsiFeature = { INOUT: 0, HOTPLUG: 1, CHANGE: 2, T10_PI: 3 } as const;

/** virtio-scsi response codes. */
export const VirtioScsiResponse = {
  OK: 0,
  OVERRUN: 1,
  ABORTED: 2,
  BAD_TARGET: 3,
  RESET: 4,
  BUSY: 5,
  TRANSPORT_FAILURE: 6,
  TARGET_FAILURE: 7,
  NEXUS_FAILURE: 8,
  FAILURE: 9,
  FUNCTION_SUCCEEDED: 10,
  FUNCTION_REJECTED: 11,
  INCORRECT_LUN: 12,
} as const;

export const ControlType = { TMF: 0, AN_QUERY: 1, AN_SUBSCRIBE: 2 } as const;
export const ScsiEvent = { NO_EVENT: 0, TRANSPORT_RESET: 1, ASYNC_NOTIFY: 2, PARAM_CHANGE: 3 } as const;
/** VIRTIO_SCSI_EVT_RESET_* reasons of a TRANSPORT_RESET event. */
export const EventReason = { HARD: 0, RESCAN: 1, REMOVED: 2 } as const;
export const EVENTS_MISSED = 0x80000000;

export const CDB_SIZE = 32;
export const SENSE_SIZE = 96;
/** lun[8] tag u64 task_attr prio crn cdb[32] */
export const CMD_REQ_BYTES = 19 + CDB_SIZE;
/** sense_len u32 residual u32 status_qualifier u16 status u8 response u8 sense[96] */
export const CMD_RESP_BYTES = 12 + SENSE_SIZE;
export const EVENT_BYTES = 16;
export const CONTROL_QUEUE = 0;
export const EVENT_QUEUE = 1;
export const MAX_SCSI_TARGETS = 8;

/** SCSI hot-plug, as control actions of the device (DevicePlane.control, ScsiDevice.control). */
export const ScsiControl = { ATTACH_TARGET: 'attachTarget', DETACH_TARGET: 'detachTarget' } as const;

export interface ScsiTargetSpec {
  target: number;
  lun: ScsiLunInfo;
  bdev: OpenSpec;
}

export interface ScsiDeviceSpec {
  kind: 'scsi';
  name: string;
  segMax: number;
  /** Whether the guest will receive hot-plug events (VIRTIO_SCSI_F_HOTPLUG offered). */
  hotplug: boolean;
  targets: ScsiTargetSpec[];
}
