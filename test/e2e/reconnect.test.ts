// Restart without losing guest I/O: vhostd is SIGKILLed twice while a guest runs fio verify on a
// file-backed disk; QEMU (reconnect=1) reconnects to the restarted daemon, the in-flight buffer
// lets the new process complete every request exactly once, and fio sees no error.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';
import { GuestSession, REPO_ROOT, assertGuestOk, buildGuest, guestScript, vhostUserBlkArgs } from './lib/guest.js';

const MiB = 1024 * 1024;

/** Waits (up to 20 s) until framework_get_reactors shows a queue with requests in flight. */
async function untilInFlight(d: VhostdProcess): Promise<void> {
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    const r = await d.rpc<{ reactors: Array<{ queues: Array<{ in_flight: number }> }> }>('framework_get_reactors');
    if (r.reactors.some((x) => x.queues.some((q) => q.in_flight > 0))) return;
    await new Promise((res) => setTimeout(res, 5));
  }
}

/** Kills vhostd twice under fio verify and restarts it from its saved config; `packed` uses packed rings. */
async function killTwiceDuringFio(packed: boolean): Promise<void> {
  await buildGuest();
  let d = await VhostdProcess.start(['-m', '0x1']);
  const dir = d.dir;
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(64 * MiB));
  // A delay bdev over the file keeps requests in flight long enough for SIGKILL to catch some.
  const delay = { base_bdev_name: 'F0', name: 'D0', avg_read_latency: 2000, p99_read_latency: 3000, avg_write_latency: 2000, p99_write_latency: 3000 };
  await d.rpc('bdev_aio_create', { name: 'F0', filename: disk, block_size: 512 });
  await d.rpc('bdev_delay_create', delay);
  await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'D0', ...(packed ? { packed_ring: true } : {}) });
  // The restarted daemons start from what `vhostctl save_config` wrote (SPDK's format).
  const config = join(dir, 'config.json');
  const saved = execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/vhostctl.ts', '-s', d.rpcSocket, 'save_config'], { cwd: REPO_ROOT });
  writeFileSync(config, saved);
  assert.match(saved.toString(), /bdev_delay_create/);
  const g = await GuestSession.start({
    name: packed ? 'reconnect-packed' : 'reconnect',
    script: guestScript('blk-fio-rounds.sh'),
    env: { ROUNDS: '3', SIZE_MB: '16' },
    devices: vhostUserBlkArgs(d.socket('vhost.0'), { numQueues: 2, reconnectS: 1, ...(packed ? { extra: 'packed=on' } : {}) }),
  });
  let resubmitted = 0;
  try {
    await g.waitForMark('running');
    for (let restart = 0; restart < 2; restart++) {
      // Let fio get going, then kill the daemon while its queues show requests in flight (fio
      // pauses between its phases; a kill then would find nothing to replay).
      await new Promise((r) => setTimeout(r, 1500));
      await untilInFlight(d);
      await d.kill();
      d = await VhostdProcess.start(['-m', '0x1', '--json', config], { dir });
      // QEMU (reconnect=1) comes back to the new process on its own.
      await d.waitForLog(/vhost-user connection accepted/, 30_000);
      await g.waitForMark(`round${restart + 1}`, 120_000);
      resubmitted += d.logsMatching(/resubmitting \d+ requests/).length;
    }
    const r = await g.waitExit(240_000);
    assertGuestOk(r, 'fio across restarts');
    assert.equal(r.results.fio_errors, '0');
    // QEMU's own account of the back-end going away and coming back.
    assert.match(r.stderr, /ring restore failed|Unable to connect character device/);
    console.log(`# queues that resubmitted in-flight requests after a restart: ${resubmitted}`);
    assert.ok(resubmitted >= 1, 'at least one restart found requests in flight and replayed them');
  } finally {
    await g.kill();
    await d.stop();
  }
}

test('SIGKILL and restart of vhostd from its saved config, twice, during fio verify: no guest I/O error', { timeout: 600_000 }, () =>
  killTwiceDuringFio(false),
);

test('the same with packed virtqueues: ring positions and requests come back from the in-flight region', { timeout: 600_000 }, () =>
  killTwiceDuringFio(true),
);
