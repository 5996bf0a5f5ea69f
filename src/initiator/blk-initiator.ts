// A userspace vhost-user-blk initiator: plays QEMU and the guest driver at once, over memfd
// memory and split rings. The tool the hostile-input tests (and later the bench) drive targets with.
import { BlkFeature, BlkReqType } from '../devices/blk/blk-spec.js';
import { check, type FdWatchHandle, native } from '../native/index.js';
import { VirtioFeature, bit } from '../virtio/features.js';
import { ProtocolFeature, Req, VHOST_USER_F_PROTOCOL_FEATURES, encodeU64 } from '../vhost-user/protocol.js';
import { DriverMemory } from './driver-memory.js';
import { DriverRing } from './driver-ring.js';
import { VhostUserFrontend } from './frontend.js';

export interface BlkInitiatorOptions {
  queues?: number;
  queueSize?: number;
  memBytes?: number;
  /** Largest data transfer of one request. */
  maxIoBytes?: number;
}

export interface BlkResult {
  status: number;
  /** Bytes the target reported written into device-writable buffers. */
  usedLen: number;
  data: Uint8Array;
  /** Guest-physical addresses of the request's data buffer and status byte. */
  dataGpa: number;
  statusGpa: number;
}

interface Slot {
  hdr: number;
  data: number;
  status: number;
}

interface Pending {
  slot: Slot;
  len: number;
  resolve: (r: BlkResult) => void;
}

export class BlkQueue {
  readonly ring: DriverRing;
  readonly kickFd: number;
  readonly callFd: number;
  private readonly watch: FdWatchHandle;
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly reaped: Array<{ id: number; len: number }> = [];
  /** Call-eventfd wake-ups seen (interrupts the target raised). */
  interrupts = 0;

  constructor(
    readonly mem: DriverMemory,
    readonly index: number,
    size: number,
    maxIo: number,
  ) {
    this.ring = new DriverRing(mem, size);
    for (let i = 0; i < size / 2; i++) this.slots.push({ hdr: mem.alloc(16, 16), data: mem.alloc(maxIo, 4096), status: mem.alloc(1, 1) });
    this.kickFd = check('eventfd', native.eventfd(0));
    this.callFd = check('eventfd', native.eventfd(0));
    this.watch = new native.FdWatch(this.callFd, () => {
      const n = native.eventfdRead(this.callFd);
      if (n > 0) this.interrupts += n;
      this.reap();
    });
    this.watch.start();
  }

  get inFlight(): number {
    return this.pending.size;
  }

  reap(): void {
    this.reaped.length = 0;
    this.ring.reapUsed(this.reaped);
    for (const { id, len } of this.reaped) {
      const p = this.pending.get(id);
      if (!p) continue;
      this.pending.delete(id);
      this.slots.push(p.slot);
      const v = this.mem.view;
      p.resolve({
        status: v.getUint8(this.mem.off(p.slot.status)),
        usedLen: len,
        data: this.mem.u8.slice(this.mem.off(p.slot.data), this.mem.off(p.slot.data) + p.len),
        dataGpa: p.slot.data,
        statusGpa: p.slot.status,
      });
    }
  }

  /** Submits one request; `out` is written for OUT-direction types, `inLen` bytes read back otherwise. */
  submit(type: number, sector: number, out: Uint8Array | undefined, inLen: number): Promise<BlkResult> {
    const slot = this.slots.pop();
    if (!slot) return Promise.reject(new Error('queue full'));
    const v = this.mem.view;
    v.setUint32(this.mem.off(slot.hdr), type, true);
    v.setUint32(this.mem.off(slot.hdr) + 4, 0, true);
    v.setBigUint64(this.mem.off(slot.hdr) + 8, BigInt(sector), true);
    v.setUint8(this.mem.off(slot.status), 0xff);
    const bufs = [{ gpa: slot.hdr, len: 16, write: false }];
    if (out) {
      this.mem.u8.set(out, this.mem.off(slot.data));
      bufs.push({ gpa: slot.data, len: out.length, write: false });
    }
    if (inLen > 0) bufs.push({ gpa: slot.data, len: inLen, write: true });
    bufs.push({ gpa: slot.status, len: 1, write: true });
    const head = this.ring.addChain(bufs);
    if (head < 0) {
      this.slots.push(slot);
      return Promise.reject(new Error('no free descriptors'));
    }
    return new Promise((resolve) => {
      this.pending.set(head, { slot, len: inLen, resolve });
      this.ring.publish();
      native.eventfdWrite(this.kickFd);
    });
  }

  close(): void {
    this.watch.close();
    native.close(this.kickFd);
    native.close(this.callFd);
  }
}

