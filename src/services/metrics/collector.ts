// vhostd's Prometheus metrics: a prom-client Registry of its own (never the global one) whose
// metrics are filled at scrape time from counters that already exist — bdev_get_iostat's shared
// buffers (through bdev-source.ts) and the reactors' framework_get_reactors statistics. A scrape
// takes one snapshot (one iostat read per bdev, one stats message per reactor) that every metric
// of that scrape reads, so the exposition is consistent and the data path does nothing extra.
//
// Counters that are kept elsewhere are exposed as prom-client Counters whose collect() replaces
// their values (reset, then inc by the absolute value), so they carry TYPE counter; histograms
// kept by the bdev layer are exposed by a Histogram whose output is the layer's buckets.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Bdev } from '../../bdev/bdev.js';
import type { ReactorStats } from '../../reactor/messages.js';
import type { ReactorInfoProvider } from '../types.js';
import { type BdevIoCounters, type BdevLatencyHistogram, type BdevMetricsSource, type BdevQosCounters, type BdevStatsRegistry, bdevMetricsSource } from './bdev-source.js';

/** A reactor that does not answer within this time is left out of the scrape. */
const REACTOR_STATS_TIMEOUT_MS = 2000;

export interface MetricsSources {
  bdevs: BdevStatsRegistry;
  reactors?: ReactorInfoProvider;
  version: string;
  /** How a bdev's statistics are read (default bdevMetricsSource; tests substitute their own). */
  bdevSource?: (bdev: Bdev) => BdevMetricsSource | undefined;
}

interface BdevSnapshot {
  name: string;
  io: BdevIoCounters;
  histogram?: BdevLatencyHistogram;
  qos?: BdevQosCounters;
}

interface Snapshot {
  bdevs: BdevSnapshot[];
  /** Undefined when the reactors did not answer (in time). */
  reactors: ReactorStats[] | undefined;
}

type Labels<L extends string> = Record<L, string>;
type Sample<L extends string> = [Labels<L>, number];

/** The names of the metrics vhostd exports (besides prom-client's process_* and nodejs_*). */
export const METRIC_NAMES = {
  bdevBytes: (op: 'read' | 'write' | 'unmap' | 'write_zeroes') => `vhostd_bdev_${op}_bytes_total`,
  bdevOps: (op: BdevOp) => `vhostd_bdev_${op}_ops_total`,
  bdevLatency: (op: BdevOp) => `vhostd_bdev_${op}_latency_seconds_total`,
  bdevErrors: 'vhostd_bdev_io_errors_total',
  bdevLatencyHistogram: 'vhostd_bdev_io_latency_seconds',
  bdevQosThrottled: 'vhostd_bdev_qos_throttled_ios_total',
  bdevQosQueued: 'vhostd_bdev_qos_queued_ios',
  reactorBusy: 'vhostd_reactor_busy_seconds_total',
  reactorIdle: 'vhostd_reactor_idle_seconds_total',
  reactorWakeups: 'vhostd_reactor_wakeups_total',
  reactorBackendLatency: 'vhostd_reactor_backend_latency_seconds',
  reactorSleeping: 'vhostd_reactor_sleeping',
  reactorStatsUp: 'vhostd_reactor_stats_up',
  controllerCompleted: 'vhostd_controller_completed_requests_total',
  controllerInflight: 'vhostd_controller_inflight_requests',
  buildInfo: 'vhostd_build_info',
} as const;

type BdevOp = 'read' | 'write' | 'unmap' | 'flush' | 'write_zeroes';
const OPS: Array<[BdevOp, keyof Omit<BdevIoCounters, 'failed'>]> = [
  ['read', 'read'],
  ['write', 'write'],
  ['unmap', 'unmap'],
  ['flush', 'flush'],
  ['write_zeroes', 'writeZeroes'],
];

/** One scrape's data, shared by the metrics of that scrape (they collect concurrently). */
class SnapshotSource {
  private pending: Promise<Snapshot> | undefined;

  constructor(private readonly sources: MetricsSources) {}

  /** The snapshot of the scrape under way; the first metric to ask takes it. */
  get(): Promise<Snapshot> {
    if (this.pending) return this.pending;
    const p = this.take();
    this.pending = p;
    // Every metric of a scrape asks synchronously when the registry starts collecting, so the
    // snapshot is dropped once it has been handed out: the next scrape takes a fresh one.
    const clear = () => {
      if (this.pending === p) this.pending = undefined;
    };
    p.then(clear, clear);
    return p;
  }

  private async take(): Promise<Snapshot> {
    const reactors = this.reactorStats();
    const bdevs: BdevSnapshot[] = [];
    const sourceOf = this.sources.bdevSource ?? ((b: Bdev) => bdevMetricsSource(this.sources.bdevs, b));
    for (const bdev of this.sources.bdevs.list()) {
      const src = sourceOf(bdev);
      if (src === undefined) continue;
      const entry: BdevSnapshot = { name: bdev.name, io: src.io() };
      const h = src.histogram?.();
      if (h !== undefined && validHistogram(h)) entry.histogram = h;
      const q = src.qos?.();
      if (q !== undefined) entry.qos = q;
      bdevs.push(entry);
    }
    return { bdevs, reactors: await reactors };
  }

