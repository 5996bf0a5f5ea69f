// vhostctl's bdev layer subcommands: bdev_set_qos_limit, bdev_enable_histogram,
// bdev_get_histogram, bdev_reset_iostat and bdev_get_iostat --reset-mode take rpc.py's arguments
// and build rpc.py's params (checked against SPDK v25.09's scripts/rpc.py when it is around);
// bdev_get_histogram --table shows percentiles; bdev_get_iostat --table --interval shows measured
// rates next to the QoS limits.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { openBdev } from '../../src/bdev/channels.js';
import { bucketEnd, bucketOf } from '../../src/bdev/histogram.js';
import { IoStatus, IoType, IoVecs } from '../../src/bdev/io.js';
import { main } from '../../src/cli/vhostctl.js';
import { histogramTable, iostatRateTable } from '../../src/cli/vhostctl/tables.js';
import { type TestServer, startTestServer } from './helpers/rpc-fixture.js';

interface Run {
  code: number;
  out: string;
  err: string;
}

/** vhostctl in-process (so the test can push I/O while it samples). */
async function vhostctl(...args: string[]): Promise<Run> {
  let out = '';
  let err = '';
  const code = await main(['node', 'vhostctl', ...args], { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

/** The request `vhostctl --dry-run ARGS` would send, as JSON text (key order included). */
async function dryRun(args: string[]): Promise<string> {
  const r = await vhostctl('--dry-run', ...args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
  assert.ok(r.out.startsWith('Request:\n'), r.out);
  return JSON.stringify(JSON.parse(r.out.slice('Request:\n'.length)));
}

/** Table body rows (cli-table3, no row separators) split into trimmed cells. */
function cells(table: string): string[][] {
  return table
    .split('\n')
    .filter((l) => l.startsWith('│'))
    .map((l) =>
      l
        .slice(1, -1)
        .split('│')
        .map((c) => c.trim()),
    );
}

function submit(ch: BdevChannel, type: IoType, offset: number, length: number): Promise<IoStatus> {
  return new Promise((resolve) => {
    const iov = new IoVecs(1);
    iov.push(new Uint8Array(length), 0, length);
    ch.submit({ type, offset, length, iov, complete: resolve });
  });
}

// What SPDK v25.09's scripts/rpc.py sends for these command lines (recorded from it: a socket that
// answers `true` and logs each request). `null`: no params.
const RPC_PY: Array<[string[], string, object | null]> = [
  [['bdev_set_qos_limit', 'Malloc0', '--rw-ios-per-sec', '1500', '--w_mbytes_per_sec', '3'], 'bdev_set_qos_limit', { name: 'Malloc0', rw_ios_per_sec: 1500, w_mbytes_per_sec: 3 }],
  [['bdev_set_qos_limit', 'Malloc0', '--rw-ios-per-sec', '0'], 'bdev_set_qos_limit', { name: 'Malloc0', rw_ios_per_sec: 0 }],
  [['bdev_set_qos_limit', 'Malloc0'], 'bdev_set_qos_limit', { name: 'Malloc0' }],
  [
    ['bdev_set_qos_limit', 'Malloc0', '--rw_mbytes_per_sec', '10', '--r-mbytes-per-sec', '0'],
    'bdev_set_qos_limit',
    { name: 'Malloc0', rw_mbytes_per_sec: 10, r_mbytes_per_sec: 0 },
  ],
  [['bdev_enable_histogram', 'Malloc0'], 'bdev_enable_histogram', { name: 'Malloc0', enable: true }],
  [
    ['bdev_enable_histogram', '-d', 'Malloc0', '--opc', 'read', '--granularity', '0', '--min-nsec', '0'],
    'bdev_enable_histogram',
    { name: 'Malloc0', enable: false, opc: 'read', granularity: 0, min_nsec: 0 },
  ],
  [
    ['bdev_enable_histogram', 'Malloc0', '-o', 'write', '--granularity', '5', '--min-nsec', '100', '--max-nsec', '1000000'],
    'bdev_enable_histogram',
    { name: 'Malloc0', enable: true, opc: 'write', granularity: 5, min_nsec: 100, max_nsec: 1000000 },
  ],
  [['bdev_enable_histogram', 'Malloc0', '--min_nsec', '10', '--enable'], 'bdev_enable_histogram', { name: 'Malloc0', enable: true, min_nsec: 10 }],
  // argparse: -e and -d store into one `enable`, the last one wins.
  [['bdev_enable_histogram', '-e', '-d', 'Malloc0'], 'bdev_enable_histogram', { name: 'Malloc0', enable: false }],
  [['bdev_enable_histogram', '-d', '-e', 'Malloc0'], 'bdev_enable_histogram', { name: 'Malloc0', enable: true }],
  [['bdev_get_histogram', 'Malloc0'], 'bdev_get_histogram', { name: 'Malloc0' }],
  [['bdev_reset_iostat'], 'bdev_reset_iostat', null],
  [['bdev_reset_iostat', '-b', 'M', '-m', 'none'], 'bdev_reset_iostat', { name: 'M', mode: 'none' }],
  [['bdev_reset_iostat', '--mode', 'maxmin'], 'bdev_reset_iostat', { mode: 'maxmin' }],
  [['bdev_get_iostat', '-b', 'M', '-c', '--reset-mode', 'maxmin'], 'bdev_get_iostat', { name: 'M', per_channel: true, reset_mode: 'maxmin' }],
];

/** Runs SPDK's scripts/rpc.py against a socket that records each request and answers `true`. */
async function rpcPyRequests(rpcPy: string, lines: string[][]): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'vhostctl-rpcpy-'));
  const sock = join(dir, 'rpc.sock');
  const seen: string[] = [];
  const server: Server = createServer((c) => {
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      try {
        const req = JSON.parse(buf) as { id: number; method: string; params?: object };
        buf = '';
        seen.push(JSON.stringify({ method: req.method, params: req.params ?? null }));
        c.write(JSON.stringify({ jsonrpc: '2.0', id: req.id, result: true }));
      } catch {
        // incomplete: wait for more
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  try {
    const out: string[] = [];
    for (const args of lines) {
      const before = seen.length;
      await new Promise<void>((resolve, reject) =>
        execFile('python3', [rpcPy, '-s', sock, ...args], { timeout: 20_000 }, (err, _o, stderr) => (err ? reject(new Error(`rpc.py ${args.join(' ')}: ${stderr}`)) : resolve())),
      );
      out.push(seen.length > before ? (seen[seen.length - 1] ?? '') : '(no request)');
    }
    return out;
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('vhostctl bdev layer subcommands: rpc.py arguments → params', () => {
  it('build the params SPDK v25.09 rpc.py builds, in its key order', async () => {
    for (const [args, method, params] of RPC_PY) {
      // --dry-run shows no params as {} (the request then carries none, as rpc.py's).
      assert.equal(await dryRun(args), JSON.stringify({ method, params: params ?? {} }), args.join(' '));
    }
  });

  const rpcPy = process.env.SPDK_RPC_PY ?? '/work/spdk-build/scripts/rpc.py';
  it('match what the real scripts/rpc.py sends', { skip: existsSync(rpcPy) ? false : `no ${rpcPy}` }, async () => {
    const real = await rpcPyRequests(
      rpcPy,
      RPC_PY.map(([args]) => args),
    );
    RPC_PY.forEach(([args, method, params], i) => assert.equal(real[i], JSON.stringify({ method, params }), `rpc.py ${args.join(' ')}`));
  });

  it('bdev_get_iostat keeps v24.01 rpc.py params (no per_channel:false) and adds --reset-mode', async () => {
    assert.equal(await dryRun(['bdev_get_iostat', '--reset_mode', 'all']), JSON.stringify({ method: 'bdev_get_iostat', params: { reset_mode: 'all' } }));
    assert.equal(await dryRun(['bdev_get_iostat']), JSON.stringify({ method: 'bdev_get_iostat', params: {} }));
  });

  it('refuses what rpc.py refuses', async () => {
    const badMode = await vhostctl('--dry-run', 'bdev_reset_iostat', '-m', 'bogus');
    assert.equal(badMode.code, 1);
    assert.match(badMode.err, /Allowed choices are all, maxmin, none/);
    const badReset = await vhostctl('--dry-run', 'bdev_get_iostat', '--reset-mode', 'some');
    assert.equal(badReset.code, 1);
    const badInt = await vhostctl('--dry-run', 'bdev_set_qos_limit', 'M', '--rw-ios-per-sec', '1k');
    assert.equal(badInt.code, 1);
    assert.match(badInt.err, /invalid int value: '1k'/);
    const noName = await vhostctl('--dry-run', 'bdev_get_histogram');
    assert.equal(noName.code, 1);
    assert.match(noName.err, /required: name/);
    const two = await vhostctl('--dry-run', 'bdev_get_histogram', 'A', 'B');
    assert.equal(two.code, 1);
    assert.match(two.err, /more than one name needs --table/);
  });
});

describe('vhostctl bdev layer subcommands against the RPC server', () => {
  let t: TestServer;
  const ctl = (...args: string[]) => vhostctl('-s', t.socketPath, ...args);

  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(async () => {
    await t.stop();
  });

  it('bdev_enable_histogram + bdev_get_histogram --table: plausible percentiles of a 2000 µs delay bdev', async () => {
    assert.equal((await ctl('bdev_null_create', 'N0', '8', '512')).code, 0);
    const delay = await ctl('bdev_delay_create', '-b', 'N0', '-d', 'D0', '-r', '2000', '-t', '2000', '-w', '2000', '-n', '2000');
    assert.equal(delay.code, 0, delay.err);
    assert.deepEqual(await ctl('bdev_enable_histogram', 'D0', '--opc', 'read'), { code: 0, out: '', err: '' });

    const ch = openBdev(t.bdevs.openSpec(t.bdevs.get('D0')));
    const N = 200;
    for (let done = 0; done < N; done += 8) {
      const batch = Array.from({ length: Math.min(8, N - done) }, (_, i) => submit(ch, IoType.READ, (done + i) * 512, 512));
      assert.ok((await Promise.all(batch)).every((s) => s === IoStatus.SUCCESS));
    }
    await submit(ch, IoType.WRITE, 0, 512); // --opc read: not counted
    ch.close();

    const json = await ctl('bdev_get_histogram', 'D0');
    assert.equal(json.code, 0, json.err);
    assert.deepEqual(Object.keys(JSON.parse(json.out) as object), ['histogram', 'granularity', 'min_range', 'max_range', 'tsc_rate']);

    const table = await ctl('bdev_get_histogram', 'D0', '--table');
    assert.equal(table.code, 0, table.err);
    const [head, row] = table.out.split('\n').filter((l) => l.startsWith('│'));
    assert.match(head ?? '', /Name +│ I\/Os +│ Min \(us\) +│ p50 \(us\) +│ p90 \(us\) +│ p99 \(us\) +│ p99\.9 \(us\) +│ Max \(us\)/);
    const [name, count, ...us] = cells(row ?? '')[0] ?? [];
    assert.equal(name, 'D0');
    assert.equal(count, String(N));
    const [min, p50, p90, p99, p999, max] = us.map(Number);
    // Each I/O waited the delay bdev's 2000 µs (timers fire late, never early).
    assert.ok(min >= 1990 && min <= p50, `min ${min} p50 ${p50}`);
    assert.ok(p50 >= 2000 && p50 < 20_000, `p50 ${p50}`);
    assert.ok(p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max, us.join(' '));
    assert.equal(p999, max, 'p99.9 of 200 I/Os is the slowest one');

    // No names: every bdev with an enabled histogram (N0 has none and is left out).
    const all = await ctl('bdev_get_histogram', '--table');
    assert.equal(all.code, 0, all.err);
    assert.deepEqual(
      cells(all.out)
        .slice(1)
        .map((c) => c[0]),
      ['D0'],
    );
    // A named bdev without a histogram is SPDK's error, reported as rpc.py does.
    const off = await ctl('bdev_get_histogram', 'D0', 'N0', '--table');
    assert.equal(off.code, 1);
    assert.match(off.err, /"method": "bdev_get_histogram"[\s\S]*"code": -12/);
  });

  it('bdev_get_iostat --table --interval: measured IO/s and MiB/s next to the QoS limits, and the I/O QoS held', async () => {
    assert.equal((await ctl('bdev_null_create', 'N0', '64', '512')).code, 0);
    assert.equal((await ctl('bdev_null_create', 'N1', '64', '512')).code, 0);
    assert.deepEqual(await ctl('bdev_set_qos_limit', 'N0', '--rw-ios-per-sec', '2000', '--w-mbytes-per-sec', '3'), { code: 0, out: '', err: '' });
    const limits = JSON.parse((await ctl('bdev_get_bdevs', '-b', 'N0')).out) as Array<{ assigned_rate_limits: object }>;
    assert.deepEqual(limits[0]?.assigned_rate_limits, { rw_ios_per_sec: 2000, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 3 });

    // 4 KiB reads at queue depth 16 on N0 for as long as the sampling lasts: QoS holds them to 2000 IO/s.
    const ch = openBdev(t.bdevs.openSpec(t.bdevs.get('N0')));
    let running = true;
    const worker = async () => {
      for (let i = 0; running; i++) await submit(ch, IoType.READ, (i % 1000) * 4096, 4096);
    };
    const workers = Array.from({ length: 16 }, worker);
    await new Promise((r) => setTimeout(r, 50));
    const r = await ctl('bdev_get_iostat', '--table', '--interval', '0.5');
    running = false;
    await Promise.all(workers);
    ch.close();
    assert.equal(r.code, 0, r.err);

    const [head, ...rows] = cells(r.out);
    assert.deepEqual(head, ['Name', 'Read IO/s', 'Write IO/s', 'Read MiB/s', 'Write MiB/s', 'Limit RW IO/s', 'Limit RW MiB/s', 'Limit R MiB/s', 'Limit W MiB/s', 'QoS held']);
    const n0 = rows.find((c) => c[0] === 'N0') ?? [];
    const n1 = rows.find((c) => c[0] === 'N1') ?? [];
    const iops = Number(n0[1]);
    assert.ok(iops > 1000 && iops <= 2300, `measured ${iops} IO/s under a 2000 IO/s limit`);
    assert.equal(n0[2], '0');
    assert.ok(Math.abs(Number(n0[3]) - (iops * 4096) / 2 ** 20) < 0.5, `MiB/s ${n0[3]} for ${iops} IO/s of 4 KiB`);
    assert.deepEqual(n0.slice(5, 9), ['2000', '-', '-', '3']);
    assert.ok(Number(n0[9]) > 0, `QoS held ${n0[9]} I/Os`);
    assert.deepEqual(n1.slice(1), ['0', '0', '0.00', '0.00', '-', '-', '-', '-', '0']);

    // -b narrows both calls; --reset-mode goes with the second sample only.
    const one = await ctl('bdev_get_iostat', '-b', 'N1', '--table', '--interval', '0.05', '--reset-mode', 'all');
    assert.equal(one.code, 0, one.err);
    assert.deepEqual(
      cells(one.out)
        .slice(1)
        .map((c) => c[0]),
      ['N1'],
    );
    // Without --interval, --table is the cumulative view it always was.
    const plain = await ctl('bdev_get_iostat', '--table');
    assert.match(plain.out, /Name .*Read ops .*Read MiB .*Write ops/);
    const perChannel = await ctl('bdev_get_iostat', '-b', 'N0', '-c', '--table', '--interval', '1');
    assert.equal(perChannel.code, 1);
    assert.match(perChannel.err, /leave out -c/);

    // bdev_reset_iostat through vhostctl zeroes the counters.
    assert.deepEqual(await ctl('bdev_reset_iostat', '-b', 'N0'), { code: 0, out: '', err: '' });
    const after = JSON.parse((await ctl('bdev_get_iostat', '-b', 'N0')).out) as { bdevs: Array<Record<string, number>> };
    assert.equal(after.bdevs[0]?.num_read_ops, 0);
  });
});

describe('vhostctl bdev layer tables', () => {
  it('histogramTable: percentiles of known bucket counts, trimmed to min_range', () => {
    // 50 I/Os at 10 µs, 40 at 20 µs, 9 at 100 µs, 1 at 1 ms (values in ns, tsc_rate 1e9).
    const minRange = 3;
    const counts = new Map([
      [bucketOf(10_000), 50],
      [bucketOf(20_000), 40],
      [bucketOf(100_000), 9],
      [bucketOf(1_000_000), 1],
    ]);
    const first = minRange * 128;
    const n = (bucketOf(1_000_000) - first + 128) & ~127;
    const bytes = Buffer.alloc(n * 8);
    for (const [pos, c] of counts) bytes.writeBigUInt64LE(BigInt(c), (pos - first) * 8);
    const reply = { histogram: bytes.toString('base64'), granularity: 7, min_range: minRange, max_range: minRange + n / 128 - 1, tsc_rate: 1e9 };
    const us = (v: number) => (v / 1000).toFixed(1);
    const [row] = cells(histogramTable([{ name: 'M0', reply }])).slice(1);
    assert.deepEqual(row, [
      'M0',
      '100',
      us(bucketEnd(bucketOf(10_000) - 1)),
      us(bucketEnd(bucketOf(10_000))),
      us(bucketEnd(bucketOf(20_000))),
      us(bucketEnd(bucketOf(100_000))),
      us(bucketEnd(bucketOf(1_000_000))),
      us(bucketEnd(bucketOf(1_000_000))),
    ]);
    assert.equal(row?.[3], '10.0', '10 µs sits in a 64 ns bucket starting at 9.984 µs');

    const empty = cells(histogramTable([{ name: 'E', reply: { ...reply, histogram: Buffer.alloc(n * 8).toString('base64') } }]))[1];
    assert.deepEqual(empty, ['E', '0', '-', '-', '-', '-', '-', '-']);
    assert.throws(() => histogramTable([{ name: 'G', reply: { ...reply, granularity: 5 } }]), /granularity 5 is not supported by --table/);
  });

  it('iostatRateTable: deltas over the interval, counters reset in between count from zero, limits 0 = -', () => {
    const prev = { tick_rate: 1e9, ticks: 1e9, bdevs: [{ name: 'A', num_read_ops: 100, num_write_ops: 50, bytes_read: 2 ** 20, bytes_written: 0, qos_held_ops: 7 }] };
    const now = {
      tick_rate: 1e9,
      ticks: 3e9,
      bdevs: [
        { name: 'A', num_read_ops: 2100, num_write_ops: 10, bytes_read: 2 ** 20 + 4 * 2 ** 20, bytes_written: 2 ** 20, qos_held_ops: 17 },
        { name: 'B', num_read_ops: 0, num_write_ops: 0, bytes_read: 0, bytes_written: 0 },
      ],
    };
    const limits = [
      { name: 'A', assigned_rate_limits: { rw_ios_per_sec: 1000, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 2, w_mbytes_per_sec: 0 } },
      { name: 'B', assigned_rate_limits: { rw_ios_per_sec: 0, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 } },
    ];
    const rows = cells(iostatRateTable(now, prev, limits)).slice(1);
    // 2 s apart: A read 2000 ops (1000/s) and 4 MiB (2 MiB/s); its writes went from 50 to 10 (a reset): 10 ops (5/s).
    assert.deepEqual(rows[0], ['A', '1000', '5', '2.00', '0.50', '1000', '-', '2', '-', '10']);
    assert.deepEqual(rows[1], ['B', '0', '0', '0.00', '0.00', '-', '-', '-', '-', ''], 'no qos_held_ops (SPDK): empty');
  });
});
