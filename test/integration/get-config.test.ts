// GET_CONFIG sizes real front-ends use: QEMU asks for the 60 bytes of virtio_blk_config, SPDK's
// virtio-user initiator (bdevperf) for 256 and insists on a 256-byte reply; anything past the
// 256-byte config space is a protocol error that closes only that connection.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostdProcess } from '../lib/vhostd.js';

const MiB = 1024 * 1024;

describe('GET_CONFIG sizes', () => {
  let d: VhostdProcess;
  before(async () => {
    d = await VhostdProcess.start(['-m', '0x1']);
    await d.rpc('bdev_null_create', { name: 'N4k', num_blocks: (64 * MiB) / 4096, block_size: 4096 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'cfg', dev_name: 'N4k' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  for (const size of [60, 256]) {
    test(`a ${size}-byte GET_CONFIG gets a ${size}-byte reply with the disk's geometry`, async () => {
      const s = await BlkInitiator.negotiate(d.socket('cfg'), 16 << 20, { configSize: size });
      try {
        assert.equal(s.configReplyBytes, 12 + size);
        assert.equal(s.capacitySectors, (64 * MiB) / 512);
        assert.equal(s.blockSize, 4096);
      } finally {
        s.close();
      }
    });
  }

  test('257 bytes (past the config space) closes that connection only', async () => {
    await assert.rejects(BlkInitiator.negotiate(d.socket('cfg'), 16 << 20, { configSize: 257 }));
    const s = await BlkInitiator.negotiate(d.socket('cfg'), 16 << 20, { configSize: 256 });
    s.close();
    assert.ok(d.alive);
  });
});