  private async reactorStats(): Promise<ReactorStats[] | undefined> {
    const provider = this.sources.reactors;
    if (!provider) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), REACTOR_STATS_TIMEOUT_MS);
    });
    try {
      return await Promise.race([provider.stats().catch(() => undefined), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function validHistogram(h: BdevLatencyHistogram): boolean {
  const b = h.bucketUpperBoundsSeconds;
  if (b.length === 0 || b.length !== h.counts.length) return false;
  for (let i = 0; i < b.length; i++) {
    if (Number.isNaN(b[i]) || (i > 0 && !(b[i] > b[i - 1]))) return false;
    if (!Number.isFinite(h.counts[i]) || h.counts[i] < 0) return false;
  }
  return true;
}

function formatBound(v: number): string {
  return v === Infinity ? '+Inf' : String(v);
}

/**
 * A histogram whose buckets live elsewhere (the bdev layer's): its exposition is those buckets,
 * made cumulative, with _count and, when known, _sum.
 */
class ExternalHistogram extends Histogram<'bdev'> {
  private read?: () => Promise<BdevSnapshot[]>;
  private names = { name: '', help: '' };

  static create(registry: Registry, name: string, help: string, read: () => Promise<BdevSnapshot[]>): ExternalHistogram {
    const h = new ExternalHistogram({ name, help, labelNames: ['bdev'], registers: [registry] });
    h.read = read;
    h.names = { name, help };
    return h;
  }

  /** What the registry formats (it prefers this to get()). */
  async getForPromString(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Array<{ metricName: string; labels: Record<string, string>; value: number }> }> {
    const { name, help } = this.names;
    const values: Array<{ metricName: string; labels: Record<string, string>; value: number }> = [];
    for (const b of this.read ? await this.read() : []) {
      const h = b.histogram;
      if (!h) continue;
      let total = 0;
      for (let i = 0; i < h.counts.length; i++) {
        total += h.counts[i];
        values.push({ metricName: `${name}_bucket`, labels: { bdev: b.name, le: formatBound(h.bucketUpperBoundsSeconds[i]) }, value: total });
      }
      if (h.bucketUpperBoundsSeconds[h.bucketUpperBoundsSeconds.length - 1] !== Infinity) {
        values.push({ metricName: `${name}_bucket`, labels: { bdev: b.name, le: '+Inf' }, value: total });
      }
      if (h.sumSeconds !== undefined) values.push({ metricName: `${name}_sum`, labels: { bdev: b.name }, value: h.sumSeconds });
      values.push({ metricName: `${name}_count`, labels: { bdev: b.name }, value: total });
    }
    return { name, help, type: 'histogram', aggregator: 'sum', values };
  }

  override async get(): Promise<Awaited<ReturnType<Histogram<'bdev'>['get']>>> {
    return (await this.getForPromString()) as unknown as Awaited<ReturnType<Histogram<'bdev'>['get']>>;
  }
}

/** vhostd's metrics registry: `metrics()` is one scrape in the Prometheus text format. */
export class VhostdMetrics {
  readonly registry = new Registry();
  private readonly snapshot: SnapshotSource;

  constructor(sources: MetricsSources, opts: { processMetrics?: boolean } = {}) {
    this.snapshot = new SnapshotSource(sources);
    const reg = this.registry;
    const snap = () => this.snapshot.get();

    const counter = <L extends string>(name: string, help: string, labelNames: L[], samples: (s: Snapshot) => Iterable<Sample<L>>) =>
      new Counter<L>({
        name,
        help,
        labelNames,
        registers: [reg],
        async collect() {
          const s = await snap();
          this.reset();
          for (const [labels, v] of samples(s)) if (Number.isFinite(v) && v >= 0) this.inc(labels as Partial<Record<L, string>>, v);
        },
      });
    const gauge = <L extends string>(name: string, help: string, labelNames: L[], samples: (s: Snapshot) => Iterable<Sample<L>>) =>
      new Gauge<L>({
        name,
        help,
        labelNames,
        registers: [reg],
        async collect() {
          const s = await snap();
          this.reset();
          for (const [labels, v] of samples(s)) if (Number.isFinite(v)) this.set(labels as Partial<Record<L, string>>, v);
        },
      });

    // Per bdev: bdev_get_iostat's device counters.
    const perBdev = (pick: (b: BdevSnapshot) => number | undefined) =>
      function* (s: Snapshot): Iterable<Sample<'bdev'>> {
        for (const b of s.bdevs) {
          const v = pick(b);
          if (v !== undefined) yield [{ bdev: b.name }, v];
        }
      };
    for (const [op, key] of OPS) {
      const what = op.replace('_', ' ');
      if (op !== 'flush') {
        counter(METRIC_NAMES.bdevBytes(op), `Bytes of successful ${what} I/O (bdev_get_iostat)`, ['bdev'], perBdev((b) => b.io[key].bytes));
      }
      counter(METRIC_NAMES.bdevOps(op), `Successful ${what} I/Os (bdev_get_iostat)`, ['bdev'], perBdev((b) => b.io[key].ops));
      counter(
        METRIC_NAMES.bdevLatency(op),
        `Sum of the latencies of successful ${what} I/Os, submit to completion at the bdev layer (bdev_get_iostat)`,
        ['bdev'],
        perBdev((b) => b.io[key].latencySeconds),
      );
    }
    counter(METRIC_NAMES.bdevErrors, 'Failed I/Os (bdev_get_iostat io_error.failed)', ['bdev'], perBdev((b) => b.io.failed));
    // Only bdevs whose layer keeps them (bdev_enable_histogram, bdev_set_qos_limit).
    ExternalHistogram.create(reg, METRIC_NAMES.bdevLatencyHistogram, 'I/O latency of bdevs with a histogram enabled (bdev_enable_histogram)', async () => (await snap()).bdevs);
    counter(METRIC_NAMES.bdevQosThrottled, 'I/Os held back by a QoS rate limit (bdev_set_qos_limit)', ['bdev'], perBdev((b) => b.qos?.throttled_ios));
    gauge(METRIC_NAMES.bdevQosQueued, 'I/Os waiting for a later QoS time slice now', ['bdev'], perBdev((b) => b.qos?.queued_ios));

    // Per reactor: framework_get_reactors' busy and idle time.
    const perReactor = (pick: (r: ReactorStats) => number) =>
      function* (s: Snapshot): Iterable<Sample<'core'>> {
        for (const r of s.reactors ?? []) yield [{ core: String(r.core) }, pick(r)];
      };
    counter(METRIC_NAMES.reactorBusy, 'Time the reactor spent polling with work (framework_get_reactors busy)', ['core'], perReactor((r) => r.busyUs / 1e6));
    counter(METRIC_NAMES.reactorIdle, 'Time the reactor spent idle: polling without work or asleep (framework_get_reactors idle)', ['core'], perReactor((r) => r.idleUs / 1e6));
    counter(METRIC_NAMES.reactorWakeups, 'Times the reactor woke from sleeping on guest kicks (framework_get_reactors irq_count)', ['core'], perReactor((r) => r.wakeups));
    gauge(METRIC_NAMES.reactorBackendLatency, 'Mean backend I/O latency the reactor measures to choose between polling and sleeping (--backend-wait; 0 until measured)', ['core'], perReactor((r) => r.backendWait.latencyUs / 1e6));
    gauge(METRIC_NAMES.reactorSleeping, '1 while the reactor sleeps on guest kicks, 0 while it polls', ['core'], perReactor((r) => (r.inInterrupt ? 1 : 0)));
    gauge(METRIC_NAMES.reactorStatsUp, '1 when every reactor answered this scrape; 0 when reactor and controller metrics are missing', [], function* (s) {
      if (sources.reactors) yield [{}, s.reactors ? 1 : 0];
    });

    // Per controller: what the reactors count per virtqueue (there is no per-controller busy
    // time: a reactor's time is not split between the queues it serves).
    const perQueue = (pick: (q: { completed: number; inFlight: number }) => number) =>
      function* (s: Snapshot): Iterable<Sample<'controller' | 'queue' | 'core'>> {
        // Several sessions (front-ends) of a controller may each have a queue of that number.
        const sums = new Map<string, [Labels<'controller' | 'queue' | 'core'>, number]>();
        for (const r of s.reactors ?? []) {
          for (const q of r.queues) {
            const labels = { controller: q.device, queue: String(q.qid), core: String(r.core) };
            const key = JSON.stringify(labels);
            const e = sums.get(key);
            if (e) e[1] += pick(q);
            else sums.set(key, [labels, pick(q)]);
          }
        }
        yield* sums.values();
      };
    counter(
      METRIC_NAMES.controllerCompleted,
      'Requests completed by a controller\'s virtqueue on a reactor (framework_get_reactors queues; restarts with the queue)',
      ['controller', 'queue', 'core'],
      perQueue((q) => q.completed),
    );
    gauge(METRIC_NAMES.controllerInflight, 'Requests of a controller\'s virtqueue in flight now', ['controller', 'queue', 'core'], perQueue((q) => q.inFlight));

    const info = new Gauge({ name: METRIC_NAMES.buildInfo, help: 'vhostd version (always 1)', labelNames: ['version'], registers: [reg] });
    info.set({ version: sources.version }, 1);

    // The control thread's process_* and nodejs_* metrics (CPU, memory, event loop, GC).
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: reg });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** One scrape, in the Prometheus text exposition format. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }
}
