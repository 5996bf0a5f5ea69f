// virtio-scsi on a reactor: the request queues feed a SCSI target set, the control queue runs
// task management, and the event queue carries hot-plug events to the guest.
import { openBdev } from '../../bdev/channels.js';
import { IoVecs, readBytes, scatterPrefix, sliceInto } from '../../bdev/io.js';
import { DataDirection, ScsiLun, ScsiTargetSet, ScsiTask, TaskResponse, TmfResponse } from '../../scsi/index.js';
import type { Chain } from '../../virtio/desc-chain.js';
import type { QueueRunner, RequestHandler } from '../../virtio/queue-runner.js';
import { type Device, type DeviceKind, type DeviceSpec, unknownControl } from '../device.js';
import {
  CMD_REQ_BYTES,
  CMD_RESP_BYTES,
  CONTROL_QUEUE,
  ControlType,
  EVENT_BYTES,
  EVENT_QUEUE,
  EVENTS_MISSED,
  EventReason,
  MAX_SCSI_TARGETS,
  SENSE_SIZE,
  ScsiControl,
  ScsiEvent,
  type ScsiDeviceSpec,
  type ScsiTargetSpec,
  VirtioScsiResponse,
} from './scsi-spec.js';

const taskResponse = [VirtioScsiResponse.OK, VirtioScsiResponse.BAD_TARGET, VirtioScsiResponse.ABORTED];
const tmfResponse: Record<number, number> = {
  [TmfResponse.FUNCTION_COMPLETE]: VirtioScsiResponse.OK,
  [TmfResponse.FUNCTION_SUCCEEDED]: VirtioScsiResponse.FUNCTION_SUCCEEDED,
  [TmfResponse.FUNCTION_REJECTED]: VirtioScsiResponse.FUNCTION_REJECTED,
  [TmfResponse.INCORRECT_LUN]: VirtioScsiResponse.INCORRECT_LUN,
  [TmfResponse.BAD_TARGET]: VirtioScsiResponse.BAD_TARGET,
};

/** One preallocated command slot: the SCSI task and where its response header goes. */
class ScsiRequest {
  readonly task: ScsiTask;
  readonly resp = new IoVecs(8);

  constructor(
    readonly head: number,
    private readonly owner: ScsiRequestHandler,
    maxSegments: number,
  ) {
    this.task = new ScsiTask({ maxSegments, onComplete: () => owner.finish(this) });
  }
}

class ScsiRequestHandler implements RequestHandler {
  private readonly requests: ScsiRequest[] = [];
  private readonly hdr = new Uint8Array(CMD_REQ_BYTES);
  private readonly out = new Uint8Array(CMD_RESP_BYTES);
  private readonly outView = new DataView(this.out.buffer);

  constructor(
    private readonly runner: QueueRunner,
    private readonly targets: ScsiTargetSet,
    segMax: number,
    private readonly warn: (m: string) => void,
  ) {
    for (let i = 0; i < runner.queue.size; i++) this.requests.push(new ScsiRequest(i, this, segMax + 2));
  }

  handle(head: number, chain: Chain): void {
    const req = this.requests[head];
    const iov = chain.iov;
    if (chain.writableLen < CMD_RESP_BYTES || !sliceInto(iov, chain.firstWritable, iov.count, 0, CMD_RESP_BYTES, req.resp)) {
      throw new Error(`request at head ${head} has ${chain.writableLen} device-writable bytes, the response needs ${CMD_RESP_BYTES}`);
    }
    const task = req.task;
    task.reset();
    if (chain.readableLen < CMD_REQ_BYTES || chain.overflow) {
      this.warn(`request at head ${head}: ${chain.overflow ? 'too many buffers' : `${chain.readableLen}-byte command header`}`);
      return this.respond(req, VirtioScsiResponse.FAILURE, 0);
    }
    const h = this.hdr;
    readBytes(iov, 0, chain.firstWritable, 0, h, CMD_REQ_BYTES);
    task.tagLo = h[8] | (h[9] << 8) | (h[10] << 16) | ((h[11] << 24) >>> 0);
    task.tagHi = h[12] | (h[13] << 8) | (h[14] << 16) | ((h[15] << 24) >>> 0);
    for (let i = 0; i < 32; i++) task.cdb[i] = h[19 + i];
    task.cdbLength = 32;
    const outOk = sliceInto(iov, 0, chain.firstWritable, CMD_REQ_BYTES, chain.readableLen - CMD_REQ_BYTES, task.dataOut);
    const inOk = sliceInto(iov, chain.firstWritable, iov.count, CMD_RESP_BYTES, chain.writableLen - CMD_RESP_BYTES, task.dataIn);
    if (!outOk || !inOk) return this.respond(req, VirtioScsiResponse.OVERRUN, 0);
    this.targets.submit(h, 0, task);
  }

