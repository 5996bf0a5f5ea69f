// In-process harness for fuzzing VhostUserSession: a recording connection, a fake data plane that
// enforces the DataPlane contract (and which fds a running queue uses), a ledger of the file
// descriptors handed to the session, and fast-check arbitraries for vhost-user message sequences.
import fc from 'fast-check';
import pino from 'pino';
import { MallocBdev } from '../../../src/bdev/modules/malloc/malloc.js';
import { BlkModel } from '../../../src/devices/blk/blk-model.js';
import type { RegionShare } from '../../../src/memory/region.js';
import { native } from '../../../src/native/index.js';
import type { DirtyLogShare } from '../../../src/memory/dirty-log.js';
import type { DataPlane } from '../../../src/vhost-user/data-plane.js';
import type { Message, VhostUserConnection } from '../../../src/vhost-user/connection.js';
import { FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, ProtocolFeature, Req, VHOST_USER_F_PROTOCOL_FEATURES } from '../../../src/vhost-user/protocol.js';
import { VhostUserSession } from '../../../src/vhost-user/session.js';
import type { QueueConfig } from '../../../src/virtio/queue-runner.js';
import { openSpecOf } from '../../unit/helpers/open-spec.js';

export const MEMFD_SIZE = 64 * 1024;
export const UVA_BASE = 0x7f0000000000;

/**
 * Tracks descriptors given to the code under test: each must be closed exactly once, and never
 * while a running queue uses it. All fds of a case are created before it runs, so the kernel
 * cannot hand a closed number out again mid-case and hide a double close.
 */
export class FdLedger {
  readonly owned = new Set<number>();
  readonly errors: string[] = [];
  /** Guest memory mappings made and not yet released (releaseMapping). */
  readonly mappings = new Set<number>();
  inUse: (fd: number) => string | undefined = () => undefined;
  private readonly realClose = native.close;
  private readonly realMmap = native.mmapShared;
  private readonly realRelease = native.releaseMapping;

  install(): void {
    native.mmapShared = (fd: number, length: number, offset: number) => {
      const r = this.realMmap(fd, length, offset);
      if (typeof r !== 'number') this.mappings.add(r.id);
      return r;
    };
    native.releaseMapping = (id: number) => {
      if (!this.mappings.delete(id)) this.errors.push(`releaseMapping(${id}): not a live mapping (released twice?)`);
      return this.realRelease(id);
    };
    native.close = (fd: number) => {
      if (!this.owned.has(fd)) {
        this.errors.push(`close(${fd}): not an fd the session owns (closed twice, or never given)`);
        return -9; // -EBADF; do not touch an fd number that may belong to someone else now
      }
      const user = this.inUse(fd);
      if (user) this.errors.push(`close(${fd}) while ${user} uses it`);
      this.owned.delete(fd);
      return this.realClose(fd);
    };
  }

  uninstall(): void {
    native.close = this.realClose;
    native.mmapShared = this.realMmap;
    native.releaseMapping = this.realRelease;
  }

  eventfd(): number {
    const fd = native.eventfd(0);
    if (fd < 0) throw new Error(`eventfd: ${fd}`);
    this.owned.add(fd);
    return fd;
  }

  memfd(): number {
    const fd = native.memfdCreate('fuzz', MEMFD_SIZE);
    if (fd < 0) throw new Error(`memfd_create: ${fd}`);
    this.owned.add(fd);
    return fd;
  }

  /** Closes what the session leaked; returns how many. */
  reapLeaks(): number {
    const n = this.owned.size;
    for (const fd of this.owned) this.realClose(fd);
    this.owned.clear();
    return n;
  }
}

/** The DataPlane contract, with injected reactor failures. */
export class FakePlane implements DataPlane {
  readonly running = new Map<number, { lastAvail: number; kickFd: number; callFd: number }>();
  regions: RegionShare[] = [];
  private step = 0;
  readonly errors: string[] = [];

  constructor(
    private readonly failures: boolean[],
    private readonly ledger: FdLedger,
  ) {
    ledger.inUse = (fd) => {
      for (const [qid, q] of this.running) if (q.kickFd === fd || q.callFd === fd) return `running queue ${qid}`;
      return undefined;
    };
  }

  private maybeFail(what: string): void {
    if (this.failures.length > 0 && this.failures[this.step++ % this.failures.length]) throw new Error(`reactor: ${what} failed`);
  }

