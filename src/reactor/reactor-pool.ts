// Control-thread side of the reactors: one worker per core of the daemon's cpumask, request/reply
// messaging, and placement of devices on the least-loaded core of their own cpumask.
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { VhostdError } from '../util/errors.js';
import type { ReactorEvent, ReactorInit, ReactorReply, ReactorRequest, ReactorStats } from './messages.js';

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

/** SPDK's cpuset holds 1024 cores (SPDK_CPUSET_SIZE); no mask may name a core beyond it. */
export const MAX_CORES = 1024;

/**
 * Parses an SPDK cpumask ("0x3", "3", "[0,1]", "[0-1,4]") into sorted core numbers, each below
 * MAX_CORES. The work and memory are bounded by MAX_CORES, whatever numbers the text holds: a
 * range is checked before it is walked, and a hex mask longer than MAX_CORES bits is refused.
 */
export function parseCpumask(mask: string): number[] {
  const s = mask.trim();
  const invalid = (why: string) => new Error(`invalid cpumask ${JSON.stringify(mask.length > 64 ? `${mask.slice(0, 64)}...` : mask)}: ${why}`);
  const selected = new Uint8Array(MAX_CORES);
  if (s.startsWith('[') && s.endsWith(']')) {
    const core = (text: string): number => {
      const t = text.trim();
      if (/^\d{5,}$/.test(t)) throw invalid(`core ${t.slice(0, 24)} is beyond the last possible core ${MAX_CORES - 1}`);
      if (!/^\d{1,4}$/.test(t)) throw invalid(`${JSON.stringify(t.slice(0, 16))} is not a core number`);
      const c = Number(t);
      if (c >= MAX_CORES) throw invalid(`core ${c} is beyond the last possible core ${MAX_CORES - 1}`);
      return c;
    };
    for (const part of s.slice(1, -1).split(',')) {
      const dash = part.indexOf('-');
      const first = core(dash < 0 ? part : part.slice(0, dash));
      const last = dash < 0 ? first : core(part.slice(dash + 1));
      if (last < first) throw invalid(`range ${first}-${last} runs backwards`);
      selected.fill(1, first, last + 1);
    }
  } else {
    const hex = s.toLowerCase().startsWith('0x') ? s.slice(2) : s;
    if (!/^[0-9a-f]+$/i.test(hex)) throw invalid('expected a hex mask such as 0x3 or a list such as [0,1]');
    const digits = hex.replace(/^0+/, '');
    if (digits.length > MAX_CORES / 4) throw invalid(`it names cores beyond the last possible core ${MAX_CORES - 1}`);
    for (let i = 0; i < digits.length; i++) {
      const nibble = Number.parseInt(digits[digits.length - 1 - i], 16);
      for (let b = 0; b < 4; b++) if (nibble & (1 << b)) selected[i * 4 + b] = 1;
    }
  }
  const cores: number[] = [];
  for (let c = 0; c < MAX_CORES; c++) if (selected[c]) cores.push(c);
  if (cores.length === 0) throw new Error(`cpumask ${mask} selects no core`);
  return cores;
}

export function formatCpumask(cores: number[]): string {
  let v = 0n;
  for (const c of cores) v |= 1n << BigInt(c);
  return `0x${v.toString(16)}`;
}

/** Default time a reactor keeps polling an idle ring before it sleeps on kicks. */
export const DEFAULT_POLL_IDLE_US = 1000;

export class ReactorPool {
  readonly reactors: ReactorHandle[] = [];
  private readonly listeners = new Set<(e: ReactorEvent) => void>();

  constructor(
    readonly cores: number[],
    private readonly log: Logger,
    pollIdleUs = DEFAULT_POLL_IDLE_US,
  ) {
    cores.forEach((core, index) => {
      const init: ReactorInit = { index, core, logLevel: log.level, pollIdleUs };
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