/** What negotiate() asks for beyond QEMU's baseline (VERSION_1, PROTOCOL_FEATURES). */
export interface NegotiateOptions {
  /** Negotiate VIRTIO_RING_F_EVENT_IDX when offered (default false, as before). */
  eventIdx?: boolean;
  /** Negotiate VIRTIO_RING_F_INDIRECT_DESC when offered (default true). */
  indirect?: boolean;
  /** Fail unless VIRTIO_F_VERSION_1 is offered. */
  requireVersion1?: boolean;
  /** Negotiate VIRTIO_F_RING_PACKED when offered (default false). */
  packed?: boolean;
  /** Negotiate VHOST_USER_PROTOCOL_F_LOG_SHMFD when offered, as QEMU does for migration (default false). */
  logShmfd?: boolean;
  /** Negotiate VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD when offered, as QEMU's vhost-user-blk does (default false). */
  inflight?: boolean;
  /** Back the driver memory with a file on this hugetlbfs mount instead of a memfd (SPDK's target needs hugepages). */
  hugetlbfs?: string;
  /**
   * Bytes of device config to ask for with GET_CONFIG (default 60, QEMU's virtio_blk_config).
   * SPDK's virtio-user initiator asks for 256 and insists on a 256-byte reply.
   */
  configSize?: number;
}

/** Guest-physical addresses of one split (or packed) ring, as SET_VRING_ADDR carries them. */
export interface VringGpas {
  desc: number;
  avail: number;
  used: number;
}

export class BlkInitiator {
  readonly queues: BlkQueue[] = [];
  capacitySectors = 0;
  blockSize = 512;
  features = 0n;
  offeredFeatures = 0n;
  protocolFeatures = 0n;
  offeredProtocolFeatures = 0n;
  /** GET_QUEUE_NUM (when MQ was negotiated), else undefined. */
  maxQueues: number | undefined;
  /** virtio_blk_config.num_queues (when VIRTIO_BLK_F_MQ was negotiated), else undefined. */
  configNumQueues: number | undefined;
  /** Length of the GET_CONFIG reply payload (12-byte header + config bytes). */
  configReplyBytes = 0;

  private constructor(
    readonly fe: VhostUserFrontend,
    readonly mem: DriverMemory,
  ) {}

  /** Connects and negotiates like QEMU's vhost-user-blk, without starting queues. */
  static async negotiate(path: string, memBytes = 16 << 20, opts: NegotiateOptions = {}): Promise<BlkInitiator> {
    const fe = VhostUserFrontend.connect(path);
    const init = new BlkInitiator(fe, new DriverMemory(memBytes, 0, opts.hugetlbfs));
    try {
      const offered = (await fe.call(Req.GET_FEATURES)).getBigUint64(0, true);
      init.offeredFeatures = offered;
      if (opts.requireVersion1 && (offered & bit(VirtioFeature.VERSION_1)) === 0n) {
        throw new Error('the back-end does not offer VIRTIO_F_VERSION_1');
      }
      let want = bit(VirtioFeature.VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
      if (opts.indirect ?? true) want |= bit(VirtioFeature.RING_INDIRECT_DESC);
      if (opts.eventIdx) want |= bit(VirtioFeature.RING_EVENT_IDX);
      if (opts.packed) want |= bit(VirtioFeature.RING_PACKED);
      init.features = offered & (want | 0x7fffn);
      if ((offered & bit(VHOST_USER_F_PROTOCOL_FEATURES)) === 0n) {
        throw new Error('the back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES');
      }
      const proto = (await fe.call(Req.GET_PROTOCOL_FEATURES)).getBigUint64(0, true);
      init.offeredProtocolFeatures = proto;
      let wantProto = bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.MQ) | bit(ProtocolFeature.CONFIG);
      if (opts.logShmfd) wantProto |= bit(ProtocolFeature.LOG_SHMFD);
      if (opts.inflight) wantProto |= bit(ProtocolFeature.INFLIGHT_SHMFD);
      init.protocolFeatures = proto & wantProto;
      fe.send(Req.SET_PROTOCOL_FEATURES, encodeU64(init.protocolFeatures));
      if (init.protocolFeatures & bit(ProtocolFeature.MQ)) {
        init.maxQueues = Number((await fe.call(Req.GET_QUEUE_NUM)).getBigUint64(0, true));
      }
      fe.send(Req.SET_OWNER);
      const configSize = opts.configSize ?? 60;
      const cfgReq = new Uint8Array(12 + configSize);
      new DataView(cfgReq.buffer).setUint32(4, configSize, true);
      const cfg = await fe.call(Req.GET_CONFIG, cfgReq);
      init.configReplyBytes = cfg.byteLength;
      init.capacitySectors = Number(cfg.getBigUint64(12, true));
      init.blockSize = cfg.getUint32(12 + 20, true);
      // virtio_blk_config.num_queues (offset 34) is valid with VIRTIO_BLK_F_MQ.
      if (init.features & bit(BlkFeature.MQ)) init.configNumQueues = cfg.getUint16(12 + 34, true);
      await init.ack(Req.SET_FEATURES, encodeU64(init.features));
    } catch (e) {
      init.close();
      throw e;
    }
    return init;
  }

  /** Whether `feature` (a virtio feature bit number) was negotiated. */
  has(feature: number): boolean {
    return (this.features & bit(feature)) !== 0n;
  }

