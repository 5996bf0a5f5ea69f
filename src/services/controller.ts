// A vhost-user controller: a listening socket named after the controller, and one session per
// connected front-end (QEMU reconnects after restarts and guest reboots).
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import type { Logger } from 'pino';
import { EAGAIN, type FdWatchHandle, check, native } from '../native/index.js';
import { DevicePlane } from '../reactor/device-plane.js';
import type { ReactorPool } from '../reactor/reactor-pool.js';
import { VhostUserConnection } from '../vhost-user/connection.js';
import type { DeviceModel } from '../vhost-user/device-model.js';
import { VhostUserSession } from '../vhost-user/session.js';

/** Connections one controller serves at once; more are refused so idle clients cannot pile up. */
export const MAX_SESSIONS_PER_CONTROLLER = 8;

export interface ControllerOptions {
  name: string;
  socketPath: string;
  cores: number[];
  model: DeviceModel;
  socketMode: number;
}

interface SessionEntry {
  session: VhostUserSession;
  plane: DevicePlane;
  conn: VhostUserConnection;
  /** Settles once the session released its queues and memory. */
  closed?: Promise<void>;
}

export class Controller {
  private listenFd = -1;
  private watch: FdWatchHandle | undefined;
  private readonly sessions = new Set<SessionEntry>();
  private nextSessionId = 0;

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

  listen(): void {
    const path = this.opts.socketPath;
    try {
      if (lstatSync(path).isSocket()) unlinkSync(path);
    } catch {
      // no stale socket
    }
    this.listenFd = check('listen', native.socketListen(path, 16));
    chmodSync(path, this.opts.socketMode);
    this.watch = new native.FdWatch(this.listenFd, () => this.acceptAll());
    this.watch.start();
    this.log.info({ ctrlr: this.name, socket: path }, 'controller listening');
  }

  private acceptAll(): void {
    for (;;) {
      const fd = native.accept(this.listenFd);
      if (fd === -EAGAIN || fd < 0) return;
      if (this.sessions.size >= MAX_SESSIONS_PER_CONTROLLER) {
        this.log.warn({ ctrlr: this.name }, `refusing connection: ${MAX_SESSIONS_PER_CONTROLLER} sessions already open`);
        native.close(fd);
        continue;
      }
      this.startSession(fd);
    }
  }

  private startSession(fd: number): void {
    const id = this.nextSessionId++;
    const log = this.log.child({ ctrlr: this.name, session: id });
    const plane = new DevicePlane(this.pool, this.opts.cores, this.opts.model.spec());
    const entry = { plane } as SessionEntry;
    entry.conn = new VhostUserConnection(
      fd,
      (m) => entry.session.handle(m),
      (reason) => {
        log.info({ reason }, 'vhost-user connection closed');
        this.sessions.delete(entry);
        entry.closed = entry.session.close().catch((e) => log.error({ err: e }, 'session teardown failed'));
      },
      log,
    );
    entry.session = new VhostUserSession(entry.conn, this.opts.model, plane, log);
    this.sessions.add(entry);
    log.info('vhost-user connection accepted');
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
    const entries = [...this.sessions];
    for (const s of entries) s.conn.close('controller deleted');
    await Promise.all(entries.map((s) => s.closed));
  }
}
