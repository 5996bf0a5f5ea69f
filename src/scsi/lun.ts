// A bdev-backed SCSI logical unit: decodes CDBs (SPC/SBC subset SPDK's lib/scsi implements),
// turns them into BdevIo requests on its BdevChannel, tracks the tasks in flight for task
// management and hot removal, and completes every task exactly once.
//
// Re-entrancy: channels may complete an I/O synchronously inside submit(). The completion then
// only records the status; the submitting loop (pump) carries on, so multi-step commands (UNMAP
// descriptors, WRITE SAME chunks) never recurse, and a task's onComplete never runs inside
// channel.submit(). Once onComplete has been called the LUN does not touch the task again.
//
// The channel is a bdev layer channel (src/bdev/layer-channel.ts): I/O that QoS holds or that a
// full backend queue refused waits there and completes later; the LUN only ever sees success or
// failure. An abort takes a task's I/O back from the layer if it has not reached the backend.
import type { BdevChannel } from '../bdev/bdev.js';
import { IoStatus, IoType, IoVecs } from '../bdev/io.js';
import { be16, be24, be32, be64, cdbLengthForOpcode, controlByteHasNaca } from './cdb.js';
import { Asc, MAX_TRANSFER_BYTES, Opcode, SenseKey, ServiceActionIn16 } from './constants.js';
import { buildStandardInquiry } from './inquiry.js';
import { prefixInto, prefixIsZero, repeatInto, segmentsSpanned } from './iov.js';
import type { ScsiLunInfo } from './lun-info.js';
import { buildModeSense, ModeSelectResult, ModeSenseError, validateModeSelect } from './mode-pages.js';
import { executeNullLun } from './null-lun.js';
import { buildReadCapacity10, buildReadCapacity16 } from './read-capacity.js';
import { buildReportLuns } from './report-luns.js';
import { scratch } from './scratch.js';
import { FIXED_SENSE_LENGTH, writeFixedSense } from './sense.js';
import { DataDirection, type ScsiTask, type TaskExecutor, TaskResponse } from './task.js';
import { TmfResponse } from './tmf.js';
import { checkUnmapParameters, UnmapError, unmapDescriptorBlocks, unmapDescriptorLba } from './unmap.js';
import { buildVpdPage, makeVpdIdentity, type VpdIdentity, type VpdIdentityParams } from './vpd.js';

export interface ScsiLunOptions {
  /** LUN number within the target (SPDK's vhost-scsi: always 0). */
  id?: number;
  /** SCSI target device name for VPD 83h; ScsiTargetSet.attach sets "Target N" unless given. */
  deviceName?: string;
  /** SPDK's dev->id (logical unit group designator); attach sets the target number unless given. */
  deviceId?: number;
  /** Target port name (SPDK's vhost-scsi: "vhost"). */
  portName?: string;
  /** Relative target port identifier (VPD 83h/88h); default 1. */
  relativePortId?: number;
  /**
   * Sense for a failed bdev I/O. 'aborted-command' (default) is what SPDK reports for a generic
   * bdev failure (spdk_bdev_io_get_scsi_status): ABORTED COMMAND, no additional sense.
   * 'medium-error' reports MEDIUM ERROR / UNRECOVERED READ ERROR (reads) or WRITE ERROR (writes).
   */
  ioErrorSense?: 'aborted-command' | 'medium-error';
}

/** Multi-step operation kinds (task.opKind). */
const OpKind = {
  NONE: 0,
  /** One BdevIo prepared up front (task.io). */
  SINGLE: 1,
  /** One UNMAP per UNMAP block descriptor. */
  UNMAP_DESCRIPTORS: 2,
  /** WRITE SAME as writes of the block repeated (task.aux holds repeated views of it). */
  WRITE_REPEAT: 3,
} as const;

interface Waiter {
  /** Wait for this task's execution `seq` to finish (null: wait by sequence number). */
  task: ScsiTask | null;
  seq: number;
  resolve: () => void;
}

const SUPPORTED = new Uint8Array(256);
for (const op of Object.values(Opcode)) SUPPORTED[op] = 1;

const NO_LUNS: readonly number[] = Object.freeze([]);

