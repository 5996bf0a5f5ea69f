// A vhost-user controller: a listening socket named after the controller, and one session per
// connected front-end (QEMU reconnects after restarts and guest reboots).
import { lstatSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { EAGAIN, type FdWatchHandle, check, native } from '../native/index.js';
import { DevicePlane } from '../reactor/device-plane.js';
import type { Coalescing } from '../virtio/queue-runner.js';
import type { ReactorPool } from '../reactor/reactor-pool.js';
import { VhostUserConnection } from '../vhost-user/connection.js';
import type { DeviceSpec } from '../devices/device.js';
import type { DeviceModel } from '../vhost-user/device-model.js';
import { Req } from '../vhost-user/protocol.js';
import { VhostUserSession } from '../vhost-user/session.js';
import { applySocketPerms, checkSocketDir, withPrivateUmask } from '../util/socket-perms.js';
import { Errno } from '../util/errno.js';
import { VhostdError } from '../util/errors.js';

/**
 * Connections one controller serves at once. At the limit, a new connection evicts the oldest one
 * that never negotiated (sent neither SET_OWNER nor SET_MEM_TABLE), so clients that connect and
 * never speak cannot lock QEMU out; only when every session negotiated is the new one refused.
 */
export const MAX_SESSIONS_PER_CONTROLLER = 8;

export interface ControllerOptions {
  name: string;
  socketPath: string;
  cores: number[];
  /** What sessions offer the front-end, and the spec reactors build the device from. */
  model: DeviceModel & { spec(): DeviceSpec };
  socketMode: number;
  /** Group of the socket file, when set (--socket-group). */
  socketGid?: number;
}

interface SessionEntry {
  session: VhostUserSession;
  plane: DevicePlane;
  conn: VhostUserConnection;
  id: number;
  acceptedAt: number;
  /** Sent SET_OWNER or SET_MEM_TABLE: a front-end at work, never evicted for a newcomer. */
  negotiated: boolean;
  /** Settles once the session released its queues and memory. */
  closed?: Promise<void>;
}

export class Controller {
  private listenFd = -1;
  private watch: FdWatchHandle | undefined;
  private readonly sessions = new Set<SessionEntry>();
  /** Sessions whose connection closed and whose queues and memory are still being released. */
  private readonly teardowns = new Set<Promise<void>>();
  private nextSessionId = 0;
  private coalescing: Coalescing | undefined;

  constructor(
    readonly opts: ControllerOptions,
    private readonly pool: ReactorPool,
    private readonly log: Logger,
  ) {}

  get name(): string {
    return this.opts.name;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** The connected front-ends, and whether each one's device marks a migration's dirty log now. */
  sessionInfo(): Array<{ id: number; dirty_logging: boolean }> {
    return [...this.sessions].map((s) => ({ id: s.id, dirty_logging: s.session.dirtyLogging }));
  }

  listen(): void {
    const path = this.opts.socketPath;
    // Checked at every create, not only at start: the directory may have been opened up since.
    try {
      checkSocketDir(dirname(path));
    } catch (e) {
      throw new VhostdError(-Errno.EPERM, (e as Error).message);
    }
    try {
      if (lstatSync(path).isSocket()) unlinkSync(path);
    } catch {
      // no stale socket
    }
    this.listenFd = check('listen', withPrivateUmask(() => native.socketListen(path, 16)));
    try {
      applySocketPerms(path, { mode: this.opts.socketMode, gid: this.opts.socketGid });
    } catch (e) {
      native.close(this.listenFd);
      this.listenFd = -1;
      unlinkSync(path);
      throw e;
    }
    this.watch = new native.FdWatch(this.listenFd, () => this.acceptAll());
    this.watch.start();
    this.log.info({ ctrlr: this.name, socket: path }, 'controller listening');
  }

  private acceptAll(): void {
    for (;;) {
      const fd = native.accept(this.listenFd);
      if (fd === -EAGAIN || fd < 0) return;
      if (this.sessions.size >= MAX_SESSIONS_PER_CONTROLLER && !this.evictIdle()) {
        this.log.warn({ ctrlr: this.name }, `refusing connection: ${MAX_SESSIONS_PER_CONTROLLER} negotiated sessions already open`);
        native.close(fd);
        continue;
      }
      this.startSession(fd);
    }
  }

  /** Closes the oldest session that never negotiated; false when every session did. */
  private evictIdle(): boolean {
    for (const s of this.sessions) {
      if (s.negotiated) continue;
      this.log.warn(
        { ctrlr: this.name, session: s.id, idleMs: Date.now() - s.acceptedAt },
        `evicting the oldest connection that never negotiated: ${MAX_SESSIONS_PER_CONTROLLER} sessions open and a new front-end is connecting`,
      );
      s.conn.close('evicted to admit a new connection (never negotiated)');
      return true;
    }
    return false;
  }

  private startSession(fd: number): void {
    const id = this.nextSessionId++;
    const log = this.log.child({ ctrlr: this.name, session: id });
    const plane = new DevicePlane(this.pool, this.opts.cores, this.opts.model.spec());
    if (this.coalescing) void plane.setCoalescing(this.coalescing);
    const entry = { plane, id, acceptedAt: Date.now(), negotiated: false } as SessionEntry;
    entry.conn = new VhostUserConnection(
      fd,
      (m) => {
        if (m.request === Req.SET_OWNER || m.request === Req.SET_MEM_TABLE) entry.negotiated = true;
        return entry.session.handle(m);
      },
      (reason) => {
        log.info({ reason }, 'vhost-user connection closed');
        this.sessions.delete(entry);
        const closed = entry.session.close().catch((e) => log.error({ err: e }, 'session teardown failed'));
        entry.closed = closed;
        this.teardowns.add(closed);
        void closed.finally(() => this.teardowns.delete(closed));
      },
      log,
    );
    entry.session = new VhostUserSession(entry.conn, this.opts.model, plane, log);
    this.sessions.add(entry);
    log.info('vhost-user connection accepted');
  }

  /** Interrupt coalescing for the controller's queues, now and in later sessions. */
  setCoalescing(c: Coalescing): void {
    this.coalescing = c;
    for (const s of this.sessions) s.plane.setCoalescing(c).catch((e) => this.log.error({ ctrlr: this.name, err: e }, 'coalescing update failed'));
  }

  /** Runs `fn` on the data plane of every live session (hot-plug reaches running guests). */
  async forEachPlane(fn: (plane: DevicePlane) => Promise<void>): Promise<void> {
    await Promise.all([...this.sessions].map((s) => fn(s.plane)));
  }

  /** The cores serving each live session (DevicePlane.cores). */
  sessionCores(): number[][] {
    return [...this.sessions].map((s) => s.plane.cores);
  }

  /** Whether a data-plane device id belongs to this controller (for reactor error events). */
  ownsDevice(devId: number): boolean {
    for (const s of this.sessions) if (s.plane.devId === devId) return true;
    return false;
  }

  async close(): Promise<void> {
    this.watch?.close();
    if (this.listenFd >= 0) native.close(this.listenFd);
    this.listenFd = -1;
    try {
      unlinkSync(this.opts.socketPath);
    } catch {
      // already gone
    }
    for (const s of [...this.sessions]) s.conn.close('controller deleted');
    // Every teardown, including those of connections the peer closed just before: the reactors
    // must have let go of a session's queues before anyone stops them.
    await Promise.all([...this.teardowns]);
  }
}