  private checkFd(what: string, fd: number): void {
    if (fd >= 0 && !this.ledger.owned.has(fd)) this.errors.push(`${what}: fd ${fd} was already closed`);
  }

  async setMemory(regions: RegionShare[]): Promise<void> {
    this.maybeFail('memory');
    this.regions = regions;
  }

  async startQueue(cfg: QueueConfig, kickFd: number): Promise<void> {
    if (this.running.has(cfg.qid)) throw new Error(`queue ${cfg.qid} is already running`);
    this.checkFd(`startQueue(${cfg.qid}) kick`, kickFd);
    this.checkFd(`startQueue(${cfg.qid}) call`, cfg.callFd);
    if (kickFd < 0) this.errors.push(`startQueue(${cfg.qid}) without a kick fd`);
    this.maybeFail('startQueue');
    this.running.set(cfg.qid, { lastAvail: cfg.lastAvail, kickFd, callFd: cfg.callFd });
  }

  isRunning(qid: number): boolean {
    return this.running.has(qid);
  }

  async stopQueue(qid: number): Promise<number> {
    const q = this.running.get(qid);
    if (!q) throw new Error(`queue ${qid} is not running`);
    this.running.delete(qid);
    return q.lastAvail;
  }

  /** Device stopped after a protocol violation: the queues stay (and are stopped later) but serve nothing. */
  async fail(): Promise<void> {
    if (this.running.size === 0) this.errors.push('fail() without a running queue');
  }

  /** The dirty log as last set (undefined: not logging); its buffer must stay readable while set. */
  dirtyLog: DirtyLogShare | undefined;

  async setDirtyLog(log: DirtyLogShare | undefined): Promise<void> {
    this.maybeFail('dirtyLog');
    if (log !== undefined && log.base + log.size > log.buffer.byteLength) this.errors.push(`dirty log ${log.base}+${log.size} beyond its ${log.buffer.byteLength}-byte mapping`);
    this.dirtyLog = log;
  }

  async setCallFd(qid: number, fd: number): Promise<void> {
    const q = this.running.get(qid);
    if (!q) return;
    this.checkFd(`setCallFd(${qid})`, fd);
    this.maybeFail('setCall');
    q.callFd = fd;
  }

  async close(): Promise<void> {
    this.running.clear();
  }
}

export interface Sent {
  request: number;
  flags: number;
  payload: Uint8Array;
}

export function makeSession(plane: FakePlane, opts: { readonly?: boolean; packedRing?: boolean } = {}) {
  const sent: Sent[] = [];
  const conn = {
    send(request: number, flags: number, payload: Uint8Array) {
      sent.push({ request, flags, payload: payload.slice() });
    },
  } as unknown as VhostUserConnection;
  const bdev = new MallocBdev('fuzz', 512, 1 << 20);
  const model = new BlkModel('fuzz', bdev, openSpecOf(bdev), { readonly: opts.readonly ?? false, packedRing: opts.packedRing ?? false });
  const session = new VhostUserSession(conn, model, plane, pino({ level: 'silent' }));
  return { session, sent, model };
}

// ---- arbitraries ---------------------------------------------------------------------------

/** How a message's fds are made: before the case runs (see FdLedger). */
export type FdKind = 'eventfd' | 'memfd';

export interface MsgSpec {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: FdKind[];
}

const u32 = fc.oneof(fc.constantFrom(0, 1, 2, 3, 0xff, 0x100, 0x101, 0xffff, 0x10000, 0x7fffffff, 0xffffffff), fc.nat(), fc.integer({ min: 0, max: 0xffffffff }));
const small = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 3 }) }, { weight: 1, arbitrary: u32 });
const u64 = fc.oneof(
  fc.constantFrom(0n, 1n, 4096n, BigInt(MEMFD_SIZE), BigInt(UVA_BASE), (1n << 53n) - 1n, 1n << 53n, (1n << 64n) - 1n),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);
const addr = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 15 }).map((k) => BigInt(UVA_BASE + k * 4096)) },
  { weight: 1, arbitrary: u64 },
);
const gpaArb = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 3 }).map((k) => BigInt(k * MEMFD_SIZE)) }, { weight: 1, arbitrary: u64 });
const sizeArb = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(4096n, BigInt(MEMFD_SIZE), BigInt(MEMFD_SIZE / 2)) }, { weight: 1, arbitrary: u64 });

function bytes(build: (v: DataView) => void, len: number): Uint8Array {
  const b = new Uint8Array(len);
  build(new DataView(b.buffer));
  return b;
}

