// SCSI target layer: logical units over bdevs, the targets of a virtio-scsi controller, tasks and
// task management. Independent of virtio; the virtio-scsi device fills ScsiTasks from descriptor
// chains and submits them to a ScsiTargetSet.
export { Asc, DISK_REVISION, DISK_VENDOR, MAX_TARGETS, MAX_TRANSFER_BYTES, MAX_UNMAP_BLOCK_DESCRIPTORS, MAX_UNMAP_LBA_COUNT, ModePage, Opcode, ScsiStatus, SenseKey, ServiceActionIn16, VpdPage } from './constants.js';
export { be16, be24, be32, be64, cdbLengthForOpcode } from './cdb.js';
export { encodeLunAddress, lunAddressLun, lunAddressTarget } from './lun-address.js';
export { type ScsiLunInfo, type ScsiLunInfoOptions, scsiLunInfoFromBdev } from './lun-info.js';
export { ScsiLun, type ScsiLunOptions } from './lun.js';
export { decodeFixedSense, type DecodedSense, FIXED_SENSE_LENGTH, writeFixedSense } from './sense.js';
export { ScsiTargetSet, TargetState } from './target-set.js';
export { DataDirection, DEFAULT_CDB_SIZE, DEFAULT_MAX_SEGMENTS, ScsiTask, type ScsiTaskOptions, SENSE_BUFFER_SIZE, TaskResponse } from './task.js';
export { TmfFunction, TmfResponse } from './tmf.js';
export { naaIeeeExtended } from './vpd.js';
