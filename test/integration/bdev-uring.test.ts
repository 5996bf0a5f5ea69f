// A uring bdev on a host file served by a real vhostd to the userspace vhost-user-blk initiator:
// what the initiator writes is in the file at the right offsets, FLUSH/DISCARD/WRITE_ZEROES work,
// and the data survives a restart. The second daemon recreates the bdev from the first one's saved
// bdev config (`--json`), runs with VHOSTD_NO_URING=1 (the daemon-level synchronous fallback), and
// then serves the same file again through the aio face of the module.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlkReqType, BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostdProcess } from '../lib/vhostd.js';

const MiB = 1 << 20;
const SIZE = 8 * MiB;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 13 + seed * 101 + (i >> 9)) & 0xff;
  return b;
}

/** [sector, length, seed, queue]: sizes from one sector to 128 KiB, spread over the disk. */
const writes: Array<[number, number, number, number]> = [
  [0, 4096, 1, 0],
  [8, 512, 2, 1],
  [2048, 128 * 1024, 3, 0],
  [4096 + 7, 3 * 512, 4, 1],
  [SIZE / 512 - 256, 128 * 1024, 5, 0],
  [10000, 64 * 1024, 6, 1],
];

function rangeSegment(sector: number, sectors: number): Uint8Array {
  const seg = new Uint8Array(16);
  const v = new DataView(seg.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  return seg;
}

describe('uring bdev through vhostd', () => {
  const multi = availableParallelism() >= 2;
  const mask = multi ? '0x3' : '0x1';
  const queues = multi ? 2 : 1;
  let dir: string;
  let file: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vhostd-uring-it-'));
    file = join(dir, 'disk.img');
    writeFileSync(file, Buffer.alloc(SIZE));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes land in the host file, read back, flush/discard/write-zeroes work, and survive a restart', async () => {
    let savedUuid: unknown;
    const d = await VhostdProcess.start(['-m', mask, '-L', 'info']);
    try {
      assert.equal(await d.rpc('bdev_uring_create', { filename: file, name: 'U0' }), 'U0');
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.u', dev_name: 'U0', cpumask: mask });
      const [info] = await d.rpc<Array<Record<string, unknown>>>('bdev_get_bdevs', { name: 'U0' });
      assert.equal(info.product_name, 'URING bdev');
      assert.equal(info.num_blocks, SIZE / 512);
      assert.equal(info.claimed, false, 'a controller opens its bdev without claiming it, as SPDK');
      const bdevConfig = await d.rpc<Array<{ method: string; params?: Record<string, unknown> }>>('framework_get_config', { name: 'bdev' });
      const saved = bdevConfig.find((c) => c.method === 'bdev_uring_create');
      assert.deepEqual(saved?.params, { name: 'U0', block_size: 512, filename: file, uuid: info.uuid });
      savedUuid = info.uuid;
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ subsystems: [{ subsystem: 'bdev', config: bdevConfig }] }));

      const ini = await BlkInitiator.connect(d.socket('vhost.u'), { queues, queueSize: 64, maxIoBytes: 128 * 1024 });
      try {
        assert.equal(ini.capacitySectors, SIZE / 512);
        const results = await Promise.all(writes.map(([s, len, seed, q]) => ini.write(s, pattern(len, seed), q % queues)));
        assert.deepEqual(
          results.map((r) => r.status),
          writes.map(() => BlkStatus.OK),
        );
        const flush = await ini.queues[0].submit(BlkReqType.FLUSH, 0, undefined, 0);
        assert.equal(flush.status, BlkStatus.OK);
        for (const [s, len, seed, q] of writes) {
          const r = await ini.read(s, len, q % queues);
          assert.equal(r.status, BlkStatus.OK);
          assert.deepEqual(r.data, pattern(len, seed), `read back sector ${s}`);
        }
        // The host file holds exactly those bytes at exactly those offsets, zeros elsewhere.
        const host = readFileSync(file);
        const expected = Buffer.alloc(SIZE);
        for (const [s, len, seed] of writes) expected.set(pattern(len, seed), s * 512);
        assert.ok(host.equals(expected), 'host file content');

        // DISCARD punches a hole in the file; WRITE_ZEROES zeroes.
        const blocksBefore = statSync(file).blocks;
        const discard = await ini.queues[0].submit(BlkReqType.DISCARD, 0, rangeSegment(2048, 256), 0);
        assert.equal(discard.status, BlkStatus.OK);
        assert.ok(statSync(file).blocks < blocksBefore, 'the discarded range was deallocated');
        const wz = await ini.queues[0].submit(BlkReqType.WRITE_ZEROES, 0, rangeSegment(10000, 64), 0);
        assert.equal(wz.status, BlkStatus.OK);
        const after = readFileSync(file);
        assert.ok(after.subarray(2048 * 512, 2304 * 512).equals(Buffer.alloc(128 * 1024)));
        assert.ok(after.subarray(10000 * 512, 10064 * 512).equals(Buffer.alloc(32 * 1024)));
        assert.ok(after.subarray(10064 * 512, 10128 * 512).equals(pattern(64 * 1024, 6).subarray(32 * 1024)));
      } finally {
        ini.close();
      }
      // Deleting the bdev needs the controller gone first.
      await assert.rejects(d.rpc('bdev_uring_delete', { name: 'U0' }), /Device or resource busy/);
    } finally {
      assert.equal(await d.stop(), 0);
    }

    // Restart from the saved config, on the synchronous fallback.
    process.env.VHOSTD_NO_URING = '1';
    let d2: VhostdProcess;
    try {
      d2 = await VhostdProcess.start(['-m', mask, '-L', 'info', '--json', join(dir, 'config.json')]);
    } finally {
      delete process.env.VHOSTD_NO_URING;
    }
    try {
      await d2.waitForLog(/io_uring disabled by VHOSTD_NO_URING/);
      const verify = async (ctrlr: string) => {
        const ini = await BlkInitiator.connect(d2.socket(ctrlr), { queues, queueSize: 64, maxIoBytes: 128 * 1024 });
        try {
          for (const [s, len, seed, q] of writes) {
            if (s === 2048 || s === 10000) continue; // discarded / zeroed above
            const r = await ini.read(s, len, q % queues);
            assert.equal(r.status, BlkStatus.OK);
            assert.deepEqual(r.data, pattern(len, seed), `sector ${s} after restart (${ctrlr})`);
          }
          const zeros = await ini.read(2048, 128 * 1024);
          assert.deepEqual(zeros.data, new Uint8Array(128 * 1024));
        } finally {
          ini.close();
        }
      };
      const [u0] = await d2.rpc<Array<Record<string, unknown>>>('bdev_get_bdevs', { name: 'U0' });
      assert.equal(u0.uuid, savedUuid, 'same uuid from the saved config');
      await d2.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.u', dev_name: 'U0', cpumask: mask });
      await verify('vhost.u');
      await d2.rpc('vhost_delete_controller', { ctrlr: 'vhost.u' });
      assert.equal(await d2.rpc('bdev_uring_delete', { name: 'U0' }), true);

      // The same file through bdev_aio_create, as most SPDK guides set it up.
      assert.equal(await d2.rpc('bdev_aio_create', { filename: file, name: 'A0', fallocate: true }), 'A0');
      await d2.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.a', dev_name: 'A0', cpumask: mask });
      await verify('vhost.a');
      const ini = await BlkInitiator.connect(d2.socket('vhost.a'), { queues, queueSize: 64, maxIoBytes: 128 * 1024 });
      try {
        assert.equal((await ini.write(3000, pattern(8192, 9), queues - 1)).status, BlkStatus.OK);
        assert.equal((await ini.queues[0].submit(BlkReqType.FLUSH, 0, undefined, 0)).status, BlkStatus.OK);
        assert.ok(readFileSync(file).subarray(3000 * 512, 3000 * 512 + 8192).equals(pattern(8192, 9)));
      } finally {
        ini.close();
      }
      await d2.waitForLog(/synchronous preadv\/pwritev on this reactor/);
      await d2.rpc('vhost_delete_controller', { ctrlr: 'vhost.a' });
      assert.equal(await d2.rpc('bdev_aio_delete', { name: 'A0' }), true);
    } finally {
      assert.equal(await d2.stop(), 0);
    }
  });
});