const region = fc.record({ gpa: gpaArb, size: sizeArb, uva: fc.oneof(fc.integer({ min: 0, max: 3 }).map((k) => BigInt(UVA_BASE + k * MEMFD_SIZE)), u64), off: fc.oneof(fc.constant(0n), fc.constant(4096n), u64) });

function regionBytes(v: DataView, off: number, r: { gpa: bigint; size: bigint; uva: bigint; off: bigint }): void {
  v.setBigUint64(off, r.gpa, true);
  v.setBigUint64(off + 8, r.size, true);
  v.setBigUint64(off + 16, r.uva, true);
  v.setBigUint64(off + 24, r.off, true);
}

const vringState = fc.tuple(small, fc.oneof(fc.constantFrom(0, 1, 2, 8, 64, 256, 1024, 32768, 32769, 0xffff), u32)).map(([i, n]) =>
  bytes((v) => {
    v.setUint32(0, i, true);
    v.setUint32(4, n, true);
  }, 8),
);

const features = fc.oneof(
  fc.constant((1n << 32n) | (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES)) | (1n << 28n) | (1n << 29n)),
  fc.constant((1n << BigInt(ProtocolFeature.REPLY_ACK)) | (1n << BigInt(ProtocolFeature.MQ)) | (1n << BigInt(ProtocolFeature.CONFIG))),
  u64,
);

const randomPayload = fc.uint8Array({ maxLength: 64 });

/** One message: mostly well-formed for its request, sometimes random, with plausible fds. */
export const messageArb: fc.Arbitrary<MsgSpec> = fc
  .oneof(
    fc.constantFrom(Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.SET_OWNER, Req.RESET_OWNER, Req.GET_QUEUE_NUM, Req.GET_MAX_MEM_SLOTS, Req.RESET_DEVICE).map((request) => ({
      request,
      payload: new Uint8Array(0),
      fds: [] as FdKind[],
    })),
    fc.tuple(fc.constantFrom(Req.SET_FEATURES, Req.SET_PROTOCOL_FEATURES), features).map(([request, f]) => ({
      request,
      payload: bytes((v) => v.setBigUint64(0, f, true), 8),
      fds: [] as FdKind[],
    })),
    fc.array(region, { minLength: 0, maxLength: 3 }).chain((regions) =>
      fc.tuple(fc.constant(regions), fc.oneof({ weight: 5, arbitrary: fc.constant(regions.length) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }) })).map(([rs, n]) => ({
        request: Req.SET_MEM_TABLE,
        payload: bytes((v) => {
          v.setUint32(0, n, true);
          rs.forEach((r, i) => regionBytes(v, 8 + 32 * i, r));
        }, 8 + 32 * rs.length),
        fds: Array.from({ length: Math.min(n, 8) }, () => 'memfd' as FdKind),
      })),
    ),
    fc.tuple(fc.constantFrom(Req.ADD_MEM_REG, Req.REM_MEM_REG), region, fc.boolean()).map(([request, r, withFd]) => ({
      request,
      payload: bytes((v) => regionBytes(v, 8, r), 40),
      fds: request === Req.ADD_MEM_REG || withFd ? (['memfd'] as FdKind[]) : [],
    })),
    fc.tuple(fc.constantFrom(Req.SET_VRING_NUM, Req.SET_VRING_BASE, Req.GET_VRING_BASE, Req.SET_VRING_ENABLE), vringState).map(([request, payload]) => ({
      request,
      payload,
      fds: [] as FdKind[],
    })),
    fc.tuple(small, u32, addr, addr, addr, u64).map(([i, flags, desc, used, avail, log]) => ({
      request: Req.SET_VRING_ADDR,
      payload: bytes((v) => {
        v.setUint32(0, i, true);
        v.setUint32(4, flags, true);
        v.setBigUint64(8, desc, true);
        v.setBigUint64(16, used, true);
        v.setBigUint64(24, avail, true);
        v.setBigUint64(32, log, true);
      }, 40),
      fds: [] as FdKind[],
    })),
    fc.tuple(fc.constantFrom(Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR), small, fc.boolean(), fc.integer({ min: 0, max: 9 })).map(([request, i, noFd, fdsMode]) => ({
      request,
      payload: bytes((v) => v.setBigUint64(0, BigInt(i) | (noFd ? 0x100n : 0n), true), 8),
      // Mostly the right number of fds (none with NOFD), sometimes one too many or too few.
      fds: (fdsMode === 0 ? [] : fdsMode === 1 ? ['eventfd', 'eventfd'] : noFd ? [] : ['eventfd']) as FdKind[],
    })),
    fc.tuple(fc.constantFrom(Req.GET_CONFIG, Req.SET_CONFIG), fc.oneof(fc.integer({ min: 0, max: 300 }), u32), fc.oneof(fc.integer({ min: 0, max: 300 }), u32), u32, fc.integer({ min: -2, max: 2 })).map(
      ([request, offset, size, flags, slack]) => ({
        request,
        payload: bytes((v) => {
          v.setUint32(0, offset, true);
          v.setUint32(4, size, true);
          v.setUint32(8, flags, true);
        }, 12 + Math.min(size, 300) + 2).subarray(0, Math.max(0, 12 + Math.min(size, 300) + slack)),
        fds: [] as FdKind[],
      }),
    ),
    fc.tuple(fc.oneof(fc.integer({ min: 0, max: 45 }), u32), randomPayload, fc.array(fc.constantFrom<FdKind>('eventfd', 'memfd'), { maxLength: 3 })).map(([request, payload, fds]) => ({
      request,
      payload,
      fds,
    })),
  )
  .chain((m) => fc.record({ needReply: fc.boolean(), m: fc.constant(m) }))
  .map(({ needReply, m }) => ({ ...m, flags: FLAG_VERSION | (needReply ? FLAG_NEED_REPLY : 0) }));

