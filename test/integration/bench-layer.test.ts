// Smoke test of the bench's layer section (`npm run bench -- --only layer`): one short run of each
// configuration per workload. Checks the table lists the five configurations with IOPS > 0 for
// randread and randwrite, and that the JSON report has them, with the endpoint scraped in the
// metrics and all runs and the never-binding QoS limit holding nothing back.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runBench } from '../lib/bench.js';

const CONFIGS = ['off', 'qos', 'histogram', 'metrics', 'all'];

test('npm run bench -- --only layer: five configurations, IOPS > 0, JSON rows', { timeout: 60_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'vhostd-bench-layer-'));
  try {
    const r = await runBench(['--only', 'layer', '--duration', '0.3', '--warmup', '0.1', '--layer-repeat', '1', '--size', '64m', '--quiet-wait', '0', '--out-dir', out], 50_000);
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);

    // The table: workload, config, IOPS, ... (cells split on the column separator).
    const cells = (line: string) => line.split('│').map((c) => c.trim());
    const rows = r.stdout.split('\n').filter((l) => /^│ rand(read|write)\s+│/.test(l)).map(cells);
    for (const rw of ['randread', 'randwrite']) {
      for (const config of CONFIGS) {
        const row = rows.find((c) => c[1] === rw && c[2] === config);
        assert.ok(row, `no table row for ${rw} ${config}:\n${r.stdout}`);
        assert.ok(Number(row[3].replace(/,/g, '')) > 0, `${rw} ${config} IOPS ${row[3]}`);
      }
    }
    assert.doesNotMatch(r.stdout, /│ target\s+│ bdev|Allocation check|Wake-up|Migration/, 'only the layer section runs');

    const json = readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(json, 'no JSON report');
    const report = JSON.parse(readFileSync(join(out, json), 'utf8')) as {
      rows: unknown[];
      layer: { rows: Array<{ workload: string; config: string; status: string; summary: { iops: number }; iopsRatio?: number; qosHeld: number[]; scrapes: Array<{ count: number; errors: number }> }> };
    };
    assert.equal(report.rows.length, 0);
    assert.deepEqual(
      report.layer.rows.map((x) => `${x.workload}/${x.config}`),
      ['randread', 'randwrite'].flatMap((rw) => CONFIGS.map((c) => `${rw}/${c}`)),
    );
    for (const x of report.layer.rows) {
      assert.equal(x.status, 'ok', JSON.stringify(x));
      assert.ok(x.summary.iops > 0 && (x.iopsRatio ?? 0) > 0, `${x.workload}/${x.config}: ${x.summary.iops} IOPS, ratio ${x.iopsRatio}`);
      const scraped = x.config === 'metrics' || x.config === 'all';
      assert.equal(x.scrapes.length, scraped ? 1 : 0);
      if (scraped) assert.ok(x.scrapes[0].count >= 1 && x.scrapes[0].errors === 0, JSON.stringify(x.scrapes));
      if (x.config === 'qos' || x.config === 'all') assert.deepEqual(x.qosHeld, [0], 'the QoS limit never binds');
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
