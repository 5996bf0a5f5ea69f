// A SCSI command in flight: the CDB, the two data buffers as scatter lists, and the result
// (status, sense, bytes transferred). A transport preallocates one task per request slot and reuses
// it; executing a READ or WRITE allocates nothing (the BdevIo and the helper scatter list the
// target needs are part of the task).
import { IoStatus, IoType, IoVecs, LayerIo, scatterPrefix } from '../bdev/io.js';
import { ScsiStatus } from './constants.js';
import { writeFixedSense, FIXED_SENSE_LENGTH } from './sense.js';

/** How the transport should answer, beside the SCSI status (virtio-scsi `response`). */
export const TaskResponse = {
  /** The command was executed; status/sense/residual are meaningful (VIRTIO_SCSI_S_OK). */
  OK: 0,
  /** No target at the addressed target number (VIRTIO_SCSI_S_BAD_TARGET). */
  BAD_TARGET: 1,
  /**
   * A task management function aborted the command before it reached the bdev
   * (VIRTIO_SCSI_S_ABORTED). Status is also CHECK CONDITION / ABORTED COMMAND, as SPDK reports.
   */
  ABORTED: 2,
} as const;
export type TaskResponse = (typeof TaskResponse)[keyof typeof TaskResponse];

/** Which buffer the executed command moves data through. */
export const DataDirection = {
  NONE: 0,
  /** Target → initiator (dataIn). */
  FROM_DEV: 1,
  /** Initiator → target (dataOut). */
  TO_DEV: 2,
} as const;
export type DataDirection = (typeof DataDirection)[keyof typeof DataDirection];

/** Default CDB buffer size (virtio-scsi's default cdb_size). */
export const DEFAULT_CDB_SIZE = 32;
/** Default scatter-list capacity of dataIn / dataOut. */
export const DEFAULT_MAX_SEGMENTS = 256;
/** Size of the preallocated sense buffer (fixed-format sense uses the first 18 bytes). */
export const SENSE_BUFFER_SIZE = 32;

/** What a task calls back into while it executes (implemented by ScsiLun). */
export interface TaskExecutor {
  ioDone(task: ScsiTask, status: IoStatus): void;
}

export interface ScsiTaskOptions {
  /** Bytes reserved for the CDB (default 32). */
  cdbSize?: number;
  /** Scatter-list capacity of dataIn and dataOut each (default 256). */
  maxSegments?: number;
  /** Completion callback; may also be assigned later. Called exactly once per submission. */
  onComplete?: (task: ScsiTask) => void;
}

/** A task's bdev I/O: a LayerIo, so the bdev layer times, holds and retries it in place. */
class TaskIo extends LayerIo {
  iov: IoVecs;

  constructor(private readonly task: ScsiTask) {
    super();
    this.type = IoType.READ;
    this.iov = task.dataIn;
  }

  completed(status: IoStatus): void {
    this.task.ioCompleted(status);
  }
}

export class ScsiTask {
  /** CDB bytes; only the first cdbLength are meaningful. */
  readonly cdb: Uint8Array;
  cdbLength = 0;
  /** Initiator → target data (WRITE payload, UNMAP/MODE SELECT parameter lists). */
  readonly dataOut: IoVecs;
  /** Target → initiator data (READ payload, INQUIRY data, ...). */
  readonly dataIn: IoVecs;
  /** The transport's task tag (virtio-scsi `id`, 64 bits as two halves) for ABORT TASK / QUERY TASK. */
  tagLo = 0;
  tagHi = 0;

  // ---- results ----
  response: TaskResponse = TaskResponse.OK;
  status: ScsiStatus = ScsiStatus.GOOD;
  /** Preallocated sense buffer; senseLength bytes are valid (0 unless CHECK CONDITION). */
  readonly sense = new Uint8Array(SENSE_BUFFER_SIZE);
  senseLength = 0;
  /** Bytes moved through the buffer of `direction`. */
  dataTransferred = 0;
  /** Buffer the command used; decides what residual is computed against. */
  direction: DataDirection = DataDirection.NONE;

  /** Called exactly once when the task completes (possibly synchronously inside submit). */
  onComplete: (task: this) => void;

