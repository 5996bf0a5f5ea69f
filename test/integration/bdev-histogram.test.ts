// Latency histograms and iostat resets against a running vhostd: a delay bdev with a fixed
// latency puts the p50 of bdev_get_histogram between that latency and the p50 the initiator
// measured itself — decoded by vhostd's own decoder
// and, when SPDK's source is at hand ($SPDK_GIT with tag v25.09), by SPDK's own scripts/rpc.py
// piped into scripts/histogram.py; bdev_reset_iostat; and the RPCs' bad input.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { decodeHistogram, percentiles } from '../../src/bdev/histogram.js';
import { RpcError } from '../../src/rpc/client.js';
import { VhostdProcess } from '../lib/vhostd.js';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const MiB = 1024 * 1024;
const DELAY_US = 2000;

interface HistogramReply {
  histogram: string;
  granularity: number;
  min_range: number;
  max_range: number;
  tsc_rate: number;
}

interface LoadReport {
  ios: number;
  errors: number;
  /** The initiator's own round-trip latencies. */
  latency: { p50Us: number; p99Us: number };
}

async function load(socket: string, args: string[]): Promise<LoadReport> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli/vhost-load.ts', '-s', socket, '--json', ...args], { cwd: root, timeout: 60_000 });
  return JSON.parse(stdout) as LoadReport;
}

/** SPDK v25.09's scripts/rpc.py and scripts/histogram.py, extracted from $SPDK_GIT; undefined without it. */
function spdkScripts(): string | undefined {
  const git = process.env.SPDK_GIT;
  if (git === undefined || !existsSync(git)) return undefined;
  try {
    if (execFileSync('git', ['-C', git, 'tag', '-l', 'v25.09']).toString().trim() !== 'v25.09') return undefined;
    const dir = mkdtempSync(join(tmpdir(), 'spdk-v25.09-'));
    execFileSync('sh', ['-c', 'git -C "$1" archive v25.09 scripts/rpc.py scripts/histogram.py python | tar -x -C "$2"', 'sh', git, dir]);
    return dir;
  } catch {
    return undefined;
  }
}

