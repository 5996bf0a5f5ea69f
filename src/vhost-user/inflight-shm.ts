// The INFLIGHT_SHMFD buffer (GET_INFLIGHT_FD / SET_INFLIGHT_FD): one region per queue, shared with
// the front-end so that a restarted back-end finds the requests its predecessor left in flight.
import type { Logger } from 'pino';
import { check, mmapShared, native } from '../native/index.js';
import { inflightQueueBytes } from '../virtio/inflight.js';
import type { QueueConfig } from '../virtio/queue-runner.js';
import { ProtocolError, expectSize, getU64 } from './protocol.js';

const PAYLOAD = 24;
const MAX_BYTES = 64 << 20;

interface InflightBuffer {
  buffer: SharedArrayBuffer;
  mappingId: number;
  numQueues: number;
  queueSize: number;
  /** Handed over by the front-end without this session having made it: a reconnect after a restart. */
  resumed: boolean;
}

export class InflightShm {
  private current: InflightBuffer | undefined;
  /** Whether this session made a buffer (GET_INFLIGHT_FD): QEMU then hands it back with SET_INFLIGHT_FD. */
  private made = false;

  constructor(
    private readonly maxQueues: number,
    private readonly maxQueueSize: number,
    private readonly log: Logger,
  ) {}

  /** GET_INFLIGHT_FD: makes a new zeroed buffer; returns the reply payload and its fd (closed by the caller once sent). */
  create(p: DataView): { payload: Uint8Array; fd: number } {
    expectSize('GET_INFLIGHT_FD', p, PAYLOAD);
    const numQueues = p.getUint16(16, true);
    const queueSize = p.getUint16(18, true);
    if (numQueues === 0 || numQueues > this.maxQueues || queueSize === 0 || queueSize > this.maxQueueSize) {
      throw new ProtocolError(`GET_INFLIGHT_FD: ${numQueues} queues of ${queueSize}`);
    }
    // Every queue gets room for the larger (packed) layout: QEMU may ask before it sets the
    // features (vhost-user-scsi does), and a queue picks its layout when it starts.
    const size = inflightQueueBytes(queueSize, true) * numQueues;
    if (size > MAX_BYTES) throw new ProtocolError(`GET_INFLIGHT_FD: ${size} bytes is too large`);
    const fd = check('memfd_create', native.memfdCreate('vhostd-inflight', size));
    try {
      this.set({ ...this.map(fd, size, 0), numQueues, queueSize, resumed: false });
      this.made = true;
    } catch (e) {
      native.close(fd);
      throw e;
    }
    const payload = new Uint8Array(PAYLOAD);
    const dv = new DataView(payload.buffer);
    dv.setBigUint64(0, BigInt(size), true);
    dv.setBigUint64(8, 0n, true);
    dv.setUint16(16, numQueues, true);
    dv.setUint16(18, queueSize, true);
    return { payload, fd };
  }

  /** SET_INFLIGHT_FD: adopts the buffer a restarted back-end is handed; `fd` is always closed. */
  adopt(p: DataView, fd: number): void {
    try {
      expectSize('SET_INFLIGHT_FD', p, PAYLOAD);
      const size = getU64(p, 0);
      const offset = getU64(p, 8);
      const numQueues = p.getUint16(16, true);
      const queueSize = p.getUint16(18, true);
      if (size === 0 || size > MAX_BYTES || offset % 4096 !== 0 || size < inflightQueueBytes(queueSize, true) * numQueues) {
        throw new ProtocolError(`SET_INFLIGHT_FD: ${size} bytes at ${offset} for ${numQueues} queues of ${queueSize}`);
      }
      this.set({ ...this.map(fd, size, offset), numQueues, queueSize, resumed: !this.made });
    } finally {
      native.close(fd);
    }
  }

  /** This queue's region, if the front-end set up a buffer that fits the ring. */
  regionFor(index: number, size: number): QueueConfig['inflight'] {
    const inf = this.current;
    if (!inf) return undefined;
    if (index >= inf.numQueues || size > inf.queueSize) {
      this.log.warn({ queue: index, size }, 'in-flight buffer does not cover this queue; it is not tracked');
      return undefined;
    }
    return { buffer: inf.buffer, offset: index * inflightQueueBytes(inf.queueSize, true), resumed: inf.resumed };
  }

  release(): void {
    this.set(undefined);
  }

  private map(fd: number, size: number, offset: number): { buffer: SharedArrayBuffer; mappingId: number } {
    try {
      const m = mmapShared(fd, size, offset);
      return { buffer: m.buffer, mappingId: m.id };
    } catch (e) {
      throw new ProtocolError(`cannot map the in-flight buffer: ${(e as Error).message}`);
    }
  }

  private set(next: InflightBuffer | undefined): void {
    if (this.current) native.releaseMapping(this.current.mappingId);
    this.current = next;
  }
}
