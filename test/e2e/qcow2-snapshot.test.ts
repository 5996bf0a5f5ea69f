// Live snapshots with a real guest: a QEMU guest runs rounds of fio write+verify on a qcow2 bdev
// while bdev_qcow2_snapshot switches the bdev twice to a new overlay (once while the first round
// writes, once in the second round). fio sees no error; each old image is not written after its
// snapshot (sha256), and qemu-img check finds all three files clean once the bdev is deleted.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';
import { qemuCheck, qemuImg } from '../unit/qcow2/qemu.js';
import { GuestSession, assertGuestOk, buildGuest, guestScript, vhostUserBlkArgs } from './lib/guest.js';

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('qcow2 live snapshot twice under a guest running fio verify: no guest error, old images frozen and clean', { timeout: 300_000 }, async () => {
  await buildGuest();
  const d = await VhostdProcess.start(['-m', '0x1']);
  const dir = d.dir;
  const base = join(dir, 'vm.qcow2');
  const snap1 = join(dir, 'vm-snap1.qcow2');
  const snap2 = join(dir, 'vm-snap2.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', base, '128M');
  await d.rpc('bdev_qcow2_create', { name: 'VM', filename: base });
  await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'VM' });
  const g = await GuestSession.start({
    name: 'qcow2-snapshot',
    script: guestScript('blk-fio-rounds.sh'),
    env: { ROUNDS: '3', SIZE_MB: '16' },
    devices: vhostUserBlkArgs(d.socket('vhost.0'), { numQueues: 2 }),
  });
  try {
    await g.waitForMark('running', 60_000);
    await sleep(1500);
    assert.equal(await d.rpc('bdev_qcow2_snapshot', { name: 'VM', snapshot_file: snap1 }), snap1);
    const sumBase = sha256(base);
    await g.waitForMark('round1', 120_000);
    await sleep(1000);
    assert.equal(await d.rpc('bdev_qcow2_snapshot', { name: 'VM', snapshot_file: snap2 }), snap2);
    const sumSnap1 = sha256(snap1);
    const r = await g.waitExit(180_000);
    assertGuestOk(r, 'fio rounds across two snapshots');
    assert.equal(r.results.fio_errors, '0');
    const [b] = await d.rpc<Array<{ driver_specific: { qcow2: { filename: string; backing_chain: Array<{ filename: string }> } } }>>('bdev_get_bdevs', { name: 'VM' });
    assert.equal(b!.driver_specific.qcow2.filename, snap2);
    assert.deepEqual(
      b!.driver_specific.qcow2.backing_chain.map((c) => c.filename),
      [snap1, base],
    );
    const held = d.logsMatching(/switched to .*requests held/).map((l) => Number(/requests held ([\d.]+) ms/.exec(l)![1]));
    console.log(`# requests held during the switches: ${held.join(', ')} ms`);
    assert.equal(held.length, 2);
    await d.deleteController('vhost.0');
    assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'VM' }), true);
    assert.equal(sha256(base), sumBase, 'the base is not written after the first snapshot');
    assert.equal(sha256(snap1), sumSnap1, 'snap1 is not written after the second snapshot');
    for (const f of [base, snap1, snap2]) {
      const c = qemuCheck(f);
      assert.equal(c.code, 0, `${f}: ${c.out}`);
    }
    const info = JSON.parse(qemuImg('info', '--output=json', '--backing-chain', snap2)) as Array<{ filename: string }>;
    assert.deepEqual(
      info.map((i) => i.filename),
      [snap2, snap1, base],
    );
  } finally {
    await g.kill();
    await d.stop();
  }
});
