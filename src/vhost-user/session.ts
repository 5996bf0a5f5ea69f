// The back-end state machine of one vhost-user connection (QEMU docs/interop/vhost-user.rst):
// features, memory table and vring state, turned into queue start/stop on the data plane. Each
// request has a handler of its own (the table in the constructor); handle() validates the fds,
// dispatches, and sends the REPLY_ACK the front-end asked for.
import type { Logger } from 'pino';
import { MemoryTable } from '../memory/memory-table.js';
import { MemoryError } from '../memory/region.js';
import { native } from '../native/index.js';
import { VirtioFeature, bit, hasFeature } from '../virtio/features.js';
import type { QueueConfig } from '../virtio/queue-runner.js';
import type { VhostUserConnection, Message } from './connection.js';
import type { DataPlane } from './data-plane.js';
import type { DeviceModel } from './device-model.js';
import { DirtyLogBase } from './dirty-log-base.js';
import { InflightShm } from './inflight-shm.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  ProtocolError,
  ProtocolFeature,
  Req,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
  decodeConfig,
  decodeLogBase,
  decodeMemTable,
  decodeSingleRegion,
  decodeVringAddr,
  decodeVringState,
  encodeU64,
  expectSize,
  expectedFds,
  getU64Big,
  reqName,
} from './protocol.js';
import { Vring } from './vring.js';

export const MAX_MEM_SLOTS = 32;
const MAX_QUEUE_SIZE = 32768;

/** Protocol features every device gets from the session itself. */
const SESSION_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.LOG_SHMFD) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.RESET_DEVICE) |
  bit(ProtocolFeature.INFLIGHT_SHMFD) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS);

/** Requests whose front-end waits for a reply of its own (not a REPLY_ACK). */
const REPLYING = new Set<number>([
  Req.GET_FEATURES,
  Req.GET_PROTOCOL_FEATURES,
  Req.GET_VRING_BASE,
  Req.GET_QUEUE_NUM,
  Req.GET_CONFIG,
  Req.GET_MAX_MEM_SLOTS,
  Req.GET_INFLIGHT_FD,
]);

/**
 * Takes ownership of a message's fds: handle() closes whatever is still in m.fds when dispatch
 * fails, so code that passes fds on (to the memory table, a vring) must take them first.
 */
function takeFds(m: Message): number[] {
  return m.fds.splice(0);
}

/** A request handler: returns true when it sent its own reply. */
type Handler = (m: Message, name: string) => boolean | Promise<boolean>;

export class VhostUserSession {
  private features = 0n;
  private protocolFeatures = 0n;
  private readonly memory = new MemoryTable(MAX_MEM_SLOTS);
  private readonly inflight: InflightShm;
  private readonly log: DirtyLogBase;
  private readonly vrings: Vring[];
  private readonly handlers: ReadonlyMap<number, Handler>;