  static async connect(path: string, opts: BlkInitiatorOptions = {}): Promise<BlkInitiator> {
    const init = await BlkInitiator.negotiate(path, opts.memBytes);
    await init.setMemTable();
    for (let q = 0; q < (opts.queues ?? 1); q++) await init.startQueue(q, opts.queueSize ?? 64, opts.maxIoBytes ?? 65536);
    return init;
  }

  /** Sends with NEED_REPLY and throws on a non-zero ack. */
  async ack(req: number, payload?: Uint8Array, fds: number[] = []): Promise<void> {
    const rc = await this.fe.callAck(req, payload, fds);
    if (rc !== 0n) throw new Error(`request ${req} failed with ${rc}`);
  }

  async setMemTable(): Promise<void> {
    const p = new Uint8Array(8 + 32);
    const v = new DataView(p.buffer);
    const r = this.mem.region();
    v.setUint32(0, 1, true);
    v.setBigUint64(8, BigInt(r.guestPhysAddr), true);
    v.setBigUint64(16, BigInt(r.memorySize), true);
    v.setBigUint64(24, BigInt(r.userspaceAddr), true);
    v.setBigUint64(32, BigInt(r.mmapOffset), true);
    await this.ack(Req.SET_MEM_TABLE, p, [this.mem.fd]);
  }

  /**
   * SET_INFLIGHT_FD with the caller's buffer (`size` bytes of memfd `fd`): what QEMU sends a
   * restarted back-end when it reconnects, without GET_INFLIGHT_FD first.
   */
  async setInflightFd(fd: number, size: number, numQueues: number, queueSize: number): Promise<void> {
    const p = new Uint8Array(24);
    const v = new DataView(p.buffer);
    v.setBigUint64(0, BigInt(size), true);
    v.setBigUint64(8, 0n, true);
    v.setUint16(16, numQueues, true);
    v.setUint16(18, queueSize, true);
    // vhost-user.rst: SET_INFLIGHT_FD has no reply unless REPLY_ACK asks for one.
    await this.ack(Req.SET_INFLIGHT_FD, p, [fd]);
  }

  /** Sets up and enables queue `q` (SET_VRING_NUM/BASE/ADDR/KICK/CALL/ENABLE). */
  async startQueue(q: number, size: number, maxIo: number, ringAddrs?: { desc: number; avail: number; used: number }): Promise<BlkQueue> {
    const queue = new BlkQueue(this.mem, q, size, maxIo);
    const uvas = ringAddrs ?? {
      desc: this.mem.gpaToUva(queue.ring.descGpa),
      avail: this.mem.gpaToUva(queue.ring.availGpa),
      used: this.mem.gpaToUva(queue.ring.usedGpa),
    };
    await this.setupVring(q, size, uvas, queue.kickFd, queue.callFd, {
      beforeEnable: () => {
        this.queues[q] = queue;
      },
    });
    return queue;
  }

  /**
   * The vhost-user part of starting vring `q` whose rings the caller laid out itself:
   * SET_VRING_NUM/BASE/ADDR (`uvas` are front-end virtual addresses, see DriverMemory.gpaToUva),
   * SET_VRING_CALL/KICK with the caller's eventfds, then SET_VRING_ENABLE. `beforeEnable` runs
   * just before the ring is enabled (the back-end may process it right after). `base` is the
   * SET_VRING_BASE value (default 0; packed rings: PACKED_INITIAL_BASE, wrap counters at 1).
   */
  async setupVring(q: number, size: number, uvas: VringGpas, kickFd: number, callFd: number, opts: { beforeEnable?: () => void; base?: number } = {}): Promise<void> {
    const state = (num: number) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setUint32(0, q, true);
      new DataView(b.buffer).setUint32(4, num, true);
      return b;
    };
    await this.ack(Req.SET_VRING_NUM, state(size));
    await this.ack(Req.SET_VRING_BASE, state(opts.base ?? 0));
    const a = new Uint8Array(40);
    const av = new DataView(a.buffer);
    av.setUint32(0, q, true);
    av.setBigUint64(8, BigInt(uvas.desc), true);
    av.setBigUint64(16, BigInt(uvas.used), true);
    av.setBigUint64(24, BigInt(uvas.avail), true);
    await this.ack(Req.SET_VRING_ADDR, a);
    await this.ack(Req.SET_VRING_CALL, encodeU64(q), [callFd]);
    await this.ack(Req.SET_VRING_KICK, encodeU64(q), [kickFd]);
    opts.beforeEnable?.();
    await this.ack(Req.SET_VRING_ENABLE, state(1));
  }

  read(sector: number, len: number, q = 0): Promise<BlkResult> {
    return this.queues[q].submit(BlkReqType.IN, sector, undefined, len);
  }

  write(sector: number, data: Uint8Array, q = 0): Promise<BlkResult> {
    return this.queues[q].submit(BlkReqType.OUT, sector, data, 0);
  }

  close(): void {
    for (const q of this.queues) q?.close();
    this.fe.close();
    this.mem.close();
  }
}
