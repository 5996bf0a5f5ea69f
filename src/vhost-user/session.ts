// The back-end state machine of one vhost-user connection (QEMU docs/interop/vhost-user.rst):
// features, memory table and vring state, turned into queue start/stop on the data plane.
import type { Logger } from 'pino';
import { MemoryTable } from '../memory/memory-table.js';
import { check, mmapShared, native } from '../native/index.js';
import { inflightQueueBytes } from '../virtio/inflight.js';
import type { DevicePlane } from '../reactor/device-plane.js';
import { VirtioFeature, bit, hasFeature } from '../virtio/features.js';
import type { QueueConfig } from '../virtio/queue-runner.js';
import type { VhostUserConnection, Message } from './connection.js';
import type { DeviceModel } from './device-model.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  ProtocolError,
  ProtocolFeature,
  Req,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
  type VringAddr,
  decodeConfig,
  decodeMemTable,
  decodeSingleRegion,
  decodeVringAddr,
  decodeVringState,
  encodeU64,
  expectSize,
  expectedFds,
  getU64,
  getU64Big,
  reqName,
} from './protocol.js';

export const MAX_MEM_SLOTS = 32;
const MAX_QUEUE_SIZE = 32768;

/** Protocol features every device gets from the session itself. */
const SESSION_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.RESET_DEVICE) |
  bit(ProtocolFeature.INFLIGHT_SHMFD) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS);

class Vring {
  num = 0;
  base = 0;
  addr: VringAddr | undefined;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  enabled = false;
  running = false;

  closeFds(): void {
    for (const fd of [this.kickFd, this.callFd, this.errFd]) if (fd >= 0) native.close(fd);
    this.kickFd = this.callFd = this.errFd = -1;
  }
}

/**
 * Takes ownership of a message's fds: handle() closes whatever is still in m.fds when dispatch
 * fails, so code that passes fds on (to the memory table, a vring) must take them first.
 */
function takeFds(m: Message): number[] {
  return m.fds.splice(0);
}

/** The INFLIGHT_SHMFD buffer: one region per queue, shared with the front-end across restarts. */
interface InflightBuffer {
  buffer: SharedArrayBuffer;
  mappingId: number;
  numQueues: number;
  queueSize: number;
}

const INFLIGHT_PAYLOAD = 24;
const MAX_INFLIGHT_BYTES = 64 << 20;

export class VhostUserSession {
  private features = 0n;
  private inflight: InflightBuffer | undefined;
  private protocolFeatures = 0n;
  private readonly memory = new MemoryTable(MAX_MEM_SLOTS);
  private readonly vrings: Vring[];

  constructor(
    private readonly conn: VhostUserConnection,
    private readonly model: DeviceModel,
    private readonly plane: DevicePlane,
    private readonly log: Logger,
  ) {
    this.vrings = Array.from({ length: model.maxQueues }, () => new Vring());
  }

  private get offeredFeatures(): bigint {
    return this.model.features | bit(VHOST_USER_F_PROTOCOL_FEATURES);
  }

  private get offeredProtocolFeatures(): bigint {
    return SESSION_PROTOCOL_FEATURES | this.model.protocolFeatures;
  }

