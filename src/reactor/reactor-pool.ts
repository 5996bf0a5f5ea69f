// Control-thread side of the reactors: one worker per core of the daemon's cpumask, request/reply
// messaging, and placement of devices on the least-loaded core of their own cpumask.
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { VhostdError } from '../util/errors.js';
import type { BackendWaitMode, ReactorEvent, ReactorInit, ReactorReply, ReactorRequest, ReactorStats } from './messages.js';

/**
 * The worker entry point. Running from TypeScript sources (tests, `tsx`), workers do not inherit
 * the tsx loader, so a tiny bootstrap registers it before importing the entry.
 */
function workerEntry(): URL {
  if (!import.meta.url.endsWith('.ts')) return new URL('./worker-entry.js', import.meta.url);
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./worker-entry.ts', import.meta.url).href;
  const code = `import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(entry)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
}

export class ReactorHandle {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** Queues placed here (for least-loaded placement). */
  load = 0;

  constructor(
    readonly index: number,
    readonly core: number,
    readonly worker: Worker,
    onEvent: (e: ReactorEvent) => void,
    log: Logger,
  ) {
    worker.on('message', (m: ReactorReply | ReactorEvent) => {
      if ('event' in m) return onEvent(m);
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(VhostdError.fromWire(m.error));
    });
    worker.on('error', (e) => log.fatal({ reactor: index, err: e }, 'reactor crashed'));
    worker.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`reactor ${index} exited (${code})`));
      this.pending.clear();
    });
  }

  request<T = unknown>(req: ReactorRequest): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, ...req });
    });
  }
}

// SPDK cpumask parsing lives in util/ (the rbd module's bdev_rbd_register_cluster parses core_mask).
export { MAX_CORES, parseCpumask } from '../util/cpumask.js';

export function formatCpumask(cores: number[]): string {
  let v = 0n;
  for (const c of cores) v |= 1n << BigInt(c);
  return `0x${v.toString(16)}`;
}

/** Default time a reactor keeps polling an idle ring before it sleeps on kicks. */
export const DEFAULT_POLL_IDLE_US = 1000;

export class ReactorPool {
  readonly reactors: ReactorHandle[] = [];
  /** DeviceSpec.affinity key -> the reactor its devices are on. */
  private readonly affinity = new Map<string, ReactorHandle>();
  private readonly listeners = new Set<(e: ReactorEvent) => void>();

  constructor(
    readonly cores: number[],
    private readonly log: Logger,
    opts: { pollIdleUs?: number; backendWait?: BackendWaitMode } = {},
  ) {
    const pollIdleUs = opts.pollIdleUs ?? DEFAULT_POLL_IDLE_US;
    const backendWait = opts.backendWait ?? 'adaptive';
    cores.forEach((core, index) => {
      const init: ReactorInit = { index, core, logLevel: log.level, pollIdleUs, backendWait };
      const worker = new Worker(workerEntry(), { workerData: init });
      this.reactors.push(new ReactorHandle(index, core, worker, (e) => this.dispatch(e), log));
    });
  }

  get cpumask(): string {
    return formatCpumask(this.cores);
  }

  onEvent(listener: (e: ReactorEvent) => void): void {
    this.listeners.add(listener);
  }

  private dispatch(e: ReactorEvent): void {
    for (const l of this.listeners) l(e);
  }

  /**
   * The reactor for devices with affinity `key` (DeviceSpec.affinity) among `candidates` (least
   * loaded first): the one the key was given before, while it is a candidate, else the first.
   */
  affine(key: string, candidates: ReactorHandle[]): ReactorHandle {
    const before = this.affinity.get(key);
    if (before !== undefined && candidates.includes(before)) return before;
    const chosen = candidates[0]!;
    this.affinity.set(key, chosen);
    return chosen;
  }

  /** The reactors on `cores` (which must all belong to the daemon's mask), least loaded first. */
  select(cores: number[]): ReactorHandle[] {
    const chosen = this.reactors.filter((r) => cores.includes(r.core));
    if (chosen.length !== cores.length) {
      throw new Error(`cpumask ${formatCpumask(cores)} is not a subset of the application cpumask ${this.cpumask}`);
    }
    return chosen.sort((a, b) => a.load - b.load || a.index - b.index);
  }

  /** gc: each reactor collects its garbage first (node started with --expose-gc; else ignored). */
  async stats(opts: { gc?: boolean } = {}): Promise<ReactorStats[]> {
    return Promise.all(this.reactors.map((r) => r.request<ReactorStats>({ op: 'stats', ...(opts.gc ? { gc: true } : {}) })));
  }

  async close(): Promise<void> {
    await Promise.all(this.reactors.map((r) => r.worker.terminate()));
  }
}
