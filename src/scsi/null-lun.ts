// Commands addressed to a logical unit that is not there (a LUN other than 0 on a present target,
// or a LUN being hot-removed): SPDK's spdk_scsi_task_process_null_lun, plus REPORT LUNS and
// REQUEST SENSE, which SAM-5/SPC-4 require to work for an incorrect LUN.
import { be16, be32 } from './cdb.js';
import { Asc, Opcode, SenseKey } from './constants.js';
import { buildNullLunInquiry } from './inquiry.js';
import { buildReportLuns } from './report-luns.js';
import { scratch } from './scratch.js';
import { FIXED_SENSE_LENGTH, writeFixedSense } from './sense.js';
import { DataDirection, type ScsiTask, TaskResponse } from './task.js';

/**
 * Sets the task's result for a command to an absent LUN of a target whose present LUNs are
 * `presentLuns`. Does not call onComplete.
 */
export function executeNullLun(task: ScsiTask, presentLuns: readonly number[]): void {
  task.clearResult();
  task.response = TaskResponse.OK;
  const cdb = task.cdb;
  const len = task.cdbLength;
  const op = len > 0 ? cdb[0] : -1;
  if (op === Opcode.INQUIRY && len >= 6) {
    // qualifier 011b / type 1Fh whatever page was asked for, as SPDK answers
    const n = buildNullLunInquiry(scratch);
    task.returnData(scratch, n, be16(cdb, 3));
    return;
  }
  if (op === Opcode.REPORT_LUNS && len >= 12) {
    const alloc = be32(cdb, 6);
    task.direction = DataDirection.FROM_DEV;
    if (alloc < 16) return task.setCheckCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    const n = buildReportLuns(cdb[2], presentLuns, scratch);
    if (n < 0) return task.setCheckCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    task.returnData(scratch, n, alloc);
    return;
  }
  if (op === Opcode.REQUEST_SENSE && len >= 6) {
    task.direction = DataDirection.FROM_DEV;
    if (cdb[1] & 0x01) return task.setCheckCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    writeFixedSense(scratch, 0, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, 0);
    task.returnData(scratch, FIXED_SENSE_LENGTH, cdb[4]);
    return;
  }
  task.setCheckCondition(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED);
}
