// The Prometheus endpoint (--metrics-listen) of a real vhostd: scraped while the load generator
// runs and after, parsed by a real text-format parser (parse-prometheus-text-format), its bdev
// counters checked against bdev_get_iostat; off by default; startup errors that name the address.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import parsePrometheusTextFormat, { type PromFamily } from 'parse-prometheus-text-format';
import { VhostdProcess } from '../lib/vhostd.js';

const root = new URL('../../', import.meta.url).pathname;
const MiB = 1024 * 1024;

/** A TCP port nothing listens on right now (the kernel's pick). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface Scrape {
  families: Map<string, PromFamily>;
  contentType: string;
}

async function scrape(port: number, path = '/metrics'): Promise<Scrape> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  assert.equal(res.status, 200);
  const text = await res.text();
  const families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
  return { families, contentType: res.headers.get('content-type') ?? '' };
}

/** The value of `name`'s sample whose labels include `labels` (undefined if none). */
function sample(s: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const f = s.families.get(name);
  const m = f?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  return m?.value === undefined ? undefined : Number(m.value);
}

function sum(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const f = s.families.get(name);
  return (f?.metrics ?? []).filter((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v)).reduce((n, x) => n + Number(x.value), 0);
}

let failRuns = 0;
/** Runs vhostd to its (failed) end and returns exit status and stderr. */
function vhostdFails(args: string[], prefix: string[] = []): { status: number | null; stderr: string } {
  // /tmp: sticky and root's, so acceptable as a socket directory to any user (setpriv below).
  const rpc = join(tmpdir(), `vhostd-metrics-never-${process.pid}-${failRuns++}.sock`);
  const cmd = [...prefix, process.execPath, '--import', 'tsx', 'src/cli/vhostd.ts', '-S', tmpdir(), '-r', rpc, ...args];
  const r = spawnSync(cmd[0], cmd.slice(1), { cwd: root, timeout: 30_000 });
  assert.equal(existsSync(rpc), false, 'a failed start leaves no RPC socket');
  return { status: r.status, stderr: r.stderr.toString() };
}

/** Inodes of the TCP sockets in LISTEN state (/proc/net/tcp and tcp6). */
function listeningInodes(): Set<string> {
  const out = new Set<string>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[3] === '0A') out.add(cols[9]);
    }
  }
  return out;
}