  constructor(
    private readonly conn: VhostUserConnection,
    private readonly model: DeviceModel,
    private readonly plane: DataPlane,
    private readonly logger: Logger,
  ) {
    this.vrings = Array.from({ length: model.maxQueues }, () => new Vring());
    this.inflight = new InflightShm(model.maxQueues, MAX_QUEUE_SIZE, logger);
    this.log = new DirtyLogBase(plane, logger);
    const noReply = (fn: (m: Message, name: string) => unknown): Handler => async (m, name) => {
      await fn(m, name);
      return false;
    };
    this.handlers = new Map<number, Handler>([
      [Req.GET_FEATURES, (m, name) => this.replyU64(m, name, this.offeredFeatures)],
      [Req.SET_FEATURES, noReply((m, name) => this.setFeatures(m, name))],
      [Req.GET_PROTOCOL_FEATURES, (m, name) => this.replyU64(m, name, this.offeredProtocolFeatures)],
      [Req.SET_PROTOCOL_FEATURES, noReply((m, name) => this.setProtocolFeatures(m, name))],
      [Req.SET_OWNER, () => false],
      [Req.RESET_OWNER, noReply(() => this.reset())],
      [Req.RESET_DEVICE, noReply(() => this.reset())],
      [Req.GET_QUEUE_NUM, (m) => this.replyU64(m, undefined, this.model.maxQueues)],
      [Req.GET_MAX_MEM_SLOTS, (m) => this.replyU64(m, undefined, MAX_MEM_SLOTS)],
      [Req.SET_MEM_TABLE, noReply((m) => this.setMemTable(m))],
      [Req.SET_LOG_BASE, (m, name) => this.setLogBase(m, name)],
      [Req.ADD_MEM_REG, noReply((m, name) => this.addMemRegion(m, name))],
      [Req.REM_MEM_REG, noReply((m, name) => this.removeMemRegion(m, name))],
      [Req.SET_VRING_NUM, noReply((m, name) => this.setVringNum(m, name))],
      [Req.SET_VRING_BASE, noReply((m, name) => this.setVringBase(m, name))],
      [Req.SET_VRING_ADDR, noReply((m, name) => this.setVringAddr(m, name))],
      [Req.GET_VRING_BASE, (m, name) => this.getVringBase(m, name)],
      [Req.SET_VRING_KICK, noReply((m, name) => this.setVringFd(m, name))],
      [Req.SET_VRING_CALL, noReply((m, name) => this.setVringFd(m, name))],
      [Req.SET_VRING_ERR, noReply((m, name) => this.setVringFd(m, name))],
      [Req.SET_VRING_ENABLE, noReply((m, name) => this.setVringEnable(m, name))],
      [Req.GET_CONFIG, (m, name) => this.getConfig(m, name)],
      [Req.SET_CONFIG, (m, name) => this.setConfig(m, name)],
      [Req.GET_INFLIGHT_FD, (m) => this.getInflightFd(m)],
      [Req.SET_INFLIGHT_FD, noReply((m) => this.inflight.adopt(m.payload, takeFds(m)[0]))],
    ]);
  }