describe('latency histograms (bdev_enable_histogram, bdev_get_histogram)', { timeout: 180_000 }, () => {
  let d: VhostdProcess;
  const spdk = spdkScripts();
  before(async () => {
    d = await VhostdProcess.start(['-m', '0x1']);
    await d.rpc('bdev_null_create', { name: 'N0', num_blocks: (64 * MiB) / 512, block_size: 512 });
    await d.rpc('bdev_delay_create', {
      base_bdev_name: 'N0',
      name: 'D0',
      avg_read_latency: DELAY_US,
      p99_read_latency: DELAY_US,
      avg_write_latency: DELAY_US,
      p99_write_latency: DELAY_US,
    });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'd0', dev_name: 'D0' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
    if (spdk) rmSync(spdk, { recursive: true, force: true });
  });

  test(`a delay bdev of ${DELAY_US} µs: p50 between the delay and the initiator's p50, from vhostd's decoder`, async () => {
    await d.rpc('bdev_enable_histogram', { name: 'D0', enable: true });
    const r = await load(d.socket('d0'), ['-d', '16', '--rw', 'randrw', '-t', '2']);
    assert.equal(r.errors, 0);
    const h = await d.rpc<HistogramReply>('bdev_get_histogram', { name: 'D0' });
    assert.deepEqual(Object.keys(h), ['histogram', 'granularity', 'min_range', 'max_range', 'tsc_rate']);
    const counts = decodeHistogram(h.histogram);
    const total = counts.reduce((a, b) => a + b, 0);
    const stats = await d.rpc<{ bdevs: Array<{ num_read_ops: number; num_write_ops: number }> }>('bdev_get_iostat', { name: 'D0' });
    assert.equal(total, stats.bdevs[0].num_read_ops + stats.bdevs[0].num_write_ops, 'every counted I/O is in the histogram');
    const [p50, p99] = percentiles(counts, [50, 99], h.min_range).map((t) => (t * 1e6) / h.tsc_rate);
    // The delay is a floor, and the bdev's time is part of the round trip the initiator timed:
    // the histogram's p50 lies between the two (2% for its buckets). Unloaded they are within a
    // few % of each other; on a loaded machine timers and wake-ups run late (CI once saw the
    // bdev's p50 at 2212 µs for a 2000 µs delay, and here 2163 against the initiator's 2408).
    const seen = r.latency.p50Us;
    assert.ok(seen >= DELAY_US * 0.98, `the initiator's p50 ${seen} µs is at least the delay`);
    assert.ok(p50 >= DELAY_US * 0.98 && p50 <= seen * 1.02, `p50 ${p50.toFixed(0)} µs, between the delay and the initiator's ${seen} µs`);
    // Each I/O's bdev time is within its round trip, so every percentile is too (10% for the I/O
    // of the initiator's warm-up, which the bdev counts and the initiator does not).
    assert.ok(p99 >= p50 && p99 <= r.latency.p99Us * 1.1, `p99 ${p99.toFixed(0)} µs, the initiator's ${r.latency.p99Us} µs`);
    // The base bdev has its own layer: it is not histogrammed, its I/O took ~0 µs.
    await assert.rejects(d.rpc('bdev_get_histogram', { name: 'N0' }), (e: RpcError) => e.code === -12);
  });

  test("SPDK's rpc.py | histogram.py decodes vhostd's output", { skip: spdk ? false : 'set SPDK_GIT to an SPDK clone with tag v25.09 (python3, git)' }, async () => {
    const rpcPy = join(spdk!, 'scripts/rpc.py');
    await run('python3', [rpcPy, '-s', d.rpcSocket, 'bdev_enable_histogram', '--disable', 'D0']);
    await run('python3', [rpcPy, '-s', d.rpcSocket, 'bdev_enable_histogram', '--enable', '--opc', 'read', 'D0']);
    const r = await load(d.socket('d0'), ['-d', '16', '--rw', 'randread', '-t', '2']);
    assert.equal(r.errors, 0);
    const { stdout } = await run('sh', ['-c', 'python3 "$1" -s "$2" bdev_get_histogram D0 | python3 "$3"', 'sh', rpcPy, d.rpcSocket, join(spdk!, 'scripts/histogram.py')]);
    // "  start_us -   end_us:  cumulative%  (count)", one line per non-empty bucket.
    const rows = [...stdout.matchAll(/^\s*([\d.]+)\s+-\s+([\d.]+):\s+([\d.]+)%\s+\(\s*(\d+)\)/gm)].map((m) => ({ end: Number(m[2]), cum: Number(m[3]), n: Number(m[4]) }));
    assert.ok(rows.length > 0, stdout);
    const counted = rows.reduce((a, x) => a + x.n, 0);
    assert.ok(Math.abs(counted - r.ios) <= r.ios * 0.05 + 64, `histogram.py counted ${counted} I/O, the initiator ${r.ios}`);
    const p50 = rows.find((x) => x.cum >= 50)!.end;
    // As above: between the delay and the initiator's p50 (5% for the bucket's end).
    assert.ok(p50 >= DELAY_US * 0.98 && p50 <= r.latency.p50Us * 1.05, `histogram.py's p50 bucket ends at ${p50} µs, the initiator's p50 is ${r.latency.p50Us} µs:\n${stdout}`);
    // save_config as rpc.py writes it, and bdev_set_qos_limit through rpc.py.
    await run('python3', [rpcPy, '-s', d.rpcSocket, 'bdev_set_qos_limit', '--rw-ios-per-sec', '20000', 'N0']);
    const cfg = JSON.parse((await run('python3', [rpcPy, '-s', d.rpcSocket, 'save_config'])).stdout) as { subsystems: Array<{ subsystem: string; config: Array<{ method: string; params: Record<string, unknown> }> }> };
    const bdevCfg = cfg.subsystems.find((s) => s.subsystem === 'bdev')!.config;
    assert.deepEqual(bdevCfg.find((c) => c.method === 'bdev_set_qos_limit')?.params, { name: 'N0', rw_ios_per_sec: 20000 });
    assert.deepEqual(bdevCfg.find((c) => c.method === 'bdev_enable_histogram')?.params, { name: 'D0', enable: true, opc: 'read' });
    await d.rpc('bdev_set_qos_limit', { name: 'N0', rw_ios_per_sec: 0 });
  });

  test('bdev_reset_iostat: all zeroes the counters, maxmin only the max/min latencies', async () => {
    await load(d.socket('d0'), ['-d', '4', '--rw', 'randread', '-n', '400']);
    type S = { bdevs: Array<{ num_read_ops: number; bytes_read: number; max_read_latency_ticks: number; min_read_latency_ticks: number }> };
    const a = await d.rpc<S>('bdev_get_iostat', { name: 'D0' });
    assert.ok(a.bdevs[0].num_read_ops >= 400 && a.bdevs[0].max_read_latency_ticks > 0);
    assert.equal(await d.rpc('bdev_reset_iostat', { name: 'D0', mode: 'maxmin' }), true);
    const b = await d.rpc<S>('bdev_get_iostat', { name: 'D0' });
    assert.equal(b.bdevs[0].num_read_ops, a.bdevs[0].num_read_ops, 'maxmin keeps the counts');
    assert.equal(b.bdevs[0].max_read_latency_ticks, 0);
    assert.equal(b.bdevs[0].min_read_latency_ticks, 0);
    assert.equal(await d.rpc('bdev_reset_iostat', {}), true, 'no name: every bdev, mode all');
    const c = await d.rpc<S>('bdev_get_iostat', {});
    for (const x of c.bdevs) assert.equal(x.num_read_ops + x.bytes_read, 0);
    await load(d.socket('d0'), ['-d', '4', '--rw', 'randread', '-n', '300']);
    const e = await d.rpc<S>('bdev_get_iostat', { name: 'D0', reset_mode: 'all' });
    assert.ok(e.bdevs[0].num_read_ops >= 300 && e.bdevs[0].num_read_ops < 400, `${e.bdevs[0].num_read_ops} reads counted after the reset`);
    const f = await d.rpc<S>('bdev_get_iostat', { name: 'D0' });
    assert.equal(f.bdevs[0].num_read_ops, 0, 'reset_mode all after reading');
  });

  test('bad input: unknown bdev, unknown opc, unknown mode, a deleted bdev', async () => {
    const code = (p: Promise<unknown>) => p.then(() => 0, (e: RpcError) => e.code);
    assert.equal(await code(d.rpc('bdev_enable_histogram', { name: 'nope', enable: true })), -19);
    assert.equal(await code(d.rpc('bdev_enable_histogram', { name: 'D0', enable: true, opc: 'frobnicate' })), -32603);
    assert.equal(await code(d.rpc('bdev_enable_histogram', { name: 'D0' })), -32603);
    assert.equal(await code(d.rpc('bdev_enable_histogram', { name: 'D0', enable: true, granularity: 4 })), -32602);
    assert.equal(await code(d.rpc('bdev_get_histogram', { name: 'nope' })), -19);
    assert.equal(await code(d.rpc('bdev_reset_iostat', { mode: 'some' })), -32603);
    assert.equal(await code(d.rpc('bdev_reset_iostat', { name: 'nope' })), -19);
    await d.rpc('bdev_null_create', { name: 'Gone', num_blocks: 2048, block_size: 512 });
    await d.rpc('bdev_enable_histogram', { name: 'Gone', enable: true });
    await d.rpc('bdev_null_delete', { name: 'Gone' });
    assert.equal(await code(d.rpc('bdev_get_histogram', { name: 'Gone' })), -19);
    assert.equal(await code(d.rpc('bdev_enable_histogram', { name: 'Gone', enable: false })), -19);
    assert.ok(d.alive);
  });
});
