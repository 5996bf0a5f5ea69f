// Smoke test of the bench's qcow2 rows (`npm run bench -- --bdev qcow2,qcow2-fresh`): a 64 MiB
// image, a fraction of a second per row. Checks the table has IOPS > 0 for the fully allocated
// image (randread, randwrite) and the fresh one (randwrite only: no read row for an empty image)
// on vhostd and, when installed, qemu-storage-daemon; that the fresh rows allocated clusters in
// every run (a new image per run); and that the images are gone afterwards.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasCommand, runBench } from '../lib/bench.js';

test('npm run bench -- --bdev qcow2,qcow2-fresh: rows on both targets, a fresh image per run, images removed', { timeout: 120_000, skip: !hasCommand('qemu-img') && 'qemu-img is not installed' }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'vhostd-bench-qcow2-'));
  const images = mkdtempSync('/dev/shm/vhostd-bench-qcow2-test-');
  try {
    const r = await runBench(
      ['--bdev', 'qcow2,qcow2-fresh', '--rw', 'randread,randwrite', '--qd', '4', '--queues', '1', '--repeat', '2', '--duration', '0.3', '--warmup', '0.1', '--size', '64m', '--only', 'io', '--quiet-wait', '0', '--qcow2-dir', images, '--out-dir', out],
      90_000,
    );
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);
    const cells = (line: string) => line.split('│').map((c) => c.trim());
    const rows = r.stdout.split('\n').filter((l) => /^│ (qsd|vhostd)\s+│ qcow2/.test(l)).map(cells);
    const targets = ['vhostd', ...(hasCommand('qemu-storage-daemon') ? ['qsd'] : [])];
    for (const target of targets) {
      for (const [bdev, rw] of [['qcow2', 'randread'], ['qcow2', 'randwrite'], ['qcow2-fresh', 'randwrite']]) {
        const row = rows.find((c) => c[1] === target && c[2] === bdev && c[3] === rw);
        assert.ok(row, `no table row for ${target} ${bdev} ${rw}:\n${r.stdout}`);
        assert.ok(Number(row[6].replace(/,/g, '')) > 0, `${target} ${bdev} ${rw} IOPS ${row[6]}`);
      }
    }
    assert.ok(!rows.some((c) => c[2] === 'qcow2-fresh' && c[3] === 'randread'), 'no read row on the empty image');
    assert.match(r.stdout, /qcow2-fresh starts every run on a new empty image/);

    const json = readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(json);
    const report = JSON.parse(readFileSync(join(out, json), 'utf8')) as { rows: Array<{ target: string; bdev: string; rw: string; status: string; bdevLabel: string; allocatingPct?: number[] }> };
    for (const target of targets) {
      const fresh = report.rows.find((x) => x.target === target && x.bdev === 'qcow2-fresh');
      assert.equal(fresh?.status, 'ok', JSON.stringify(fresh));
      // Both repeats started on an empty image: each allocated clusters (64 MiB: 1024 of them).
      assert.equal(fresh.allocatingPct?.length, 2, JSON.stringify(fresh.allocatingPct));
      assert.ok(fresh.allocatingPct.every((p) => p > 0), JSON.stringify(fresh.allocatingPct));
      const full = report.rows.find((x) => x.target === target && x.bdev === 'qcow2' && x.rw === 'randwrite');
      assert.match(full?.bdevLabel ?? '', /fully allocated/);
    }
    assert.deepEqual(readdirSync(images), [], 'the images are removed');
  } finally {
    rmSync(out, { recursive: true, force: true });
    rmSync(images, { recursive: true, force: true });
  }
});
