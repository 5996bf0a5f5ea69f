// Smoke test of the bench's SPDK parts (bench/lib/spdk.ts, bdevperf.ts, manyctrl.ts) and its
// block device rows (bench/lib/blockdev.ts). Skipped unless VHOSTD_BENCH_SPDK_DIR names an SPDK
// build (CI has none): one tiny row per feature, each checked for IOPS > 0 in the JSON:
// the spdk target with the load generator, vhostd with bdevperf, the block device (zram or a
// loop device) on vhostd, and the manyctrl section with 2 controllers.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runBench } from '../lib/bench.js';

const spdkDir = process.env.VHOSTD_BENCH_SPDK_DIR;
const skip = !spdkDir ? 'VHOSTD_BENCH_SPDK_DIR is not set' : !existsSync(join(spdkDir, 'build/examples/bdevperf')) ? `no SPDK build in ${spdkDir}` : process.getuid?.() !== 0 ? 'needs root (hugepages, zram)' : false;

const common = ['--quiet-wait', '0', '--no-migration', '--no-layer', '--alloc-requests', '0', '--wakeup-tries', '0', '--size', '64m', '--spdk-dir', spdkDir ?? ''];

function readReport(out: string): Record<string, unknown> {
  const json = readdirSync(out).find((f) => f.endsWith('.json'));
  assert.ok(json, `no JSON in ${out}`);
  return JSON.parse(readFileSync(join(out, json), 'utf8')) as Record<string, unknown>;
}

test('bench: spdk target, bdevperf initiator, block device rows', { skip, timeout: 240_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'vhostd-bench-spdk-'));
  try {
    const r = await runBench(
      ['--only', 'io', '--bdev', 'null,blockdev', '--rw', 'randread', '--qd', '8', '--queues', '1', '--targets', 'vhostd,spdk', '--initiator', 'load,bdevperf', '--duration', '1', '--warmup', '0.1', '--out-dir', out, ...common],
      200_000,
    );
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);
    const report = readReport(out) as { rows: Array<{ id: string; target: string; status: string; reason?: string; iops: number; iopsPerTargetCpuSec?: number }> };
    const row = (target: string, id: string) => report.rows.find((x) => x.target === target && x.id === id);
    for (const [target, id] of [
      ['spdk', 'null/randread/qd8/q1'],
      ['vhostd', 'null/randread/qd8/q1/bdevperf'],
      ['spdk', 'null/randread/qd8/q1/bdevperf'],
      ['vhostd', 'blockdev/randread/qd8/q1'],
      ['vhostd', 'blockdev/randread/qd8/q1/bdevperf'],
    ]) {
      const x = row(target, id);
      assert.ok(x && x.status === 'ok' && x.iops > 0, `${target} ${id}: ${JSON.stringify(x && { status: x.status, reason: x.reason, iops: x.iops })}`);
      assert.ok((x.iopsPerTargetCpuSec ?? 0) > 0, `${target} ${id}: no target CPU per I/O`);
    }
    // The table: the initiator column, CPU per I/O and the vhostd/SPDK ratio.
    assert.match(r.stdout, /initiator/);
    assert.match(r.stdout, /target CPU µs\/IO/);
    assert.match(r.stdout, /vhostd\/SPDK IOPS per core/);
    // The block device is gone again (zram reset to size 0, or the loop device detached).
    if (existsSync('/sys/block/zram0/disksize') && /block device: zram \/dev\/zram0/.test(r.stderr)) {
      assert.equal(readFileSync('/sys/block/zram0/disksize', 'utf8').trim(), '0');
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bench: manyctrl with 2 controllers', { skip, timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'vhostd-bench-spdk-'));
  try {
    const r = await runBench(['--only', 'manyctrl', '--manyctrl', '2', '--targets', 'vhostd,spdk', '--duration', '1', '--out-dir', out, ...common], 100_000);
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);
    const report = readReport(out) as { manyctrl: { rows: Array<{ target: string; controllers: number; status: string; reason?: string; iops: number; minCtrlIops: number }> } };
    for (const target of ['vhostd', 'spdk']) {
      const x = report.manyctrl.rows.find((y) => y.target === target && y.controllers === 2);
      assert.ok(x && x.status === 'ok' && x.iops > 0 && x.minCtrlIops > 0, `${target}: ${JSON.stringify(x)}`);
    }
    assert.match(r.stdout, /Many controllers on one core/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