  /** The task completed: write the virtio-scsi response header and hand the slot back. */
  finish(req: ScsiRequest): void {
    const task = req.task;
    const v = this.outView;
    const senseLen = Math.min(task.senseLength, SENSE_SIZE);
    v.setUint32(0, senseLen, true);
    v.setUint32(4, task.residual, true);
    v.setUint16(8, 0, true);
    this.out[10] = task.status;
    this.out[11] = taskResponse[task.response] ?? VirtioScsiResponse.FAILURE;
    for (let i = 0; i < senseLen; i++) this.out[12 + i] = task.sense[i];
    scatterPrefix(req.resp, this.out, 12 + senseLen);
    const dataIn = task.response === TaskResponse.OK ? task.dataTransferred : 0;
    this.runner.complete(req.head, CMD_RESP_BYTES + (task.direction === DataDirection.FROM_DEV ? dataIn : 0));
  }

  private respond(req: ScsiRequest, response: number, len: number): void {
    this.out.fill(0, 0, 12);
    this.out[11] = response;
    scatterPrefix(req.resp, this.out, 12);
    this.runner.complete(req.head, CMD_RESP_BYTES + len);
  }
}

class ScsiControlHandler implements RequestHandler {
  constructor(
    private readonly runner: QueueRunner,
    private readonly targets: ScsiTargetSet,
  ) {}

  handle(head: number, chain: Chain): void {
    const iov = chain.iov;
    const req = new Uint8Array(24);
    const n = readBytes(iov, 0, chain.firstWritable, 0, req, 24);
    const v = new DataView(req.buffer);
    const resp = new IoVecs(8);
    sliceInto(iov, chain.firstWritable, iov.count, 0, Math.min(chain.writableLen, 8), resp);
    const reply = (bytes: Uint8Array) => {
      const n = Math.min(bytes.length, resp.totalLen);
      scatterPrefix(resp, bytes, n);
      this.runner.complete(head, n);
    };
    const type = n >= 4 ? v.getUint32(0, true) : -1;
    if (type === ControlType.TMF && n >= 24 && chain.writableLen >= 1) {
      const lun = req.slice(8, 16);
      this.targets
        .taskManagement(v.getUint32(4, true), lun, 0, v.getUint32(16, true), v.getUint32(20, true))
        .then(
          (r) => reply(Uint8Array.of(tmfResponse[r] ?? VirtioScsiResponse.FAILURE)),
          () => reply(Uint8Array.of(VirtioScsiResponse.FAILURE)),
        );
      return;
    }
    if ((type === ControlType.AN_QUERY || type === ControlType.AN_SUBSCRIBE) && n >= 16 && chain.writableLen >= 5) {
      // No asynchronous notifications are supported: event_actual 0, response OK.
      return reply(Uint8Array.of(0, 0, 0, 0, VirtioScsiResponse.OK));
    }
    reply(Uint8Array.of(VirtioScsiResponse.FAILURE));
  }
}

/** Holds the guest's event buffers and fills them when targets come and go. */
class ScsiEventHandler implements RequestHandler {
  private readonly buffers: Array<{ head: number; iov: IoVecs }> = [];
  private readonly pending: Array<{ event: number; target: number; reason: number }> = [];
  private missed = false;

  constructor(private readonly runner: QueueRunner) {}