/** Turns specs into Messages with real fds, all created up front. */
export function materialize(specs: MsgSpec[], ledger: FdLedger): Message[] {
  return specs.map((s) => ({
    request: s.request,
    flags: s.flags,
    payload: new DataView(s.payload.slice().buffer),
    fds: s.fds.map((k) => (k === 'memfd' ? ledger.memfd() : ledger.eventfd())),
  }));
}

// ---- one case ------------------------------------------------------------------------------

const NEEDS_REPLY = new Set<number>([Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_VRING_BASE, Req.GET_QUEUE_NUM, Req.GET_CONFIG, Req.GET_MAX_MEM_SLOTS]);

/** Errors that mean a bug in the handler rather than a deliberate connection close. */
function isBug(e: unknown): boolean {
  return !(e instanceof Error) || e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || e instanceof SyntaxError;
}

export interface SessionRun {
  problems: string[];
  handled: number;
  closedBy?: string;
}

/** Runs one message sequence through a fresh session; returns every property violation found. */
export async function runSession(specs: MsgSpec[], failures: boolean[], packedRing = false): Promise<SessionRun> {
  const ledger = new FdLedger();
  const plane = new FakePlane(failures, ledger);
  const { session, sent } = makeSession(plane, { packedRing });
  const problems: string[] = [];
  const messages = materialize(specs, ledger);
  let handled = 0;
  let closedBy: string | undefined;
  ledger.install();
  try {
    for (const m of messages) {
      const before = sent.length;
      try {
        await session.handle(m);
      } catch (e) {
        if (isBug(e)) problems.push(`message ${handled} (request ${m.request}) threw ${(e as Error)?.stack ?? String(e)}`);
        closedBy = `${m.request}: ${(e as Error)?.message}`;
        // The connection closes: queued messages' fds are closed by VhostUserConnection.close().
        for (const rest of messages.slice(handled + 1)) for (const fd of rest.fds) native.close(fd);
        break;
      } finally {
        handled++;
      }
      const replies = sent.slice(before);
      if (replies.length > 1) problems.push(`message ${handled - 1} (request ${m.request}) got ${replies.length} replies`);
      if (NEEDS_REPLY.has(m.request) && replies.length !== 1) problems.push(`request ${m.request} needs a reply, got ${replies.length}`);
      for (const r of replies) {
        if (r.request !== m.request) problems.push(`reply to ${m.request} carries request ${r.request}`);
        if (r.flags !== (FLAG_VERSION | FLAG_REPLY)) problems.push(`reply flags 0x${r.flags.toString(16)}`);
      }
    }
    try {
      await session.close();
    } catch (e) {
      problems.push(`close() threw ${(e as Error)?.stack ?? String(e)}`);
    }
  } finally {
    ledger.uninstall();
  }
  problems.push(...ledger.errors, ...plane.errors);
  const leaked = ledger.reapLeaks();
  if (leaked > 0) problems.push(`${leaked} fds leaked`);
  if (ledger.mappings.size > 0) problems.push(`${ledger.mappings.size} guest memory mappings never released`);
  return { problems, handled, closedBy };
}