  // ---- execution state, owned by the executing ScsiLun ----
  /** @internal */ executor: TaskExecutor | null = null;
  /** @internal */ inFlight = false;
  /** @internal */ seq = 0;
  /** @internal */ prevInFlight: ScsiTask | null = null;
  /** @internal */ nextInFlight: ScsiTask | null = null;
  /** @internal */ abortRequested = false;
  /** @internal The task's bdev I/O, reused for each step. */ readonly io: TaskIo;
  /** @internal Helper scatter list: prefix views of dataIn/dataOut, WRITE SAME repeats. */
  readonly aux: IoVecs;
  /** @internal */ ioOutstanding = false;
  /** @internal */ inSubmit = false;
  /** @internal */ syncDone = false;
  /** @internal */ lastIoStatus: IoStatus = IoStatus.SUCCESS;
  /** @internal */ opKind = 0;
  /** @internal */ opStep = 0;
  /** @internal */ opSteps = 0;
  /** @internal */ opFailed = false;
  /** @internal Byte offset on the bdev where the operation starts. */
  opOffset = 0;
  /** @internal Bytes of the whole operation (single I/O) or blocks per step (multi-step). */
  opLength = 0;
  /** @internal Total blocks of a multi-step operation. */
  opBlocks = 0;
  /** @internal dataTransferred to report on success. */
  opXfer = 0;
  /** @internal The I/O is a write (decides the I/O-error sense). */
  opIsWrite = false;
  /** @internal Source of the block WRITE SAME repeats. */
  opSrc: IoVecs | null = null;

  constructor(opts: ScsiTaskOptions = {}) {
    const segs = opts.maxSegments ?? DEFAULT_MAX_SEGMENTS;
    this.cdb = new Uint8Array(opts.cdbSize ?? DEFAULT_CDB_SIZE);
    this.dataOut = new IoVecs(segs);
    this.dataIn = new IoVecs(segs);
    this.aux = new IoVecs(Math.max(segs, 256));
    this.onComplete = opts.onComplete ?? (() => {});
    this.io = new TaskIo(this);
  }

  /** @internal The bdev completed the task's I/O. */
  ioCompleted(status: IoStatus): void {
    if (!this.ioOutstanding) return; // a channel completing twice is ignored
    this.ioOutstanding = false;
    this.executor?.ioDone(this, status);
  }

  /** Bytes of the command's data buffer that were not transferred (virtio-scsi `resid`). */
  get residual(): number {
    switch (this.direction) {
      case DataDirection.FROM_DEV:
        return this.dataIn.totalLen - this.dataTransferred;
      case DataDirection.TO_DEV:
        return this.dataOut.totalLen - this.dataTransferred;
      default:
        return this.dataIn.totalLen + this.dataOut.totalLen;
    }
  }

  /** Clears the CDB length, buffers and results for reuse (not while the task is in flight). */
  reset(): void {
    this.cdbLength = 0;
    this.dataOut.reset();
    this.dataIn.reset();
    this.tagLo = 0;
    this.tagHi = 0;
    this.clearResult();
  }

  /** Copies a CDB in (at most the CDB buffer's size) and sets cdbLength. */
  setCdb(src: ArrayLike<number>, len = src.length): void {
    const n = Math.min(len, this.cdb.length);
    for (let i = 0; i < n; i++) this.cdb[i] = src[i];
    this.cdb.fill(0, n);
    this.cdbLength = n;
  }

  /** @internal Results back to GOOD / no data. */
  clearResult(): void {
    this.response = TaskResponse.OK;
    this.status = ScsiStatus.GOOD;
    this.senseLength = 0;
    this.dataTransferred = 0;
    this.direction = DataDirection.NONE;
  }

  /**
   * GOOD status with data-in: copies min(len, allocLen, dataIn.totalLen) bytes of src to dataIn
   * (allocation length and buffer size both truncate; the rest is residual).
   */
  returnData(src: Uint8Array, len: number, allocLen: number): void {
    const n = Math.min(len, allocLen, this.dataIn.totalLen);
    if (n > 0) scatterPrefix(this.dataIn, src, n);
    this.direction = DataDirection.FROM_DEV;
    this.status = ScsiStatus.GOOD;
    this.senseLength = 0;
    this.dataTransferred = n;
  }

  /** Sets CHECK CONDITION with fixed-format sense; no data counts as transferred. */
  setCheckCondition(senseKey: number, asc: number, ascq = 0): void {
    this.status = ScsiStatus.CHECK_CONDITION;
    writeFixedSense(this.sense, 0, senseKey, asc, ascq);
    this.senseLength = FIXED_SENSE_LENGTH;
    this.dataTransferred = 0;
  }
}
