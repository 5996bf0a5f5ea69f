// Smoke test of `npm run bench`: the null-bdev rows only, about a second of measurement, against
// both targets (vhostd and qemu-storage-daemon). Checks the table has an IOPS > 0 row per target,
// the allocation check, the wake-up lines and the one-thread data path table are printed, and the
// JSON results and the SVG chart were written. No migration row (it boots guests: test/e2e/bench-migration.test.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { summarize } from '../../bench/lib/report.js';
import type { LoadResult } from '../../src/initiator/load.js';
import { hasCommand, runBench } from '../lib/bench.js';

test('npm run bench: null bdev, both targets, table rows, JSON and SVG', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'vhostd-bench-smoke-'));
  try {
    const r = await runBench(
      ['--bdev', 'null', '--rw', 'randread', '--qd', '16', '--queues', '1', '--duration', '0.4', '--warmup', '0.1', '--alloc-requests', '20000', '--wakeup-tries', '3', '--quiet-wait', '0', '--no-migration', '--out-dir', out],
      90_000,
    );
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);

    // The table: one row per target, IOPS (6th column) > 0.
    const cells = (line: string) => line.split('│').map((c) => c.trim());
    const rows = r.stdout.split('\n').filter((l) => /^│ (qsd|vhostd)\s+│ null\s+│/.test(l)).map(cells);
    const qsd = hasCommand('qemu-storage-daemon');
    for (const target of ['vhostd', ...(qsd ? ['qsd'] : [])]) {
      const row = rows.find((c) => c[1] === target);
      assert.ok(row, `no table row for ${target}:\n${r.stdout}`);
      const iops = Number(row[6].replace(/,/g, ''));
      assert.ok(iops > 0, `${target} IOPS ${row[6]}`);
    }
    if (!qsd) assert.ok(rows.some((c) => c[1] === 'qsd' && /not available/.test(c.at(-2) ?? '')), 'QSD row must say not available');
    assert.match(r.stdout, /Allocation check: vhostd null bdev/);
    for (const target of ['vhostd', ...(qsd ? ['qsd'] : [])]) {
      assert.match(r.stdout, new RegExp(`\\n  ${target} +after idle: median \\d+ µs, max \\d+ µs; warm: median \\d+ µs`), `wake-up line for ${target}`);
    }

    const files = readdirSync(out);
    const json = files.find((f) => f.endsWith('.json'));
    const svg = files.find((f) => f.endsWith('.svg'));
    assert.ok(json, `no JSON in ${files.join(', ')}`);
    assert.ok(svg, `no SVG in ${files.join(', ')}`);
    const report = JSON.parse(readFileSync(join(out, json), 'utf8')) as {
      rows: Array<{ target: string; status: string; iops: number; samples: unknown[]; coreLinkNs: number[][]; otherCpuUsPerIo?: number }>;
      wakeups: Array<{ target: string; afterIdleUs: number[]; warmUs: number[] }>;
      hotpath?: { rows: Array<{ rw: string; qd: number; nsPerRequest: number[] }> };
    };
    const wake = report.wakeups.find((w) => w.target === 'vhostd');
    assert.ok(wake && wake.afterIdleUs.length === 3 && wake.afterIdleUs.every((us) => us > 0), JSON.stringify(report.wakeups));
    const ok = report.rows.filter((x) => x.status === 'ok');
    assert.equal(ok.length, qsd ? 2 : 1, JSON.stringify(report.rows.map((x) => [x.target, x.status])));
    for (const x of ok) assert.ok(x.iops > 0 && x.samples.length === 1, `${x.target}: ${x.iops}`);
    // CPU outside the bench and its targets, per I/O: a number for every measured row.
    for (const x of ok) assert.ok(typeof x.otherCpuUsPerIo === 'number' && x.otherCpuUsPerIo >= 0, `${x.target}: other CPU ${x.otherCpuUsPerIo}`);
    assert.match(r.stdout, /other CPU µs\/IO/);
    // Which guest memory the load initiator gave the targets (hugepages unless the machine has none).
    assert.match(r.stdout, /Guest memory of the load initiator: (2 MiB hugepages for every target|memfd \(4 KiB pages\) for vhostd and QSD)/);
    // The core-to-core probe ran around each sample and says so in the row's notes.
    for (const x of ok) assert.ok(x.coreLinkNs.length === 1 && x.coreLinkNs[0].every((ns) => ns > 10 && ns < 100_000), JSON.stringify(x.coreLinkNs));
    assert.match(r.stdout, /line \d+(-\d+)? ns/);
    // The one-thread data path section: a plausible ns per request for the row's rw and QD.
    const hot = report.hotpath;
    assert.deepEqual(hot?.rows.map((x) => [x.rw, x.qd, x.nsPerRequest.length]), [['randread', 16, 3]]);
    assert.ok(hot!.rows[0].nsPerRequest.every((ns) => ns > 10 && ns < 100_000), JSON.stringify(hot.rows));
    assert.match(r.stdout, /vhostd's data path on one thread/);
    const chart = readFileSync(join(out, svg), 'utf8');
    assert.match(chart, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(chart, /<title>vhostd null randread QD16 x1: \d+ IOPS<\/title>/);
    if (qsd) assert.match(chart, /<title>qsd null randread QD16 x1: \d+ IOPS<\/title>/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bench rows: CPU used outside the bench and targets, per I/O, is the median over samples', () => {
  // Just what summarize() reads of a load generator result.
  const sample = (iops: number) =>
    ({ iops, errors: 0, verifyErrors: 0, latency: { p50Us: 1, p99Us: 1 }, initiator: { busyPct: 1, cpuPct: 1, rescueKicks: 0, hiccupMs: 0 } }) as unknown as LoadResult;
  const row = (foreignCores: number[]) =>
    summarize({ id: 'blockdev/randwrite/qd32/q1', bdev: 'blockdev', rw: 'randwrite', qd: 32, queues: 1, target: 'vhostd', bdevLabel: '', status: 'ok', coreLinkNs: [], samples: [sample(100_000), sample(200_000), sample(100_000)], foreignCores });
  // 0.5 cores at 100k IOPS is 5 µs per I/O, 0.2 at 200k is 1, 0.2 at 100k is 2: the median is 2 (the mean 2.67).
  assert.equal(row([0.5, 0.2, 0.2]).otherCpuUsPerIo, 2);
  assert.equal(row([]).otherCpuUsPerIo, undefined, 'no measurement, no number');
});