  private get replyAck(): boolean {
    return (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  async handle(m: Message): Promise<void> {
    const name = reqName[m.request] ?? `request ${m.request}`;
    if (this.log.isLevelEnabled('debug')) {
      const arg = m.payload.byteLength >= 8 ? m.payload.getBigUint64(0, true).toString(16) : undefined;
      this.log.debug({ request: name, size: m.payload.byteLength, fds: m.fds.length, arg }, 'vhost-user message');
    }
    let replied = false;
    let failed = false;
    try {
      const fdRange = expectedFds(m.request, m.payload);
      if (m.fds.length < fdRange.min || m.fds.length > fdRange.max) {
        throw new ProtocolError(`${name} came with ${m.fds.length} file descriptors, expected ${fdRange.min === fdRange.max ? fdRange.min : `${fdRange.min}-${fdRange.max}`}`);
      }
      replied = await this.dispatch(m, name);
    } catch (e) {
      failed = true;
      for (const fd of m.fds) native.close(fd);
      if (!(e instanceof ProtocolError)) throw e;
      this.log.error({ request: name }, `rejected vhost-user message: ${e.message}`);
      if (this.expectsReply(m.request)) {
        // A reply the front-end waits for cannot be faked; drop the connection instead.
        throw new Error(e.message);
      }
    }
    if (!replied && this.replyAck && m.flags & FLAG_NEED_REPLY) this.reply(m.request, encodeU64(failed ? 1 : 0));
  }

  private expectsReply(req: number): boolean {
    return (
      req === Req.GET_FEATURES ||
      req === Req.GET_PROTOCOL_FEATURES ||
      req === Req.GET_VRING_BASE ||
      req === Req.GET_QUEUE_NUM ||
      req === Req.GET_CONFIG ||
      req === Req.GET_MAX_MEM_SLOTS ||
      req === Req.GET_INFLIGHT_FD
    );
  }

  private reply(request: number, payload: Uint8Array, fds: number[] = []): void {
    this.conn.send(request, FLAG_VERSION | FLAG_REPLY, payload, fds);
  }

  private vring(index: number, name: string): Vring {
    if (index >= this.vrings.length) throw new ProtocolError(`${name}: vring ${index} does not exist (${this.vrings.length} queues)`);
    return this.vrings[index];
  }

  /** Handles one message; returns true when it sent its own reply. */
  private async dispatch(m: Message, name: string): Promise<boolean> {
    const p = m.payload;
    switch (m.request) {
      case Req.GET_FEATURES:
        expectSize(name, p, 0);
        this.reply(m.request, encodeU64(this.offeredFeatures));
        return true;
      case Req.SET_FEATURES: {
        expectSize(name, p, 8);
        const f = getU64Big(p, 0);
        const packedBit = bit(VirtioFeature.RING_PACKED);
        const running = this.vrings.some((v) => v.running);
        let violation: string | undefined;
        if ((f & ~this.offeredFeatures) !== 0n) {
          violation = `SET_FEATURES: 0x${f.toString(16)} has bits never offered${f & packedBit & ~this.offeredFeatures ? ' (VIRTIO_F_RING_PACKED: packed layout without negotiating it)' : ''}`;
        } else if ((f ^ this.features) & packedBit && running) {
          // QEMU re-sends the features while running (dirty logging), never with another layout.
          violation = `SET_FEATURES switches the rings to the ${f & packedBit ? 'packed' : 'split'} layout while they run`;
        }
        if (violation !== undefined) {
          // Running rings would go on being read in the old layout: stop the device.
          if (running) await this.failDevice(violation);
          throw new ProtocolError(violation);
        }
        this.features = f;
        return false;
      }
      case Req.GET_PROTOCOL_FEATURES:
        expectSize(name, p, 0);
        this.reply(m.request, encodeU64(this.offeredProtocolFeatures));
        return true;
      case Req.SET_PROTOCOL_FEATURES: {
        expectSize(name, p, 8);
        const f = getU64Big(p, 0);
        if ((f & ~this.offeredProtocolFeatures) !== 0n) throw new ProtocolError(`SET_PROTOCOL_FEATURES: 0x${f.toString(16)} has bits never offered`);
        this.protocolFeatures = f;
        return false;
      }
      case Req.SET_OWNER:
        return false;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        await this.reset();
        return false;
      case Req.GET_QUEUE_NUM:
        this.reply(m.request, encodeU64(this.model.maxQueues));
        return true;
      case Req.GET_MAX_MEM_SLOTS:
        this.reply(m.request, encodeU64(MAX_MEM_SLOTS));
        return true;
      case Req.SET_MEM_TABLE: {
        const descs = decodeMemTable(p, MAX_MEM_SLOTS);
        const old = this.memory.replace(descs, takeFds(m));
        await this.publishMemory(old);
        return false;
      }
      case Req.ADD_MEM_REG: {
        const desc = decodeSingleRegion(name, p);
        this.memory.add(desc, takeFds(m)[0]);
        await this.publishMemory([]);
        return false;
      }
      case Req.REM_MEM_REG: {
        for (const fd of takeFds(m)) native.close(fd);
        const removed = this.memory.remove(decodeSingleRegion(name, p));
        await this.publishMemory([removed]);
        return false;
      }
      case Req.SET_VRING_NUM: {
        const s = decodeVringState(name, p);
        const v = this.vring(s.index, name);
        // Split rings need a power of two; packed rings any size up to 32768.
        const packed = hasFeature(this.features, VirtioFeature.RING_PACKED);
        if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (!packed && (s.num & (s.num - 1)) !== 0)) {
          throw new ProtocolError(`SET_VRING_NUM: size ${s.num} is not ${packed ? 'between 1 and' : 'a power of two up to'} ${MAX_QUEUE_SIZE}`);
        }
        if (v.running) throw new ProtocolError(`SET_VRING_NUM: vring ${s.index} is running`);
        v.num = s.num;
        return false;
      }
      case Req.SET_VRING_BASE: {
        const s = decodeVringState(name, p);
        const v = this.vring(s.index, name);
        if (v.running) throw new ProtocolError(`SET_VRING_BASE: vring ${s.index} is running`);
        // Packed rings carry avail index + wrap in the low 16 bits and used index + wrap in the high 16.
        if (s.num > 0xffff && !hasFeature(this.features, VirtioFeature.RING_PACKED)) {
          throw new ProtocolError(`SET_VRING_BASE: base ${s.num} beyond 16 bits`);
        }
        v.base = s.num;
        return false;
      }
      case Req.SET_VRING_ADDR: {
        const a = decodeVringAddr(p);
        const v = this.vring(a.index, name);
        if (v.running) {
          // Re-addressing a live ring (QEMU does it when logging starts): restart it.
          await this.stopVring(a.index);
          v.addr = a;
          await this.reconcile(a.index);
        } else {
          v.addr = a;
        }
        return false;
      }
      case Req.GET_VRING_BASE: {
        const s = decodeVringState(name, p);
        const v = this.vring(s.index, name);
        await this.stopVring(s.index);
        // GET_VRING_BASE stops the ring: it needs a new kick before running again.
        if (v.kickFd >= 0) native.close(v.kickFd);
        v.kickFd = -1;
        const out = new Uint8Array(8);
        const dv = new DataView(out.buffer);
        dv.setUint32(0, s.index, true);
        dv.setUint32(4, v.base, true);
        this.reply(m.request, out);
        return true;
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        await this.setVringFd(m, name);
        return false;
      case Req.SET_VRING_ENABLE: {
        const s = decodeVringState(name, p);
        const v = this.vring(s.index, name);
        if (s.num > 1) throw new ProtocolError(`SET_VRING_ENABLE: value ${s.num}`);
        v.enabled = s.num === 1;
        if (!v.enabled && v.running) await this.stopVring(s.index);
        else await this.reconcile(s.index, v.enabled);
        return false;
      }
      case Req.GET_CONFIG: {
        const c = decodeConfig(name, p);
        const config = this.model.readConfig();
        const out = new Uint8Array(12 + c.size);
        const dv = new DataView(out.buffer);
        dv.setUint32(0, c.offset, true);
        dv.setUint32(4, c.size, true);
        dv.setUint32(8, c.flags, true);
        out.set(config.subarray(c.offset, c.offset + c.size), 12);
        this.reply(m.request, out);
        return true;
      }
      case Req.GET_INFLIGHT_FD: {
        expectSize(name, p, INFLIGHT_PAYLOAD);
        const numQueues = p.getUint16(16, true);
        const queueSize = p.getUint16(18, true);
        if (numQueues === 0 || numQueues > this.model.maxQueues || queueSize === 0 || queueSize > MAX_QUEUE_SIZE) {
          throw new ProtocolError(`GET_INFLIGHT_FD: ${numQueues} queues of ${queueSize}`);
        }
        // Every queue gets room for the larger (packed) layout: QEMU may ask before it sets the
        // features (vhost-user-scsi does), and a queue picks its layout when it starts.
        const size = inflightQueueBytes(queueSize, true) * numQueues;
        if (size > MAX_INFLIGHT_BYTES) throw new ProtocolError(`GET_INFLIGHT_FD: ${size} bytes is too large`);
        const fd = check('memfd_create', native.memfdCreate('vhostd-inflight', size));
        try {
          this.setInflight({ ...this.mapInflight(fd, size, 0), numQueues, queueSize });
          const out = new Uint8Array(INFLIGHT_PAYLOAD);
          const dv = new DataView(out.buffer);
          dv.setBigUint64(0, BigInt(size), true);
          dv.setBigUint64(8, 0n, true);
          dv.setUint16(16, numQueues, true);
          dv.setUint16(18, queueSize, true);
          this.reply(m.request, out, [fd]);
        } finally {
          native.close(fd);
        }
        return true;
      }
      case Req.SET_INFLIGHT_FD: {
        expectSize(name, p, INFLIGHT_PAYLOAD);
        const size = getU64(p, 0);
        const offset = getU64(p, 8);
        const numQueues = p.getUint16(16, true);
        const queueSize = p.getUint16(18, true);
        const fd = m.fds[0];
        try {
          if (size === 0 || size > MAX_INFLIGHT_BYTES || offset % 4096 !== 0 || size < inflightQueueBytes(queueSize, true) * numQueues) {
            throw new ProtocolError(`SET_INFLIGHT_FD: ${size} bytes at ${offset} for ${numQueues} queues of ${queueSize}`);
          }
          this.setInflight({ ...this.mapInflight(fd, size, offset), numQueues, queueSize });
        } finally {
          native.close(fd);
        }
        return false;
      }
      case Req.SET_CONFIG:
        decodeConfig(name, p);
        throw new ProtocolError('SET_CONFIG: the config space is read-only');
      default:
        throw new ProtocolError(`${name} is not supported`);
    }
  }

  private async setVringFd(m: Message, name: string): Promise<void> {
    expectSize(name, m.payload, 8);
    const raw = m.payload.getUint32(0, true);
    const index = raw & VRING_IDX_MASK;
    const v = this.vring(index, name);
    const noFd = (raw & VRING_NOFD_MASK) !== 0;
    // The message's fd becomes the vring's (takeFds) only once nothing before can fail, so that
    // handle() closes it on an early error and the vring closes it otherwise, never both.
    if (m.request === Req.SET_VRING_KICK) {
      if (noFd) throw new ProtocolError('SET_VRING_KICK without a file descriptor (polling the ring without kicks is not supported)');
      if (v.running) await this.stopVring(index);
      if (v.kickFd >= 0) native.close(v.kickFd);
      v.kickFd = takeFds(m)[0];
      // Without F_PROTOCOL_FEATURES a ring runs as soon as it is kicked.
      if (!hasFeature(this.features, VHOST_USER_F_PROTOCOL_FEATURES)) v.enabled = true;
      await this.reconcile(index);
    } else if (m.request === Req.SET_VRING_CALL) {
      const fd = noFd ? -1 : takeFds(m)[0];
      if (v.running) {
        try {
          await this.plane.setCallFd(index, fd);
        } catch (e) {
          // The queue keeps signalling the old fd; the new one was never installed.
          if (fd >= 0) native.close(fd);
          throw e;
        }
      }
      const old = v.callFd;
      v.callFd = fd;
      if (old >= 0) native.close(old);
    } else {
      if (v.errFd >= 0) native.close(v.errFd);
      v.errFd = noFd ? -1 : takeFds(m)[0];
    }
  }

  /** Starts a vring once it has everything it needs and is enabled. */
  private async reconcile(index: number, enabling = false): Promise<void> {
    const v = this.vrings[index];
    if (v.running || !v.enabled || v.kickFd < 0) return;
    if (v.num === 0 || v.addr === undefined) {
      // Front-ends may kick before addressing a ring; only enabling it is a definite error.
      if (!enabling) return;
      // A kicked, enabled ring that was never given a size or addresses cannot be served.
      throw new ProtocolError(`vring ${index} is kicked and enabled but was never set up (${v.num === 0 ? 'no size' : 'no addresses'})`);
    }
    const a = v.addr;
    const packed = hasFeature(this.features, VirtioFeature.RING_PACKED);
    const descGpa = this.uvaToGpa(a.descUserAddr, 16 * v.num, 'descriptor table');
    const availGpa = this.uvaToGpa(a.availUserAddr, packed ? 4 : 6 + 2 * v.num, packed ? 'driver event area' : 'avail ring');
    const usedGpa = this.uvaToGpa(a.usedUserAddr, packed ? 4 : 6 + 8 * v.num, packed ? 'device event area' : 'used ring');
    const cfg: QueueConfig = {
      qid: index,
      size: v.num,
      eventIdx: hasFeature(this.features, VirtioFeature.RING_EVENT_IDX),
      indirect: hasFeature(this.features, VirtioFeature.RING_INDIRECT_DESC),
      packed,
      lastAvail: v.base,
      addrs: { descGpa, availGpa, usedGpa },
      callFd: v.callFd,
      chainCapacity: this.model.chainCapacity,
      inflight: this.inflightFor(index, v.num, packed),
    };
    try {
      await this.plane.startQueue(cfg, v.kickFd);
      this.log.debug({ queue: index, size: v.num, base: v.base, packed }, 'vring started');
    } catch (e) {
      throw new ProtocolError(`vring ${index} cannot start: ${e instanceof Error ? e.message : String(e)}`);
    }
    v.running = true;
  }

  private mapInflight(fd: number, size: number, offset: number): { buffer: SharedArrayBuffer; mappingId: number } {
    try {
      const m = mmapShared(fd, size, offset);
      return { buffer: m.buffer, mappingId: m.id };
    } catch (e) {
      throw new ProtocolError(`cannot map the in-flight buffer: ${(e as Error).message}`);
    }
  }

  private setInflight(next: InflightBuffer | undefined): void {
    if (this.inflight) native.releaseMapping(this.inflight.mappingId);
    this.inflight = next;
  }

  /** This queue's in-flight region, if the front-end set one up that fits the ring. */
  private inflightFor(index: number, size: number, packed: boolean): QueueConfig['inflight'] {
    const inf = this.inflight;
    if (!inf) return undefined;
    if (index >= inf.numQueues || size > inf.queueSize) {
      this.log.warn({ queue: index, size }, 'in-flight buffer does not cover this queue; it is not tracked');
      return undefined;
    }
    return { buffer: inf.buffer, offset: index * inflightQueueBytes(inf.queueSize, true) };
  }

  private uvaToGpa(uva: number, len: number, what: string): number {
    for (const r of this.memory.shares()) {
      if (uva >= r.uva && uva + len <= r.uva + r.size) return r.gpa + (uva - r.uva);
    }
    throw new ProtocolError(`${what} at 0x${uva.toString(16)} (+${len}) is outside guest memory`);
  }

  /** A protocol violation with rings running: every queue of the device stops taking requests. */
  private async failDevice(reason: string): Promise<void> {
    this.log.error({ reason }, `device stopped: ${reason}`);
    await this.plane.fail();
  }

  private async stopVring(index: number): Promise<void> {
    const v = this.vrings[index];
    if (!v.running) return;
    v.running = false;
    v.base = await this.plane.stopQueue(index);
  }

  private async publishMemory(released: ReturnType<MemoryTable['clear']>): Promise<void> {
    try {
      await this.plane.setMemory(this.memory.shares());
    } finally {
      // Even when a reactor failed to switch (the connection then closes): a released mapping
      // stays addressable (anonymous memory), so this cannot fault a reactor, only leak if skipped.
      MemoryTable.release(released);
    }
  }

  private async reset(): Promise<void> {
    for (let i = 0; i < this.vrings.length; i++) await this.stopVring(i);
    for (const v of this.vrings) v.closeFds();
    this.vrings.forEach((_, i) => {
      this.vrings[i] = new Vring();
    });
    this.features = 0n;
  }

  /** Tears the session down after its connection closed. */
  async close(): Promise<void> {
    try {
      await this.plane.close();
    } finally {
      for (const v of this.vrings) v.closeFds();
      MemoryTable.release(this.memory.clear());
      this.setInflight(undefined);
    }
  }
}
