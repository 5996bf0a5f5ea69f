// A writable qcow2 image is served by one engine on one reactor (its metadata lives there), so a
// multi-queue controller on a two-core vhostd puts all its queues on one reactor, and a second
// controller on the same image joins it: every queue's writes succeed. A read-only image and a
// raw bdev keep their queues spread over the reactors.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { pattern, qemuCheck, qemuImg, tempDir } from '../unit/qcow2/qemu.js';

interface Reactors {
  reactors: Array<{ lcore: number; queues: Array<{ device: string; queue: number }> }>;
}

/** lcore of each queue of controller `ctrlr`. */
async function queueCores(d: VhostdProcess, ctrlr: string): Promise<Map<number, number>> {
  const r = await d.rpc<Reactors>('framework_get_reactors');
  const m = new Map<number, number>();
  for (const x of r.reactors) for (const q of x.queues) if (q.device === ctrlr) m.set(q.queue, x.lcore);
  return m;
}

describe('qcow2 on a two-reactor vhostd', { timeout: 120_000 }, () => {
  let d: VhostdProcess;
  let dir: string;
  let cleanup: () => void;

  before(async () => {
    ({ dir, cleanup } = tempDir());
    d = await VhostdProcess.start(['-m', '0x3']);
  });
  after(async () => {
    await d.stop();
    cleanup();
  });

  it('a writable image: all queues of every controller on it share one reactor, and writes on each queue succeed', async () => {
    const img = join(dir, 'mq.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '16M');
    await d.rpc('bdev_qcow2_create', { name: 'Q', filename: img });
    await d.rpc('bdev_null_create', { name: 'N', num_blocks: 32768, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'q.0', dev_name: 'Q' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'q.1', dev_name: 'Q' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'n.0', dev_name: 'N' });
    const a = await BlkInitiator.connect(d.socket('q.0'), { queues: 4 });
    const n = await BlkInitiator.connect(d.socket('n.0'), { queues: 4 });
    try {
      const cores = await queueCores(d, 'q.0');
      assert.equal(cores.size, 4);
      assert.equal(new Set(cores.values()).size, 1, `the image's queues are on one reactor: ${JSON.stringify([...cores])}`);
      assert.equal(new Set((await queueCores(d, 'n.0')).values()).size, 2, 'a raw bdev spreads its queues over both');
      const writes = [];
      for (let q = 0; q < 4; q++) for (let i = 0; i < 8; i++) writes.push(a.write((q * 8 + i) * 16, pattern(8192, q * 8 + i), q));
      for (const r of await Promise.all(writes)) assert.equal(r.status, BlkStatus.OK);
      // A second controller on the image (as when a VM moves between controllers) lands beside it.
      a.close();
      const b = await BlkInitiator.connect(d.socket('q.1'), { queues: 2 });
      try {
        const c1 = await queueCores(d, 'q.1');
        assert.deepEqual(new Set(c1.values()), new Set(cores.values()));
        for (let q = 0; q < 2; q++) {
          const r = await b.read(q * 8 * 16, 8192, q);
          assert.equal(r.status, BlkStatus.OK);
          assert.ok(Buffer.from(r.data).equals(Buffer.from(pattern(8192, q * 8))));
        }
      } finally {
        b.close();
      }
    } finally {
      n.close();
    }
    await d.deleteController('q.0');
    await d.deleteController('q.1');
    await d.deleteController('n.0');
    await d.rpc('bdev_qcow2_delete', { name: 'Q' });
    assert.equal(qemuCheck(img).code, 0);
  });
});
