// SCSI target layer: logical units over bdevs, the targets of a virtio-scsi controller, tasks and
// task management. Independent of virtio; the virtio-scsi device fills ScsiTasks from descriptor
// chains and submits them to a ScsiTargetSet.
//
// Usage (one ScsiTargetSet per session / reactor):
//   control thread:  const info = scsiLunInfoFromBdev(bdev)            // plain, structured-cloneable
//   reactor:         const set = new ScsiTargetSet();
//                    set.attach(targetNum, new ScsiLun(info, openChannel(spec)));  // LUN owns the channel
//   per ring slot:   const task = new ScsiTask({ maxSegments, onComplete: (t) => { ... } });
//   per request:     task.reset(); task.cdb.set(cdbBytes); task.cdbLength = cdbSize;
//                    task.tagLo/tagHi = request id; task.dataOut.push(buf, off, len) (device-readable
//                    descriptors) / task.dataIn.push(...) (device-writable);
//                    set.submit(lunField, lunFieldOffset, task);  // onComplete once, maybe synchronously
//   in onComplete:   task.response (OK | BAD_TARGET | ABORTED), task.status, task.sense[0..senseLength),
//                    task.residual (bytes of the command's buffer not transferred)
//   control queue:   await set.taskManagement(TmfFunction.X (= virtio TMF subtype), lunField, off, tagLo, tagHi)
//                    → TmfResponse (FUNCTION_COMPLETE / SUCCEEDED / REJECTED / INCORRECT_LUN / BAD_TARGET)
//   hot-detach:      await set.detach(targetNum)  (new tasks: LOGICAL UNIT NOT SUPPORTED; resolves after
//                    in-flight tasks completed and the channel closed); set.release(targetNum) later makes
//                    the address answer BAD_TARGET.
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
