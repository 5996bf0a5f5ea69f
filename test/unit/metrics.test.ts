// The metrics registry (src/services/metrics) with a substituted bdev statistics source: the
// parts the bdev layer will provide (latency histogram buckets, QoS counts) come out as a
// Prometheus histogram and counters, and only for the bdevs that have them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import type { Bdev } from '../../src/bdev/bdev.js';
import type { BdevIoCounters, BdevMetricsSource } from '../../src/services/metrics/index.js';
import { VhostdMetrics } from '../../src/services/metrics/index.js';
import type { ReactorStats } from '../../src/reactor/messages.js';

const op = (ops: number, bytes = ops * 4096) => ({ bytes, ops, latencySeconds: ops * 1e-5 });
const io = (n: number): BdevIoCounters => ({ read: op(n), write: op(2 * n), unmap: op(0), flush: op(1, 0), writeZeroes: op(0), failed: 3 });

function registry(sources: Record<string, BdevMetricsSource | undefined>, reactors?: ReactorStats[] | Error): VhostdMetrics {
  return new VhostdMetrics(
    {
      bdevs: {
        list: () => Object.keys(sources).map((name) => ({ name }) as unknown as Bdev),
        layerOf: () => {
          throw new Error('not used: bdevSource stands in');
        },
      },
      bdevSource: (b) => sources[b.name],
      version: 'test',
      ...(reactors !== undefined ? { reactors: { cpumask: '0x1', stats: async () => { if (reactors instanceof Error) throw reactors; return reactors; } } } : {}),
    },
    { processMetrics: false },
  );
}

test('iostat counters, histogram buckets (cumulative, +Inf, _count, _sum) and QoS counts per bdev', async () => {
  const m = registry({
    plain: { io: () => io(10) },
    hist: {
      io: () => io(5),
      histogram: () => ({ bucketUpperBoundsSeconds: [1e-6, 1e-5, 1e-4], counts: [1, 4, 2], sumSeconds: 0.00025 }),
      qos: () => ({ throttled_ios: 42, queued_ios: 7 }),
    },
    inf: { io: () => io(1), histogram: () => ({ bucketUpperBoundsSeconds: [0.001, Infinity], counts: [2, 3] }), qos: () => undefined },
    none: undefined,
  });
  const text = await m.metrics();
  const fams = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
  const get = (name: string, bdev: string) => fams.get(name)?.metrics.find((x) => x.labels?.bdev === bdev);
  assert.equal(get('vhostd_bdev_read_ops_total', 'plain')?.value, '10');
  assert.equal(get('vhostd_bdev_write_bytes_total', 'plain')?.value, String(20 * 4096));
  assert.equal(get('vhostd_bdev_flush_ops_total', 'plain')?.value, '1');
  assert.equal(get('vhostd_bdev_io_errors_total', 'plain')?.value, '3');
  assert.equal(get('vhostd_bdev_read_ops_total', 'none'), undefined, 'a bdev without statistics is left out');
  assert.equal(fams.has('vhostd_bdev_flush_bytes_total'), false);

  // parse-prometheus-text-format merges a histogram's labelled series into one (it keeps only
  // the buckets of unlabelled histograms), so it vouches for the family's TYPE and the lines are
  // read here.
  assert.equal(fams.get('vhostd_bdev_io_latency_seconds')?.type, 'HISTOGRAM');
  const lines = text.split('\n').filter((l) => l.startsWith('vhostd_bdev_io_latency_seconds_'));
  assert.deepEqual(lines, [
    'vhostd_bdev_io_latency_seconds_bucket{bdev="hist",le="0.000001"} 1',
    'vhostd_bdev_io_latency_seconds_bucket{bdev="hist",le="0.00001"} 5',
    'vhostd_bdev_io_latency_seconds_bucket{bdev="hist",le="0.0001"} 7',
    'vhostd_bdev_io_latency_seconds_bucket{bdev="hist",le="+Inf"} 7',
    'vhostd_bdev_io_latency_seconds_sum{bdev="hist"} 0.00025',
    'vhostd_bdev_io_latency_seconds_count{bdev="hist"} 7',
    'vhostd_bdev_io_latency_seconds_bucket{bdev="inf",le="0.001"} 2',
    'vhostd_bdev_io_latency_seconds_bucket{bdev="inf",le="+Inf"} 5',
    'vhostd_bdev_io_latency_seconds_count{bdev="inf"} 5',
  ]);

  assert.equal(fams.get('vhostd_bdev_qos_throttled_ios_total')?.type, 'COUNTER');
  assert.deepEqual(fams.get('vhostd_bdev_qos_throttled_ios_total')?.metrics, [{ value: '42', labels: { bdev: 'hist' } }]);
  assert.deepEqual(fams.get('vhostd_bdev_qos_queued_ios')?.metrics, [{ value: '7', labels: { bdev: 'hist' } }]);
  assert.equal(fams.has('process_cpu_seconds_total'), false);
});

test('reactor busy/idle and per-queue completions; a failed reactor query is reported, not fatal', async () => {
  const r = (core: number, queues: ReactorStats['queues']): ReactorStats => ({ index: core, core, tid: 1, inInterrupt: core === 1, busyUs: 1_500_000, idleUs: 250, wakeups: 4, backendWait: { mode: 'adaptive', latencyUs: core === 0 ? 450 : 0, sleeps: 0, spinLatencyUs: 0, sleepLatencyUs: 0, kicklessSleeps: 0 }, gcCount: 0, heapUsed: 0, queues });
  const q = (device: string, qid: number, completed: number) => ({ devId: 1, device, qid, inFlight: 1, completed });
  const m = registry({}, [r(0, [q('c0', 0, 10), q('c0', 0, 5), q('c1', 1, 7)]), r(1, [])]);
  const fams = new Map(parsePrometheusTextFormat(await m.metrics()).map((f) => [f.name, f]));
  assert.deepEqual(fams.get('vhostd_reactor_busy_seconds_total')?.metrics.map((x) => [x.labels?.core, x.value]), [['0', '1.5'], ['1', '1.5']]);
  assert.deepEqual(fams.get('vhostd_reactor_idle_seconds_total')?.metrics.map((x) => x.value), ['0.00025', '0.00025']);
  assert.deepEqual(fams.get('vhostd_reactor_sleeping')?.metrics.map((x) => x.value), ['0', '1']);
  assert.deepEqual(fams.get('vhostd_reactor_backend_latency_seconds')?.metrics.map((x) => x.value), ['0.00045', '0']);
  // Two sessions' queue 0 of c0 on core 0 add up.
  assert.deepEqual(fams.get('vhostd_controller_completed_requests_total')?.metrics, [
    { value: '15', labels: { controller: 'c0', queue: '0', core: '0' } },
    { value: '7', labels: { controller: 'c1', queue: '1', core: '0' } },
  ]);
  assert.equal(fams.get('vhostd_reactor_stats_up')?.metrics[0].value, '1');

  const failed = registry({}, new Error('reactor gone'));
  const f2 = new Map(parsePrometheusTextFormat(await failed.metrics()).map((f) => [f.name, f]));
  assert.equal(f2.get('vhostd_reactor_stats_up')?.metrics[0].value, '0');
  assert.equal(f2.get('vhostd_reactor_busy_seconds_total')?.metrics.length, 0);
});

test('one snapshot per scrape: a scrape reads each bdev once', async () => {
  let reads = 0;
  const m = registry({ b: { io: () => (reads++, io(1)) } });
  await m.metrics();
  assert.equal(reads, 1);
  await Promise.all([m.metrics(), m.metrics()]);
  assert.ok(reads <= 3);
});
