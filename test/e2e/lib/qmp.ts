// Minimal QMP (QEMU Machine Protocol) client, used for QEMU guests (hot-plug, device_del, ...)
// and for qemu-storage-daemon. One JSON object per line each way; replies carry our "id".
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient {
  /** Every asynchronous event received so far, in order. */
  readonly events: QmpEvent[] = [];
  private readonly pending = new Map<string, Pending>();
  private readonly eventWaiters = new Set<() => void>();
  private nextId = 1;
  private buf = '';
  private closedError: Error | undefined;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    const onGone = (err?: Error) => {
      this.closedError ??= err ?? new Error('QMP connection closed');
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
      for (const w of this.eventWaiters) w();
    };
    sock.on('error', onGone);
    sock.on('close', () => onGone());
  }

  /** Connects to a QMP unix socket (retrying until it exists) and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path);
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        const c = new QmpClient(sock);
        await c.greeting(Math.max(1000, deadline - Date.now()));
        await c.execute('qmp_capabilities');
        return c;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`cannot connect to QMP at ${path}: ${(e as Error).message}`);
        await sleep(50);
      }
    }
  }

  private greetingResolve: ((v: unknown) => void) | undefined;

  private greeting(timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no QMP greeting')), timeoutMs);
      this.greetingResolve = (v) => {
        clearTimeout(t);
        resolve(v);
      };
      this.sock.once('close', () => reject(new Error('QMP closed before greeting')));
    });
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greetingResolve?.(msg);
        this.greetingResolve = undefined;
      } else if ('event' in msg) {
        this.events.push(msg as unknown as QmpEvent);
        for (const w of this.eventWaiters) w();
      } else if ('id' in msg) {
        const p = this.pending.get(String(msg.id));
        if (!p) continue;
        this.pending.delete(String(msg.id));
        if ('error' in msg) {
          const e = msg.error as { class?: string; desc?: string };
          p.reject(new QmpError(p.command, e.class ?? '?', e.desc ?? '?'));
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  /** Runs a QMP command; resolves with its "return" value, rejects with QmpError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  /**
   * Resolves with the first event named `name` (and accepted by `match`) that arrived since the
   * connection was opened and was not already returned by an earlier waitEvent.
   */
  waitEvent(name: string, match: (e: QmpEvent) => boolean = () => true, timeoutMs = 30_000): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const i = this.events.findIndex((e, idx) => !this.consumed.has(idx) && e.event === name && match(e));
        if (i >= 0) {
          this.consumed.add(i);
          resolve(this.events[i] as QmpEvent);
          return true;
        }
        if (this.closedError) {
          reject(new Error(`QMP closed while waiting for event ${name}`));
          return true;
        }
        return false;
      };
      if (check()) return;
      const waiter = () => {
        if (check()) done();
      };
      const t = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for QMP event ${name}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(t);
        this.eventWaiters.delete(waiter);
      };
      this.eventWaiters.add(waiter);
    });
  }

  private readonly consumed = new Set<number>();

  close(): void {
    this.sock.destroy();
  }
}
