// Smoke test of the bench's memory section (`npm run bench -- --only rss`): vhostd and QSD idle
// with one controller and with 17; the table and the JSON report show each one's resident memory
// and the cost per further controller.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { RssReport } from '../../bench/lib/rss.js';
import { runBench } from '../lib/bench.js';

test('npm run bench -- --only rss: resident memory with one controller and per further controller', { timeout: 90_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'vhostd-bench-rss-'));
  try {
    const r = await runBench(['--only', 'rss', '--targets', 'vhostd,qsd', '--size', '64m', '--quiet-wait', '0', '--out-dir', out], 80_000);
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}\n${r.stdout}`);
    assert.match(r.stdout, /Memory of an idle target/);
    const json = readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(json, 'no JSON report');
    const report = JSON.parse(readFileSync(join(out, json), 'utf8')) as { rss: RssReport };
    const vhostd = report.rss.rows.find((x) => x.target === 'vhostd');
    assert.ok(vhostd && vhostd.status === 'ok', JSON.stringify(report.rss.rows));
    // Two V8 isolates at least; a controller costs something, far less than an isolate.
    assert.ok(vhostd.rssBytes > 30 * 2 ** 20, `vhostd RSS ${vhostd.rssBytes}`);
    // Its own pages (two V8 heaps) are part of it, the node binary's file pages the rest.
    assert.ok(vhostd.privateBytes > 8 * 2 ** 20 && vhostd.privateBytes < vhostd.rssBytes, `vhostd private ${vhostd.privateBytes} of ${vhostd.rssBytes}`);
    assert.match(r.stdout, /of which private MiB/);
    assert.ok(vhostd.rssBytesMany >= vhostd.rssBytes * 0.9, 'seventeen controllers do not take less than one');
    assert.ok(Number.isFinite(vhostd.perControllerBytes) && vhostd.perControllerBytes < 16 * 2 ** 20, `per controller ${vhostd.perControllerBytes}`);
    const qsd = report.rss.rows.find((x) => x.target === 'qsd');
    assert.ok(qsd && (qsd.status === 'ok' ? qsd.rssBytes > 0 : qsd.status === 'unavailable'), JSON.stringify(qsd));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