export class ScsiLun implements TaskExecutor {
  readonly id: number;
  private readonly lunList: readonly number[];
  private identityParams: VpdIdentityParams;
  private readonly identityFixed: { deviceName: boolean; deviceId: boolean };
  private identity: VpdIdentity | null = null;
  private readonly maxXferBlocks: number;
  private readonly mediumErrors: boolean;

  private removed = false;
  private closed = false;
  private head: ScsiTask | null = null;
  private tail: ScsiTask | null = null;
  private count = 0;
  private seqCounter = 0;
  private waiters: Waiter[] = [];
  private zeroIov: IoVecs | null = null;

  constructor(
    readonly info: ScsiLunInfo,
    readonly channel: BdevChannel,
    opts: ScsiLunOptions = {},
  ) {
    this.id = opts.id ?? 0;
    this.lunList = Object.freeze([this.id]);
    this.identityFixed = { deviceName: opts.deviceName !== undefined, deviceId: opts.deviceId !== undefined };
    this.identityParams = {
      deviceName: opts.deviceName ?? 'Target 0',
      deviceId: opts.deviceId ?? 0,
      portName: opts.portName ?? 'vhost',
      relativePortId: opts.relativePortId ?? 1,
    };
    this.maxXferBlocks = Math.max(1, Math.floor(MAX_TRANSFER_BYTES / info.blockSize));
    this.mediumErrors = opts.ioErrorSense === 'medium-error';
  }

  /** Set once remove() was called: new tasks get LOGICAL UNIT NOT SUPPORTED. */
  get removing(): boolean {
    return this.removed;
  }

  /** Tasks executing (submitted, not yet completed). */
  get inFlight(): number {
    return this.count;
  }

  /** Called by ScsiTargetSet.attach: "Target N" / N unless the options fixed them. */
  setTargetIdentity(targetNum: number): void {
    const p = this.identityParams;
    this.identityParams = {
      ...p,
      deviceName: this.identityFixed.deviceName ? p.deviceName : `Target ${targetNum}`,
      deviceId: this.identityFixed.deviceId ? p.deviceId : targetNum,
    };
    this.identity = null;
  }

  private vpdIdentity(): VpdIdentity {
    if (this.identity === null) this.identity = makeVpdIdentity(this.info, this.identityParams);
    return this.identity;
  }

  // ---------------------------------------------------------------- execution

  /**
   * Executes the task; task.onComplete is called exactly once, possibly before this returns.
   * Results: task.status / sense / senseLength / dataTransferred / residual.
   */
  execute(task: ScsiTask): void {
    if (task.inFlight) throw new Error('ScsiTask is already executing');
    task.clearResult();
    if (this.removed || this.closed) {
      executeNullLun(task, NO_LUNS);
      task.onComplete(task);
      return;
    }
    task.executor = this;
    task.inFlight = true;
    task.seq = ++this.seqCounter;
    task.abortRequested = false;
    task.opKind = OpKind.NONE;
    task.opFailed = false;
    task.opStep = 0;
    task.opSteps = 0;
    this.link(task);
    // dispatch returns true once a bdev operation owns the task; it then completes on its own
    if (!this.dispatch(task)) this.finish(task);
  }

  private fail(task: ScsiTask, senseKey: number, asc: number): false {
    task.setCheckCondition(senseKey, asc, 0);
    return false;
  }

  private invalidField(task: ScsiTask): false {
    return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  }

