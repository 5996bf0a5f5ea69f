// The project's userspace vhost-user-blk initiator (src/initiator/load.ts, the bench's and
// vhost-load's engine) against a real vhostd: split and packed rings, direct and indirect chains,
// several queues, random reads and writes with data verification. A verify error means a block
// read back something other than the last generation written to it; the malloc bdev is then read
// over the same connection by a second run, so a wrong write position would show as well.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type LoadConnectOptions, LoadGenerator } from '../../src/initiator/load.js';
import { VhostdProcess } from '../lib/vhostd.js';

const MiB = 1024 * 1024;
/** The checkout, where the CLI tests run vhost-load from its sources. */
const root = new URL('../../', import.meta.url).pathname;

describe('load generator against vhostd', { timeout: 180_000 }, () => {
  let d: VhostdProcess;
  before(async () => {
    d = await VhostdProcess.start(['-m', '0x3']);
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: (8 * MiB) / 512, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'blk0', dev_name: 'M0', cpumask: '0x3' });
    await d.rpc('bdev_malloc_create', { name: 'M1', num_blocks: (8 * MiB) / 512, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'blk1', dev_name: 'M1', packed_ring: true });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  const cases: Array<{ name: string; ctrlr: string; opts: Partial<LoadConnectOptions> }> = [
    { name: 'split ring, direct chains, 2 queues', ctrlr: 'blk0', opts: { ring: 'split', queues: 2 } },
    { name: 'packed ring, direct chains, 2 queues', ctrlr: 'blk1', opts: { ring: 'packed', queues: 2 } },
    { name: 'packed ring, indirect chains', ctrlr: 'blk1', opts: { ring: 'packed', indirect: true } },
    { name: 'packed ring without EVENT_IDX', ctrlr: 'blk1', opts: { ring: 'packed', eventIdx: false } },
  ];
  for (const c of cases) {
    test(`${c.name}: random reads and writes verify; the ring wraps many times`, async () => {
      const gen = await LoadGenerator.connect({ socketPath: d.socket(c.ctrlr), iodepth: 16, rangeBytes: 2 * MiB, ...c.opts });
      try {
        assert.equal(gen.queues.length, c.opts.queues ?? 1);
        const first = await gen.run({ rw: 'randrw', verify: true, requests: 40_000 });
        assert.equal(first.errors, 0, first.firstError);
        assert.equal(first.verifyErrors, 0, first.firstError);
        assert.ok(first.writes > 10_000 && first.reads > 10_000, `reads ${first.reads}, writes ${first.writes}`);
        // A second run on the same connection: reads of blocks the first run wrote are checked
        // too, and the ring positions carry on from where the first run left them.
        const second = await gen.run({ rw: 'randread', verify: true, requests: 10_000 });
        assert.equal(second.errors, 0, second.firstError);
        assert.equal(second.verifyErrors, 0, second.firstError);
        assert.equal(second.reads, 10_000);
      } finally {
        gen.close();
      }
    });
  }

  test('the initiator allocates nothing per request: no garbage collection while it measures', async () => {
    // A per-request heap number (a double field store, a double passed to a call V8 does not
    // inline) made 30-40 scavenges a second at QD 1, each a 0.3-1.3 ms stall of the initiator
    // that every target's row paid for; 16-32 bytes per request fill the young generation many
    // times over in 400k requests.
    const gen = await LoadGenerator.connect({ socketPath: d.socket('blk0'), iodepth: 1, rangeBytes: 2 * MiB });
    try {
      await gen.run({ rw: 'randread', requests: 100_000 }); // optimized code before measuring
      const r = await gen.run({ rw: 'randrw', requests: 400_000 });
      assert.equal(r.errors, 0, r.firstError);
      assert.ok(r.initiator.gcCount <= 1, `${r.initiator.gcCount} garbage collections (${r.initiator.gcMs.toFixed(1)} ms) in 400k requests`);
    } finally {
      gen.close();
    }
  });

  test('a packed ring against a controller created without packed_ring is refused before any I/O', async () => {
    await assert.rejects(LoadGenerator.connect({ socketPath: d.socket('blk0'), ring: 'packed' }), /does not offer VIRTIO_F_RING_PACKED/);
  });

  test('vhost-load --ring packed --verify (the CLI) reports no errors', () => {
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/vhost-load.ts', '-s', d.socket('blk1'), '--ring', 'packed', '-q', '2', '-d', '8', '--rw', 'randrw', '--verify', '-n', '20000', '--range', '1m', '--json'],
      { cwd: root, timeout: 60_000 },
    ).toString();
    const r = JSON.parse(out) as { ios: number; errors: number; verifyErrors: number };
    assert.equal(r.ios, 20_000);
    assert.equal(r.errors, 0);
    assert.equal(r.verifyErrors, 0);
  });

  test('vhost-load --hugetlbfs backs the driver memory with a file in that directory (SPDK maps only such memory)', () => {
    const cli = (dir: string) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/vhost-load.ts', '-s', d.socket('blk0'), '--hugetlbfs', dir, '--rw', 'randrw', '--verify', '-n', '5000', '--range', '1m', '--json'], {
        cwd: root,
        timeout: 60_000,
      });
    // A directory that is not there: the option reaches the driver memory, which cannot create its file.
    const missing = cli('/nonexistent-vhostd-hugetlbfs');
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr.toString(), /ENOENT.*nonexistent-vhostd-hugetlbfs/);
    // Any directory works for the target (the file is unlinked once open): verified I/O, nothing left behind.
    const dir = mkdtempSync(join(tmpdir(), 'vhostd-hugetlbfs-'));
    try {
      const ok = cli(dir);
      assert.equal(ok.status, 0, ok.stderr.toString());
      const r = JSON.parse(ok.stdout.toString()) as { ios: number; errors: number; verifyErrors: number };
      assert.equal(r.ios, 5000);
      assert.equal(r.errors + r.verifyErrors, 0);
      assert.deepEqual(readdirSync(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