  private get offeredFeatures(): bigint {
    // LOG_ALL: every device can be live-migrated (dirty pages logged while QEMU asks).
    return this.model.features | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VHOST_F_LOG_ALL);
  }

  private get offeredProtocolFeatures(): bigint {
    return SESSION_PROTOCOL_FEATURES | this.model.protocolFeatures;
  }

  private get replyAck(): boolean {
    return (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  async handle(m: Message): Promise<void> {
    const name = reqName[m.request] ?? `request ${m.request}`;
    if (this.logger.isLevelEnabled('debug')) {
      const arg = m.payload.byteLength >= 8 ? m.payload.getBigUint64(0, true).toString(16) : undefined;
      this.logger.debug({ request: name, size: m.payload.byteLength, fds: m.fds.length, arg }, 'vhost-user message');
    }
    let replied = false;
    let failed = false;
    try {
      const fdRange = expectedFds(m.request, m.payload);
      if (m.fds.length < fdRange.min || m.fds.length > fdRange.max) {
        throw new ProtocolError(`${name} came with ${m.fds.length} file descriptors, expected ${fdRange.min === fdRange.max ? fdRange.min : `${fdRange.min}-${fdRange.max}`}`);
      }
      const handler = this.handlers.get(m.request);
      if (!handler) throw new ProtocolError(`${name} is not supported`);
      replied = await handler(m, name);
    } catch (e) {
      failed = true;
      for (const fd of m.fds) native.close(fd);
      if (!(e instanceof ProtocolError || e instanceof MemoryError)) throw e;
      this.logger.error({ request: name }, `rejected vhost-user message: ${e.message}`);
      if (this.expectsReply(m.request)) {
        // A reply the front-end waits for cannot be faked; drop the connection instead.
        throw new Error(e.message);
      }
    }
    if (!replied && this.replyAck && m.flags & FLAG_NEED_REPLY) this.reply(m.request, encodeU64(failed ? 1 : 0));
  }

  /** With LOG_SHMFD, QEMU blocks on SET_LOG_BASE until a message of the same code comes back. */
  private expectsReply(request: number): boolean {
    return REPLYING.has(request) || (request === Req.SET_LOG_BASE && this.logShmfd);
  }

  private get logShmfd(): boolean {
    return (this.protocolFeatures & bit(ProtocolFeature.LOG_SHMFD)) !== 0n;
  }

  /** Whether the device marks the dirty log now (LOG_ALL negotiated and a log base given). */
  get dirtyLogging(): boolean {
    return this.log.active;
  }

  private reply(request: number, payload: Uint8Array, fds: number[] = []): void {
    this.conn.send(request, FLAG_VERSION | FLAG_REPLY, payload, fds);
  }

  /** Replies with one u64 (after checking the request carried no payload, when `name` is given). */
  private replyU64(m: Message, name: string | undefined, value: bigint | number): boolean {
    if (name !== undefined) expectSize(name, m.payload, 0);
    this.reply(m.request, encodeU64(value));
    return true;
  }

  private vring(index: number, name: string): Vring {
    if (index >= this.vrings.length) throw new ProtocolError(`${name}: vring ${index} does not exist (${this.vrings.length} queues)`);
    return this.vrings[index];
  }

  // ---- features ----------------------------------------------------------------------------------

  private async setFeatures(m: Message, name: string): Promise<void> {
    expectSize(name, m.payload, 8);
    const f = getU64Big(m.payload, 0);
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
    await this.log.setLogAll(hasFeature(f, VHOST_F_LOG_ALL));
  }

  private setProtocolFeatures(m: Message, name: string): void {
    expectSize(name, m.payload, 8);
    const f = getU64Big(m.payload, 0);
    if ((f & ~this.offeredProtocolFeatures) !== 0n) throw new ProtocolError(`SET_PROTOCOL_FEATURES: 0x${f.toString(16)} has bits never offered`);
    this.protocolFeatures = f;
  }

  // ---- memory ------------------------------------------------------------------------------------

  private async setMemTable(m: Message): Promise<void> {
    const descs = decodeMemTable(m.payload, MAX_MEM_SLOTS);
    const old = this.memory.replace(descs, takeFds(m));
    await this.publishMemory(old);
  }

  private async addMemRegion(m: Message, name: string): Promise<void> {
    const desc = decodeSingleRegion(name, m.payload);
    this.memory.add(desc, takeFds(m)[0]);
    await this.publishMemory([]);
  }

  private async removeMemRegion(m: Message, name: string): Promise<void> {
    for (const fd of takeFds(m)) native.close(fd);
    const removed = this.memory.remove(decodeSingleRegion(name, m.payload));
    await this.publishMemory([removed]);
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

  private uvaToGpa(uva: number, len: number, what: string): number {
    for (const r of this.memory.shares()) {
      if (uva >= r.uva && uva + len <= r.uva + r.size) return r.gpa + (uva - r.uva);
    }
    throw new ProtocolError(`${what} at 0x${uva.toString(16)} (+${len}) is outside guest memory`);
  }

  // ---- dirty log (live migration) ----------------------------------------------------------------

  private async setLogBase(m: Message, name: string): Promise<boolean> {
    if (!this.logShmfd) throw new ProtocolError(`${name} before LOG_SHMFD was negotiated`);
    const fds = takeFds(m);
    if (fds.length === 0) throw new ProtocolError(`${name} without a file descriptor`);
    await this.log.setBase(decodeLogBase(name, m.payload), fds[0]);
    // Any payload will do; libvhost-user answers 8 bytes.
    this.reply(m.request, encodeU64(0));
    return true;
  }

  // ---- vrings ------------------------------------------------------------------------------------

  private setVringNum(m: Message, name: string): void {
    const s = decodeVringState(name, m.payload);
    const v = this.vring(s.index, name);
    // Split rings need a power of two; packed rings any size up to 32768.
    const packed = hasFeature(this.features, VirtioFeature.RING_PACKED);
    if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (!packed && (s.num & (s.num - 1)) !== 0)) {
      throw new ProtocolError(`SET_VRING_NUM: size ${s.num} is not ${packed ? 'between 1 and' : 'a power of two up to'} ${MAX_QUEUE_SIZE}`);
    }
    if (v.running) throw new ProtocolError(`SET_VRING_NUM: vring ${s.index} is running`);
    v.num = s.num;
  }

  private setVringBase(m: Message, name: string): void {
    const s = decodeVringState(name, m.payload);
    const v = this.vring(s.index, name);
    if (v.running) throw new ProtocolError(`SET_VRING_BASE: vring ${s.index} is running`);
    // Packed rings carry avail index + wrap in the low 16 bits and used index + wrap in the high 16.
    if (s.num > 0xffff && !hasFeature(this.features, VirtioFeature.RING_PACKED)) {
      throw new ProtocolError(`SET_VRING_BASE: base ${s.num} beyond 16 bits`);
    }
    v.base = s.num;
  }

  private async setVringAddr(m: Message, name: string): Promise<void> {
    const a = decodeVringAddr(m.payload);
    const v = this.vring(a.index, name);
    const old = v.addr;
    if (v.running && old !== undefined && old.descUserAddr === a.descUserAddr && old.usedUserAddr === a.usedUserAddr && old.availUserAddr === a.availUserAddr) {
      // QEMU re-sends a running ring's addresses to turn VHOST_VRING_F_LOG on or off: the ring
      // stays as it is (the device logs its used ring whenever LOG_ALL is on).
      v.addr = a;
      return;
    }
    if (v.running) {
      // Re-addressing a live ring (QEMU does it when logging starts): restart it.
      await this.stopVring(a.index);
      v.addr = a;
      await this.reconcile(a.index);
    } else {
      v.addr = a;
    }
  }

  private async getVringBase(m: Message, name: string): Promise<boolean> {
    const s = decodeVringState(name, m.payload);
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

  private async setVringEnable(m: Message, name: string): Promise<void> {
    const s = decodeVringState(name, m.payload);
    const v = this.vring(s.index, name);
    if (s.num > 1) throw new ProtocolError(`SET_VRING_ENABLE: value ${s.num}`);
    v.enabled = s.num === 1;
    if (!v.enabled && v.running) await this.stopVring(s.index);
    else await this.reconcile(s.index, v.enabled);
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
      inflight: this.inflight.regionFor(index, v.num),
    };
    try {
      await this.plane.startQueue(cfg, v.kickFd);
      this.logger.debug({ queue: index, size: v.num, base: v.base, packed }, 'vring started');
    } catch (e) {
      throw new ProtocolError(`vring ${index} cannot start: ${e instanceof Error ? e.message : String(e)}`);
    }
    v.running = true;
  }

  private async stopVring(index: number): Promise<void> {
    const v = this.vrings[index];
    if (!v.running) return;
    v.running = false;
    v.base = await this.plane.stopQueue(index);
  }

  // ---- config space and in-flight buffer ---------------------------------------------------------

  private getConfig(m: Message, name: string): boolean {
    const c = decodeConfig(name, m.payload);
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

  private setConfig(m: Message, name: string): never {
    decodeConfig(name, m.payload);
    throw new ProtocolError('SET_CONFIG: the config space is read-only');
  }

  private getInflightFd(m: Message): boolean {
    const { payload, fd } = this.inflight.create(m.payload);
    try {
      this.reply(m.request, payload, [fd]);
    } finally {
      native.close(fd);
    }
    return true;
  }

  // ---- device lifecycle --------------------------------------------------------------------------

  /** A protocol violation with rings running: every queue of the device stops taking requests. */
  private async failDevice(reason: string): Promise<void> {
    this.logger.error({ reason }, `device stopped: ${reason}`);
    await this.plane.fail();
  }

  private async reset(): Promise<void> {
    for (let i = 0; i < this.vrings.length; i++) await this.stopVring(i);
    for (const v of this.vrings) v.closeFds();
    this.vrings.forEach((_, i) => {
      this.vrings[i] = new Vring();
    });
    this.features = 0n;
    await this.log.setLogAll(false);
  }

  /** Tears the session down after its connection closed. */
  async close(): Promise<void> {
    try {
      await this.plane.close();
    } finally {
      for (const v of this.vrings) v.closeFds();
      MemoryTable.release(this.memory.clear());
      this.inflight.release();
      this.log.release();
    }
  }
}