  /** Decodes and runs the CDB; false when the result is already set (task not yet completed). */
  private dispatch(task: ScsiTask): boolean {
    const cdb = task.cdb;
    const clen = Math.min(task.cdbLength, cdb.length);
    if (clen <= 0) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
    const op = cdb[0];
    if (SUPPORTED[op] === 0) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
    const need = cdbLengthForOpcode(op);
    if (clen < need || controlByteHasNaca(cdb[need - 1])) return this.invalidField(task);

    switch (op) {
      case Opcode.TEST_UNIT_READY:
      case Opcode.START_STOP_UNIT:
        return false;
      case Opcode.INQUIRY:
        return this.inquiry(task);
      case Opcode.REPORT_LUNS:
        return this.reportLuns(task);
      case Opcode.REQUEST_SENSE:
        task.direction = DataDirection.FROM_DEV;
        if (cdb[1] & 0x01) return this.invalidField(task); // descriptor format not supported
        writeFixedSense(scratch, 0, SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE, 0);
        task.returnData(scratch, FIXED_SENSE_LENGTH, cdb[4]);
        return false;
      case Opcode.MODE_SENSE_6:
        return this.modeSense(task, true, cdb[4]);
      case Opcode.MODE_SENSE_10:
        return this.modeSense(task, false, be16(cdb, 7));
      case Opcode.MODE_SELECT_6:
        return this.modeSelect(task, true, cdb[4]);
      case Opcode.MODE_SELECT_10:
        return this.modeSelect(task, false, be16(cdb, 7));
      case Opcode.READ_CAPACITY_10:
        task.direction = DataDirection.FROM_DEV;
        if ((cdb[8] & 0x01) === 0 && be32(cdb, 2) !== 0) return this.invalidField(task); // LBA needs PMI
        task.returnData(scratch, buildReadCapacity10(this.info, scratch), 8);
        return false;
      case Opcode.SERVICE_ACTION_IN_16:
        task.direction = DataDirection.FROM_DEV;
        if ((cdb[1] & 0x1f) !== ServiceActionIn16.READ_CAPACITY_16) return this.invalidField(task);
        if ((cdb[14] & 0x01) === 0 && be64(cdb, 2) !== 0) return this.invalidField(task);
        task.returnData(scratch, buildReadCapacity16(this.info, scratch), be32(cdb, 10));
        return false;
      case Opcode.READ_6:
      case Opcode.WRITE_6:
        return this.readWrite(task, op === Opcode.WRITE_6, be24(cdb, 1) & 0x1fffff, cdb[4] === 0 ? 256 : cdb[4], 0);
      case Opcode.READ_10:
      case Opcode.WRITE_10:
        return this.readWrite(task, op === Opcode.WRITE_10, be32(cdb, 2), be16(cdb, 7), cdb[1] >>> 5);
      case Opcode.READ_12:
      case Opcode.WRITE_12:
        return this.readWrite(task, op === Opcode.WRITE_12, be32(cdb, 2), be32(cdb, 6), cdb[1] >>> 5);
      case Opcode.READ_16:
      case Opcode.WRITE_16:
        return this.readWrite(task, op === Opcode.WRITE_16, be64(cdb, 2), be32(cdb, 10), cdb[1] >>> 5);
      case Opcode.VERIFY_10:
        return this.verify(task, be32(cdb, 2), be16(cdb, 7), cdb[1]);
      case Opcode.VERIFY_12:
        return this.verify(task, be32(cdb, 2), be32(cdb, 6), cdb[1]);
      case Opcode.VERIFY_16:
        return this.verify(task, be64(cdb, 2), be32(cdb, 10), cdb[1]);
      case Opcode.SYNCHRONIZE_CACHE_10:
        return this.synchronizeCache(task, be32(cdb, 2), be16(cdb, 7));
      case Opcode.SYNCHRONIZE_CACHE_16:
        return this.synchronizeCache(task, be64(cdb, 2), be32(cdb, 10));
      case Opcode.UNMAP:
        return this.unmap(task);
      case Opcode.WRITE_SAME_10:
        return this.writeSame(task, be32(cdb, 2), be16(cdb, 7), cdb[1] & ~0x01);
      case Opcode.WRITE_SAME_16:
        return this.writeSame(task, be64(cdb, 2), be32(cdb, 10), cdb[1]);
      default:
        return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
    }
  }

  // ---------------------------------------------------------------- non-I/O commands

  private inquiry(task: ScsiTask): boolean {
    const cdb = task.cdb;
    task.direction = DataDirection.FROM_DEV;
    if (cdb[1] & 0x02) return this.invalidField(task); // CMDDT
    let n: number;
    if (cdb[1] & 0x01) {
      n = buildVpdPage(cdb[2], this.info, this.vpdIdentity(), scratch);
      if (n < 0) return this.invalidField(task);
    } else {
      if (cdb[2] !== 0) return this.invalidField(task); // PAGE CODE without EVPD
      n = buildStandardInquiry(this.info.productName, scratch);
    }
    task.returnData(scratch, n, be16(cdb, 3));
    return false;
  }