  handle(head: number, chain: Chain): void {
    if (chain.writableLen < EVENT_BYTES) throw new Error(`event buffer at head ${head} is ${chain.writableLen} bytes, need ${EVENT_BYTES}`);
    const iov = new IoVecs(4);
    sliceInto(chain.iov, chain.firstWritable, chain.iov.count, 0, EVENT_BYTES, iov);
    this.buffers.push({ head, iov });
    this.deliver();
  }

  post(event: number, target: number, reason: number): void {
    if (this.pending.length >= 64) this.missed = true;
    else this.pending.push({ event, target, reason });
    this.deliver();
  }

  private deliver(): void {
    while (this.buffers.length > 0 && (this.pending.length > 0 || this.missed)) {
      const e = this.pending.shift() ?? { event: ScsiEvent.NO_EVENT, target: 0, reason: 0 };
      this.fill(this.buffers.shift() as { head: number; iov: IoVecs }, e.event | (this.missed ? EVENTS_MISSED : 0), e.target, e.reason);
      this.missed = false;
    }
  }

  private fill(buf: { head: number; iov: IoVecs }, event: number, target: number, reason: number): void {
    const b = new Uint8Array(EVENT_BYTES);
    const v = new DataView(b.buffer);
    v.setUint32(0, event >>> 0, true);
    b[4] = 1;
    b[5] = target;
    v.setUint32(12, reason, true);
    scatterPrefix(buf.iov, b, EVENT_BYTES);
    this.runner.complete(buf.head, EVENT_BYTES);
  }

  /** The queue stops: give the held buffers back as NO_EVENT so nothing stays in flight. */
  stop(): void {
    for (const buf of this.buffers.splice(0)) this.fill(buf, ScsiEvent.NO_EVENT, 0, 0);
  }
}

/** The virtio-scsi device as one reactor serves it. */
export class ScsiDevice implements Device {
  readonly targets = new ScsiTargetSet();
  private events: ScsiEventHandler | undefined;

  constructor(
    private readonly spec: ScsiDeviceSpec,
    private readonly warn: (m: string) => void,
  ) {
    for (const t of spec.targets) this.targets.attach(t.target, new ScsiLun(t.lun, openBdev(t.bdev)));
  }

  handlerFor(runner: QueueRunner): RequestHandler {
    if (runner.qid === CONTROL_QUEUE) return new ScsiControlHandler(runner, this.targets);
    if (runner.qid === EVENT_QUEUE) {
      this.events = new ScsiEventHandler(runner);
      return this.events;
    }
    return new ScsiRequestHandler(runner, this.targets, this.spec.segMax, this.warn);
  }

  attachTarget(t: ScsiTargetSpec): void {
    this.targets.attach(t.target, new ScsiLun(t.lun, openBdev(t.bdev)));
    this.events?.post(ScsiEvent.TRANSPORT_RESET, t.target, EventReason.RESCAN);
  }

  /** Fails new commands at once, waits for the target's in-flight ones, then tells the guest. */
  async detachTarget(target: number): Promise<void> {
    await this.targets.detach(target);
    this.targets.release(target);
    this.events?.post(ScsiEvent.TRANSPORT_RESET, target, EventReason.REMOVED);
  }

  /** Reaps the LUNs' backend completions and releases what their bdev layer holds (QoS, NOMEM). */
  poll(): number {
    let n = 0;
    for (let t = 0; t < MAX_SCSI_TARGETS; t++) {
      const channel = this.targets.lun(t)?.channel;
      if (channel?.poll) n += channel.poll();
    }
    return n;
  }

  control(action: string, arg: unknown): void | Promise<void> {
    if (action === ScsiControl.ATTACH_TARGET) return this.attachTarget(arg as ScsiTargetSpec);
    if (action === ScsiControl.DETACH_TARGET) return this.detachTarget(arg as number);
    throw unknownControl('scsi', action);
  }

  async close(): Promise<void> {
    for (let t = 0; t < MAX_SCSI_TARGETS; t++) if (this.targets.lun(t) !== null) await this.targets.detach(t);
  }
}

export const scsiKind: DeviceKind = {
  kind: 'scsi',
  create: (spec: DeviceSpec, warn) => new ScsiDevice(spec as ScsiDeviceSpec, warn),
};
