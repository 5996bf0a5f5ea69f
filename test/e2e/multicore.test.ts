// A multi-queue controller on a 2-core cpumask: its queues are spread over both reactors
// (framework_get_reactors shows it while the guest runs) and the guest's fio verify passes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';
import { GuestSession, assertGuestOk, buildGuest, guestScript, vhostUserBlkArgs } from './lib/guest.js';

interface Reactors {
  reactors: Array<{ lcore: number; queues: Array<{ device: string; queue: number; completed: number }> }>;
}

test('2-queue controller on cpumask 0x3: both reactors serve it, guest fio verify passes', { timeout: 300_000 }, async () => {
  await buildGuest();
  const d = await VhostdProcess.start(['-m', '0x3']);
  try {
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: (64 * 1024 * 1024) / 512, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'mq', dev_name: 'M0', cpumask: '0x3' });
    const g = await GuestSession.start({
      name: 'multicore',
      script: guestScript('blk-fio-rounds.sh'),
      env: { ROUNDS: '2', SIZE_MB: '16' },
      devices: vhostUserBlkArgs(d.socket('mq'), { numQueues: 2 }),
    });
    try {
      await g.waitForMark('round1', 120_000);
      const r = await d.rpc<Reactors>('framework_get_reactors');
      const served = r.reactors.map((x) => x.queues.filter((q) => q.device === 'mq'));
      assert.equal(served.length, 2);
      assert.ok(
        served.every((qs) => qs.length === 1 && qs[0].completed > 0),
        `each reactor serves one queue and completed requests on it: ${JSON.stringify(served)}`,
      );
      const result = await g.waitExit(180_000);
      assertGuestOk(result, 'fio verify on a 2-reactor controller');
      assert.equal(result.results.fio_errors, '0');
    } finally {
      await g.kill();
    }
  } finally {
    await d.stop();
  }
});