function socketInodes(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.push(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

const BDEV_COUNTERS: Array<[string, string]> = [
  ['vhostd_bdev_read_bytes_total', 'bytes_read'],
  ['vhostd_bdev_read_ops_total', 'num_read_ops'],
  ['vhostd_bdev_write_bytes_total', 'bytes_written'],
  ['vhostd_bdev_write_ops_total', 'num_write_ops'],
  ['vhostd_bdev_unmap_bytes_total', 'bytes_unmapped'],
  ['vhostd_bdev_unmap_ops_total', 'num_unmap_ops'],
  ['vhostd_bdev_flush_ops_total', 'num_flush_ops'],
];

describe('Prometheus metrics endpoint', { timeout: 180_000 }, () => {
  let d: VhostdProcess;
  let port: number;
  before(async () => {
    port = await freePort();
    d = await VhostdProcess.start(['-m', '0x3', '--metrics-listen', String(port)]);
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: (8 * MiB) / 512, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'blk0', dev_name: 'M0', cpumask: '0x3' });
  });
  after(async () => {
    if (d?.alive) assert.equal(await d.stop(), 0);
  });

  test('listens on loopback only, serves /metrics in the text format, 404 elsewhere', async () => {
    const s = await scrape(port);
    assert.match(s.contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(sample(s, 'vhostd_bdev_read_ops_total', { bdev: 'M0' }), 0);
    assert.equal(s.families.get('vhostd_bdev_read_ops_total')?.type, 'COUNTER');
    assert.equal(s.families.get('vhostd_reactor_busy_seconds_total')?.type, 'COUNTER');
    assert.equal(s.families.get('vhostd_reactor_sleeping')?.type, 'GAUGE');
    assert.equal(s.families.get('vhostd_bdev_io_latency_seconds')?.type, 'HISTOGRAM');
    // Histograms and QoS counters appear only for bdevs whose layer keeps them.
    assert.equal(s.families.get('vhostd_bdev_io_latency_seconds')?.metrics.length, 0);
    assert.deepEqual(
      s.families.get('vhostd_reactor_idle_seconds_total')?.metrics.map((m) => m.labels?.core).sort(),
      ['0', '1'],
    );
    assert.equal(sample(s, 'vhostd_reactor_stats_up'), 1);
    assert.equal(sample(s, 'vhostd_build_info')! >= 1, true);
    assert.ok(s.families.has('process_cpu_seconds_total'));
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/metrics/x`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 405);
    // A bare port binds 127.0.0.1, not every address.
    const line = await d.waitForLog(/metrics endpoint listening/);
    assert.match(line, new RegExp(`http://127\\.0\\.0\\.1:${port}/metrics`));
  });

  test('counters rise during a load and equal bdev_get_iostat after it', async () => {
    const load: ChildProcess = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/vhost-load.ts', '-s', d.socket('blk0'), '-q', '2', '-d', '16', '--rw', 'randrw', '-t', '3', '--range', '4m', '--json'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    load.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    load.stderr?.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => load.on('exit', (code) => r(code)));
    let running = true;
    void exited.then(() => (running = false));

    // During the load: every counter of M0 is non-decreasing from one scrape to the next.
    const seen: Scrape[] = [];
    let controllerSeen = 0;
    while (running) {
      const s = await scrape(port);
      seen.push(s);
      controllerSeen = Math.max(controllerSeen, sum(s, 'vhostd_controller_completed_requests_total', { controller: 'blk0' }));
      await new Promise((r) => setTimeout(r, 150));
    }
    assert.equal(await exited, 0, err);
    const result = JSON.parse(out) as { ios: number; errors: number };
    assert.equal(result.errors, 0);
    assert.ok(seen.length >= 5, `only ${seen.length} scrapes during the load`);
    for (let i = 1; i < seen.length; i++) {
      for (const [name] of BDEV_COUNTERS) {
        const a = sample(seen[i - 1], name, { bdev: 'M0' })!;
        const b = sample(seen[i], name, { bdev: 'M0' })!;
        assert.ok(b >= a, `${name} went from ${a} to ${b}`);
      }
      const busyA = sum(seen[i - 1], 'vhostd_reactor_busy_seconds_total');
      const busyB = sum(seen[i], 'vhostd_reactor_busy_seconds_total');
      assert.ok(busyB >= busyA, `reactor busy time went from ${busyA} to ${busyB}`);
    }
    const mid = seen.filter((s) => (sample(s, 'vhostd_bdev_read_ops_total', { bdev: 'M0' }) ?? 0) > 0);
    assert.ok(mid.length >= 3, 'the counters moved while the load ran');
    // Per controller: the virtqueues' completions, while the front-end was connected.
    assert.ok(controllerSeen > 0, 'blk0 completed requests while the load ran');

    // After the load: the scrape equals bdev_get_iostat taken right after it.
    const s = await scrape(port);
    const iostat = await d.rpc<{ tick_rate: number; bdevs: Array<Record<string, number> & { name: string }> }>('bdev_get_iostat', { name: 'M0' });
    const st = iostat.bdevs[0];
    assert.ok(st.num_read_ops > 1000 && st.num_write_ops > 1000, JSON.stringify(st));
    assert.ok(st.num_read_ops + st.num_write_ops >= result.ios);
    for (const [name, key] of BDEV_COUNTERS) assert.equal(sample(s, name, { bdev: 'M0' }), st[key], `${name} vs ${key}`);
    for (const op of ['read', 'write']) {
      const secs = sample(s, `vhostd_bdev_${op}_latency_seconds_total`, { bdev: 'M0' })!;
      assert.ok(Math.abs(secs - st[`${op}_latency_ticks`] / iostat.tick_rate) <= 1e-9 * Math.max(1, secs), `${op} latency ${secs} s vs ${st[`${op}_latency_ticks`]} ticks`);
    }
    assert.equal(sample(s, 'vhostd_bdev_io_errors_total', { bdev: 'M0' }), 0);
    assert.ok(sum(s, 'vhostd_reactor_busy_seconds_total') > 0, 'reactors were busy');
    for (const m of s.families.get('vhostd_reactor_idle_seconds_total')!.metrics) assert.ok(Number(m.value) > 0);
  });

  test('a deleted bdev leaves the exposition', async () => {
    await d.rpc('bdev_null_create', { name: 'N0', num_blocks: 1024, block_size: 512 });
    assert.equal(sample(await scrape(port), 'vhostd_bdev_write_ops_total', { bdev: 'N0' }), 0);
    await d.rpc('bdev_null_delete', { name: 'N0' });
    assert.equal(sample(await scrape(port), 'vhostd_bdev_write_ops_total', { bdev: 'N0' }), undefined);
  });

  test('a bdev with a histogram and a QoS limit: buckets and throttled I/O match the RPCs', async () => {
    await d.rpc('bdev_null_create', { name: 'N1', num_blocks: (64 * MiB) / 512, block_size: 512 });
    await d.rpc('bdev_enable_histogram', { name: 'N1', enable: true });
    await d.rpc('bdev_set_qos_limit', { name: 'N1', rw_ios_per_sec: 1000 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'blk1', dev_name: 'N1' });
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/vhost-load.ts', '-s', d.socket('blk1'), '-d', '8', '--rw', 'randrw', '-t', '1.5', '--json'], { cwd: root, timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr.toString());
    await d.deleteController('blk1');
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    const text = await res.text();
    const s: Scrape = { families: new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f])), contentType: '' };
    const iostat = (await d.rpc<{ bdevs: Array<Record<string, number>> }>('bdev_get_iostat', { name: 'N1' })).bdevs[0];
    const ios = iostat.num_read_ops + iostat.num_write_ops;
    // 1000 IO/s for 1.5 s, with a queue of 8: most requests were held at least once.
    assert.ok(ios > 500 && ios < 3000, `${ios} I/Os under a 1000 IO/s limit`);
    assert.equal(sample(s, 'vhostd_bdev_qos_throttled_ios_total', { bdev: 'N1' }), iostat.qos_held_ops);
    assert.ok(iostat.qos_held_ops > 0);
    assert.equal(sample(s, 'vhostd_bdev_qos_throttled_ios_total', { bdev: 'M0' }), 0);
    // The histogram (parse-prometheus-text-format keeps no labels of histogram series, so its
    // lines are read here): cumulative buckets, +Inf and _count equal to the I/Os it recorded,
    // which is what bdev_get_histogram's buckets add up to.
    assert.equal(s.families.get('vhostd_bdev_io_latency_seconds')?.type, 'HISTOGRAM');
    const buckets = [...text.matchAll(/^vhostd_bdev_io_latency_seconds_bucket\{bdev="N1",le="([^"]+)"\} (\S+)$/gm)].map((m) => [m[1], Number(m[2])] as const);
    assert.ok(buckets.length > 10);
    assert.equal(buckets[buckets.length - 1][0], '+Inf');
    for (let i = 1; i < buckets.length; i++) {
      assert.ok(Number(buckets[i][0].replace('+Inf', 'Infinity')) > Number(buckets[i - 1][0]));
      assert.ok(buckets[i][1] >= buckets[i - 1][1]);
    }
    const count = Number(/^vhostd_bdev_io_latency_seconds_count\{bdev="N1"\} (\S+)$/m.exec(text)?.[1]);
    assert.equal(buckets[buckets.length - 1][1], count);
    const h = await d.rpc<{ histogram: string }>('bdev_get_histogram', { name: 'N1' });
    const raw = Buffer.from(h.histogram, 'base64');
    let total = 0;
    for (let o = 0; o < raw.length; o += 8) total += Number(raw.readBigUInt64LE(o));
    assert.equal(count, total);
    assert.equal(count, ios);
    // Only N1 has a histogram.
    assert.doesNotMatch(text, /^vhostd_bdev_io_latency_seconds_bucket\{bdev="M0"/m);
    await d.rpc('bdev_null_delete', { name: 'N1' });
  });

  test('the listener closes on shutdown', async () => {
    assert.equal(await d.stop(), 0);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`));
  });
});

describe('metrics endpoint: off by default, bad addresses', { timeout: 120_000 }, () => {
  test('without --metrics-listen vhostd listens on no TCP port', async () => {
    const d = await VhostdProcess.start([]);
    try {
      const listening = listeningInodes();
      const mine = socketInodes(d.proc.pid!);
      assert.ok(mine.length > 0, 'vhostd has sockets (RPC)');
      assert.deepEqual(mine.filter((i) => listening.has(i)), [], 'a TCP listener of vhostd');
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('a port in use: vhostd stops at start and names the address', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as { port: number }).port;
    try {
      const r = vhostdFails(['--metrics-listen', String(port)]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`vhostd: cannot listen for metrics on 127\\.0\\.0\\.1:${port}: the address is already in use \\(EADDRINUSE\\)`));
      // The pino log line says it too.
      const logged = r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string; metrics?: string; code?: string });
      assert.ok(logged.some((l) => l.level === 50 && l.code === 'EADDRINUSE' && l.metrics === `127.0.0.1:${port}`), r.stderr);
    } finally {
      busy.close();
    }
  });

  test('an address not on this host (EADDRNOTAVAIL) is named', () => {
    const r = vhostdFails(['--metrics-listen', '192.0.2.1:9100']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /vhostd: cannot listen for metrics on 192\.0\.2\.1:9100: .*\(EADDRNOTAVAIL\)/);
  });

  const asRoot = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v setpriv']).status === 0;
  const unprivStart = (() => {
    try {
      return Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'));
    } catch {
      return 1024;
    }
  })();
  test('a privileged port as an unprivileged user (EACCES) is named', { skip: !asRoot || unprivStart <= 1 ? 'needs root, setpriv and privileged ports' : false }, () => {
    const r = vhostdFails(['--metrics-listen', '1'], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /vhostd: cannot listen for metrics on 127\.0\.0\.1:1: permission denied.*\(EACCES\)/);
  });

  test('malformed --metrics-listen values are refused with the reason', () => {
    for (const [arg, re] of [
      ['0', /port must be a number from 1 to 65535/],
      ['65536', /port must be a number from 1 to 65535/],
      ['::1:9100', /IPv6 address in brackets, as \[::1\]:9100/],
      ['[127.0.0.1]:9100', /is not an IPv6 address/],
      [':9100', /address before the port is empty/],
      ['host', /expected PORT, ADDR:PORT or \[IPv6\]:PORT/],
    ] as const) {
      const r = vhostdFails(['--metrics-listen', arg]);
      assert.equal(r.status, 1, `${arg}: ${r.stderr}`);
      assert.match(r.stderr, re, arg);
    }
  });
});
