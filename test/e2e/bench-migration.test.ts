// Smoke test of the bench's migration row (bench/lib/migration.ts): `npm run bench -- --only
// migration`, one guest per target, the idle migration only (about 30 s on 2 cores). Checks the
// table has a completed idle row per target with QEMU's total time and downtime, the vhostd/QSD
// ratios, and the samples in the JSON.
// Run: node --import tsx --test test/e2e/bench-migration.test.ts
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { TIMEOUT_SCALE } from './lib/guest.js';
import { hasCommand, runBench } from '../lib/bench.js';

test('npm run bench -- --only migration: one idle migration per target', { timeout: 200_000 * TIMEOUT_SCALE }, async (t) => {
  if (!hasCommand('qemu-system-x86_64')) return t.skip('no qemu-system-x86_64');
  const out = mkdtempSync(join(tmpdir(), 'vhostd-bench-mig-'));
  try {
    const r = await runBench(['--only', 'migration', '--migration-cases', 'idle', '--migration-repeat', '1', '--quiet-wait', '0', '--out-dir', out], 180_000 * TIMEOUT_SCALE);
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);
    if (/\n {2}skipped: /.test(r.stdout)) return t.skip(r.stdout.split('\n').find((l) => l.includes('skipped:')) ?? 'skipped');
    const qsd = hasCommand('qemu-storage-daemon');
    const cells = (line: string) => line.split('│').map((c) => c.trim());
    const rows = r.stdout.split('\n').filter((l) => /^│ idle\s+│ (qsd|vhostd)\s+│/.test(l)).map(cells);
    for (const target of ['vhostd', ...(qsd ? ['qsd'] : [])]) {
      const row = rows.find((c) => c[2] === target);
      assert.ok(row, `no idle row for ${target}:\n${r.stdout}`);
      assert.equal(row[3], '1/1', `${target}: ${row.join(' | ')}`);
      assert.ok(Number(row[4]) > 0, `${target} total ms ${row[4]}`);
      assert.match(row[5] ?? '', /^\d+$/, `${target} downtime ms`);
    }
    if (qsd) assert.match(rows.find((c) => c[2] === 'vhostd')?.[9] ?? '', /^\d+\.\d\dx$/, 'vhostd/QSD total ratio');
    assert.match(r.stdout, /downtime-limit \d+ ms/);

    const json = readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(json);
    const report = JSON.parse(readFileSync(join(out, json), 'utf8')) as {
      rows: unknown[];
      migration: { samples: Array<{ target: string; case: string; status: string; totalTimeMs: number; downtimeMs: number; setupTimeMs: number }> };
    };
    assert.equal(report.rows.length, 0, 'no I/O rows with --only migration');
    assert.equal(report.migration.samples.length, qsd ? 2 : 1, JSON.stringify(report.migration.samples));
    for (const s of report.migration.samples) {
      assert.equal(s.case, 'idle');
      assert.equal(s.status, 'completed', JSON.stringify(s));
      assert.ok(s.totalTimeMs > 0 && s.downtimeMs >= 0 && s.setupTimeMs >= 0, JSON.stringify(s));
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