  private reportLuns(task: ScsiTask): boolean {
    const cdb = task.cdb;
    const alloc = be32(cdb, 6);
    task.direction = DataDirection.FROM_DEV;
    if (alloc < 16) return this.invalidField(task);
    const n = buildReportLuns(cdb[2], this.lunList, scratch);
    if (n < 0) return this.invalidField(task);
    task.returnData(scratch, n, alloc);
    return false;
  }

  private modeSense(task: ScsiTask, six: boolean, alloc: number): boolean {
    const cdb = task.cdb;
    task.direction = DataDirection.FROM_DEV;
    const n = buildModeSense(
      {
        six,
        dbd: (cdb[1] & 0x08) !== 0,
        llbaa: !six && (cdb[1] & 0x10) !== 0,
        pc: cdb[2] >>> 6,
        page: cdb[2] & 0x3f,
        subpage: cdb[3],
      },
      this.info,
      scratch,
    );
    if (n === ModeSenseError.SAVING_NOT_SUPPORTED) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED);
    if (n < 0) return this.invalidField(task);
    task.returnData(scratch, n, alloc);
    return false;
  }

  private modeSelect(task: ScsiTask, six: boolean, pllen: number): boolean {
    task.direction = DataDirection.TO_DEV;
    switch (validateModeSelect(six, task.dataOut, pllen)) {
      case ModeSelectResult.OK:
        task.dataTransferred = pllen; // accepted and ignored, as SPDK does
        return false;
      case ModeSelectResult.INVALID_FIELD_IN_CDB:
        return this.invalidField(task);
      case ModeSelectResult.PARAMETER_LIST_LENGTH_ERROR:
        return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
      default:
        return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    }
  }

  /** True when [lba, lba+blocks) is outside the medium (also when lba itself is past the end). */
  private outOfRange(lba: number, blocks: number): boolean {
    const n = this.info.numBlocks;
    return lba >= n || n - lba < blocks;
  }

  private verify(task: ScsiTask, lba: number, blocks: number, byte1: number): boolean {
    // VRPROTECT and BYTCHK (compare with data-out) are not supported; BYTCHK=0 checks nothing more
    if (byte1 >>> 5 !== 0 || ((byte1 >>> 1) & 0x03) !== 0) return this.invalidField(task);
    if (this.outOfRange(lba, blocks)) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    return false;
  }

  // ---------------------------------------------------------------- I/O commands

  private readWrite(task: ScsiTask, write: boolean, lba: number, blocks: number, protect: number): boolean {
    task.direction = write ? DataDirection.TO_DEV : DataDirection.FROM_DEV;
    if (protect !== 0) return this.invalidField(task); // RDPROTECT/WRPROTECT: no protection information
    if (write && this.info.readonly) return this.fail(task, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
    if (this.outOfRange(lba, blocks)) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    if (blocks === 0) return false;
    if (blocks > this.maxXferBlocks) return this.invalidField(task); // Block Limits MAXIMUM TRANSFER LENGTH
    const bytes = blocks * this.info.blockSize;
    const buf = write ? task.dataOut : task.dataIn;
    // fewer data buffers than the CDB asks for: refused; more: the CDB wins, the rest is residual
    if (buf.totalLen < bytes) return this.invalidField(task);
    let iov = buf;
    if (buf.totalLen !== bytes) {
      if (!prefixInto(buf, task.aux, bytes)) return this.invalidField(task);
      iov = task.aux;
    }
    return this.startSingle(task, write ? IoType.WRITE : IoType.READ, lba * this.info.blockSize, bytes, iov, bytes, write);
  }

  private synchronizeCache(task: ScsiTask, lba: number, blocks: number): boolean {
    const n = this.info.numBlocks;
    if (lba >= n) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    const count = blocks === 0 ? n - lba : blocks; // 0: through the last LBA
    if (n - lba < count) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    if (!this.info.supportsFlush) return false;
    task.aux.reset();
    const bs = this.info.blockSize;
    return this.startSingle(task, IoType.FLUSH, lba * bs, count * bs, task.aux, 0, true);
  }

  private unmap(task: ScsiTask): boolean {
    const cdb = task.cdb;
    task.direction = DataDirection.TO_DEV;
    if (!this.info.supportsUnmap) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
    if (cdb[1] & 0x01) return this.invalidField(task); // ANCHOR: ANC_SUP=0
    if (this.info.readonly) return this.fail(task, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
    const pllen = be16(cdb, 7);
    const count = checkUnmapParameters(task.dataOut, pllen, this.info.numBlocks);
    switch (count) {
      case UnmapError.SHORT_DATA:
        return this.invalidField(task);
      case UnmapError.LIST_LENGTH:
        return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
      case UnmapError.INVALID_LIST:
        return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
      case UnmapError.OUT_OF_RANGE:
        return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
      case 0:
        task.dataTransferred = pllen;
        return false;
    }
    task.opKind = OpKind.UNMAP_DESCRIPTORS;
    task.opSteps = count;
    task.opXfer = pllen;
    task.opIsWrite = true;
    task.aux.reset();
    task.io.iov = task.aux;
    this.pump(task);
    return true;
  }

  /** `flags` is CDB byte 1 (NDOB, bit 0, only exists in WRITE SAME (16); the caller masks it). */
  private writeSame(task: ScsiTask, lba: number, blocks: number, flags: number): boolean {
    task.direction = DataDirection.TO_DEV;
    // WRPROTECT, ANCHOR, PBDATA, LBDATA are not supported
    if (flags >>> 5 !== 0 || (flags & (0x10 | 0x04 | 0x02)) !== 0) return this.invalidField(task);
    const unmapBit = (flags & 0x08) !== 0;
    const ndob = (flags & 0x01) !== 0;
    if (this.info.readonly) return this.fail(task, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
    if (blocks === 0) return this.invalidField(task); // WSNZ=1 in the Block Limits page
    if (this.outOfRange(lba, blocks)) return this.fail(task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    if (blocks > this.maxXferBlocks) return this.invalidField(task); // MAXIMUM WRITE SAME LENGTH
    const bs = this.info.blockSize;
    if (!ndob && task.dataOut.totalLen < bs) return this.invalidField(task); // one block of data-out needed
    const xfer = ndob ? 0 : bs;
    const offset = lba * bs;
    const bytes = blocks * bs;
    if (unmapBit && this.info.supportsUnmap) {
      task.aux.reset();
      return this.startSingle(task, IoType.UNMAP, offset, bytes, task.aux, xfer, true);
    }
    const zero = ndob || prefixIsZero(task.dataOut, bs);
    if (zero && this.info.supportsWriteZeroes) {
      task.aux.reset();
      return this.startSingle(task, IoType.WRITE_ZEROES, offset, bytes, task.aux, xfer, true);
    }
    // the block written `blocks` times: each write's scatter list repeats views of the block
    const src = ndob ? this.zeroBlock() : task.dataOut;
    const perWrite = Math.max(1, Math.floor(task.aux.capacity / segmentsSpanned(src, bs)));
    task.opKind = OpKind.WRITE_REPEAT;
    task.opSrc = src;
    task.opOffset = offset;
    task.opLength = perWrite;
    task.opBlocks = blocks;
    task.opSteps = Math.ceil(blocks / perWrite);
    task.opXfer = xfer;
    task.opIsWrite = true;
    this.pump(task);
    return true;
  }

  private zeroBlock(): IoVecs {
    if (this.zeroIov === null) {
      this.zeroIov = new IoVecs(1);
      this.zeroIov.push(new Uint8Array(this.info.blockSize), 0, this.info.blockSize);
    }
    return this.zeroIov;
  }

  // ---------------------------------------------------------------- bdev operation engine

  private startSingle(task: ScsiTask, type: IoType, offset: number, length: number, iov: IoVecs, xfer: number, isWrite: boolean): boolean {
    const io = task.io;
    io.type = type;
    io.offset = offset;
    io.length = length;
    io.iov = iov;
    task.opKind = OpKind.SINGLE;
    task.opSteps = 1;
    task.opXfer = xfer;
    task.opIsWrite = isWrite;
    this.pump(task);
    return true;
  }

  /** Prepares task.io for step task.opStep; false when the step has nothing to do. */
  private prepareStep(task: ScsiTask): boolean {
    const io = task.io;
    const bs = this.info.blockSize;
    switch (task.opKind) {
      case OpKind.UNMAP_DESCRIPTORS: {
        const blocks = unmapDescriptorBlocks(task.dataOut, task.opStep);
        if (blocks === 0) return false;
        io.type = IoType.UNMAP;
        io.offset = unmapDescriptorLba(task.dataOut, task.opStep) * bs;
        io.length = blocks * bs;
        return true;
      }
      case OpKind.WRITE_REPEAT: {
        const done = task.opStep * task.opLength;
        const blocks = Math.min(task.opLength, task.opBlocks - done);
        const src = task.opSrc ?? task.dataOut;
        repeatInto(src, bs, blocks, task.aux);
        io.type = IoType.WRITE;
        io.offset = task.opOffset + done * bs;
        io.length = blocks * bs;
        io.iov = task.aux;
        return true;
      }
      default:
        return true;
    }
  }

  /**
   * Submits steps until one completes asynchronously or the task is done.
   */
  private pump(task: ScsiTask): void {
    for (;;) {
      if (task.opFailed) return this.finishIoError(task);
      if (task.opStep >= task.opSteps) return this.finishOk(task);
      if (task.abortRequested) return this.finishAborted(task);
      if (!this.prepareStep(task)) {
        task.opStep++;
        continue;
      }
      task.inSubmit = true;
      task.syncDone = false;
      task.ioOutstanding = true;
      try {
        this.channel.submit(task.io);
      } catch {
        if (task.ioOutstanding) {
          task.ioOutstanding = false;
          task.lastIoStatus = IoStatus.FAILED;
          task.syncDone = true;
        }
      }
      task.inSubmit = false;
      if (!task.syncDone) return; // completes later through ioDone
      if (!this.afterIo(task)) return;
    }
  }

  /** @internal BdevIo completion (through the task's io.complete). */
  ioDone(task: ScsiTask, status: IoStatus): void {
    task.lastIoStatus = status;
    if (task.inSubmit) {
      task.syncDone = true; // pump continues after submit() returns
      return;
    }
    if (this.afterIo(task)) this.pump(task);
  }

  /** Accounts for a finished I/O; true: the task goes on to its next step. */
  private afterIo(task: ScsiTask): boolean {
    const s = task.lastIoStatus;
    if (s === IoStatus.SUCCESS) task.opStep++;
    else task.opFailed = true;
    return true;
  }

  private finishOk(task: ScsiTask): void {
    task.dataTransferred = task.opXfer;
    this.finish(task);
  }

  private finishIoError(task: ScsiTask): void {
    if (!this.mediumErrors) task.setCheckCondition(SenseKey.ABORTED_COMMAND, Asc.NO_ADDITIONAL_SENSE, 0);
    else if (task.opIsWrite) task.setCheckCondition(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR, 0);
    else task.setCheckCondition(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR, 0);
    this.finish(task);
  }

  private finishAborted(task: ScsiTask): void {
    task.setCheckCondition(SenseKey.ABORTED_COMMAND, Asc.NO_ADDITIONAL_SENSE, 0);
    task.response = TaskResponse.ABORTED;
    this.finish(task);
  }

  private finish(task: ScsiTask): void {
    this.unlink(task);
    task.inFlight = false;
    task.executor = null;
    task.opSrc = null;
    try {
      task.onComplete(task);
    } finally {
      if (this.waiters.length !== 0) this.serviceWaiters();
    }
  }

  // ---------------------------------------------------------------- in-flight tracking

  private link(task: ScsiTask): void {
    task.nextInFlight = null;
    task.prevInFlight = this.tail;
    if (this.tail) this.tail.nextInFlight = task;
    else this.head = task;
    this.tail = task;
    this.count++;
  }

  private unlink(task: ScsiTask): void {
    const { prevInFlight: prev, nextInFlight: next } = task;
    if (prev) prev.nextInFlight = next;
    else this.head = next;
    if (next) next.prevInFlight = prev;
    else this.tail = prev;
    task.prevInFlight = task.nextInFlight = null;
    this.count--;
  }

  private waiterDone(w: Waiter): boolean {
    if (w.task) return !w.task.inFlight || w.task.seq !== w.seq || w.task.executor !== this;
    // tasks are linked in execution order, so the head is the oldest still running
    return this.head === null || this.head.seq > w.seq;
  }

  private serviceWaiters(): void {
    let kept = 0;
    const ws = this.waiters;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i];
      if (this.waiterDone(w)) w.resolve();
      else ws[kept++] = w;
    }
    ws.length = kept;
  }

  private wait(task: ScsiTask | null, seq: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const w: Waiter = { task, seq, resolve };
      if (this.waiterDone(w)) resolve();
      else this.waiters.push(w);
    });
  }

  private findTask(tagLo: number, tagHi: number): ScsiTask | null {
    for (let t = this.head; t; t = t.nextInFlight) if (t.tagLo === tagLo && t.tagHi === tagHi) return t;
    return null;
  }

  /**
   * Stops a task as early as possible: at once if its I/O waits in the bdev layer (QoS, NOMEM)
   * and the layer gives it back, else at its next step.
   */
  private requestAbort(task: ScsiTask): void {
    task.abortRequested = true;
    if (task.ioOutstanding && this.channel.abort?.(task.io) === true) {
      task.ioOutstanding = false;
      this.finishAborted(task);
    }
  }

  /** Requests an abort of every task executing now (not of tasks started meanwhile). */
  private abortAllUpTo(limit: number): void {
    let t = this.head;
    while (t && t.seq <= limit) {
      const next = t.nextInFlight;
      this.requestAbort(t);
      t = next;
    }
  }

  // ---------------------------------------------------------------- task management

  /**
   * ABORT TASK: the task with this tag stops before its next bdev request (at once when its I/O
   * waits in the bdev layer; a request already at the bdev cannot be recalled, so it may still complete
   * normally). Resolves FUNCTION COMPLETE once the task has completed (or when no task has the tag).
   */
  abortTask(tagLo: number, tagHi = 0): Promise<TmfResponse> {
    const t = this.findTask(tagLo, tagHi);
    if (t === null) return Promise.resolve(TmfResponse.FUNCTION_COMPLETE);
    const seq = t.seq;
    const done = this.wait(t, seq);
    this.requestAbort(t);
    return done.then(() => TmfResponse.FUNCTION_COMPLETE);
  }

  /** ABORT TASK SET / CLEAR TASK SET / LOGICAL UNIT RESET: every task executing now. */
  abortTaskSet(): Promise<TmfResponse> {
    const limit = this.seqCounter;
    const done = this.wait(null, limit);
    this.abortAllUpTo(limit);
    return done.then(() => TmfResponse.FUNCTION_COMPLETE);
  }

  /** LOGICAL UNIT RESET (SPDK waits for the outstanding tasks; there is no bdev reset here). */
  reset(): Promise<TmfResponse> {
    return this.abortTaskSet();
  }

  /** QUERY TASK: FUNCTION SUCCEEDED when a task with the tag is executing. */
  queryTask(tagLo: number, tagHi = 0): TmfResponse {
    return this.findTask(tagLo, tagHi) ? TmfResponse.FUNCTION_SUCCEEDED : TmfResponse.FUNCTION_COMPLETE;
  }

  /** QUERY TASK SET: FUNCTION SUCCEEDED when any task is executing. */
  queryTaskSet(): TmfResponse {
    return this.count > 0 ? TmfResponse.FUNCTION_SUCCEEDED : TmfResponse.FUNCTION_COMPLETE;
  }

  // ---------------------------------------------------------------- hot removal

  /**
   * Starts hot removal: new tasks get CHECK CONDITION ILLEGAL REQUEST / LOGICAL UNIT NOT
   * SUPPORTED (SPDK's lookup of a removing LUN yields none), tasks whose I/O waits in the bdev
   * layer are aborted, multi-step commands stop at their next step. Await drain() before close().
   */
  remove(): void {
    if (this.removed) return;
    this.removed = true;
    this.abortAllUpTo(this.seqCounter);
  }

  /** Resolves once every task executing at the time of the call has completed. */
  drain(): Promise<void> {
    return this.wait(null, this.seqCounter);
  }

  /** Closes the channel (the LUN owns it). Tasks executed afterwards are answered as removed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.close();
  }
}
