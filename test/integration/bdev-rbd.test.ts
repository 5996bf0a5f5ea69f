// The Ceph RBD bdev against a real single-node cluster (or CEPH_CONF's): bdev_rbd_create through a
// real vhostd, vhost-user-blk I/O from the userspace initiator checked with `rbd export`, data
// surviving a restart from a saved config, and every bad input answered with a JSON-RPC error
// that names the problem, within seconds, leaving nothing open.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BlkReqType, BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { RpcError } from '../../src/rpc/client.js';
import { type CephCluster, CephUnavailable, startCeph } from '../lib/ceph.js';
import { VhostdProcess } from '../lib/vhostd.js';

const MiB = 1 << 20;
const IMAGE_BYTES = 16 * MiB;

let ceph: CephCluster | undefined;
let skipReason: string | undefined;
const t0 = Date.now();
try {
  ceph = await startCeph();
} catch (e) {
  // Only a machine where the packages cannot be installed skips; CI installs them, so there a
  // missing cluster is a failure.
  if (!(e instanceof CephUnavailable) || process.env.CI) throw e;
  skipReason = `Ceph is not available: ${e.message}`;
}
const clusterStartMs = Date.now() - t0;

const run = `${process.pid}-${Date.now().toString(36)}`;
const IMG = `data-${run}`;
const ODD = `odd-${run}`; // 1026 KiB: a multiple of 512, not of 4096
const AUX = `aux-${run}`;

const pattern = (seed: number, len: number) => Uint8Array.from({ length: len }, (_, i) => (i * 131 + seed * 7 + (i >> 9)) & 0xff);

/** Regions written through the initiator: [sector, bytes, seed]. */
const REGIONS: Array<[number, number, number]> = [
  [0, 64 * 1024, 1],
  [8192 - 8, 8 * 1024, 2], // across the 4 MiB object boundary
  [12345, 4096, 3],
  [IMAGE_BYTES / 512 - 256, 128 * 1024, 4], // the last 128 KiB
];

async function rejectsWith(p: Promise<unknown>, code: number, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${String(err)}`);
    assert.equal(err.code, code, `code for "${err.message}"`);
    assert.match(err.message, message);
    return true;
  });
}

/** Threads of `pid` that librados/librbd started (Node's own threads are all named "node"). */
function cephThreads(pid: number): number {
  let n = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== 'node') n++;
    } catch {
      // the thread just exited
    }
  }
  return n;
}

function mapsLibrbd(pid: number): boolean {
  return /\/librbd\.so/.test(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

function segment(sector: number, sectors: number, flags = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  v.setUint32(12, flags, true);
  return b;
}

describe('Ceph RBD bdev', { skip: skipReason ?? false }, () => {
  let d: VhostdProcess;
  let savedConfig: string;
  const savedEnv = process.env.CEPH_CONF;

  before(async () => {
    const c = ceph as CephCluster;
    const t = Date.now();
    await Promise.all([c.createImage(IMG, '16M'), c.createImage(ODD, '1026K'), c.createImage(AUX, '4M')]);
    // vhostd inherits CEPH_CONF: bdevs created without `config` read it, like librados clients.
    process.env.CEPH_CONF = c.conf;
    d = await VhostdProcess.start(['-m', '0x3', '-L', 'info']);
    console.log(`# ceph: cluster ${c.external ? 'external' : 'started'} in ${clusterStartMs} ms, images in ${Date.now() - t} ms`);
  });

  after(async () => {
    if (d?.alive) await d.stop();
    if (savedConfig) rmSync(savedConfig, { force: true });
    if (savedEnv === undefined) delete process.env.CEPH_CONF;
    else process.env.CEPH_CONF = savedEnv;
    await ceph?.stop();
  });

  test('bdev_rbd_create, then blk I/O lands in the image', async () => {
    const c = ceph as CephCluster;
    // librbd is loaded with the first RBD bdev, not at start: a target without one does not carry it.
    assert.equal(mapsLibrbd(d.proc.pid as number), false, 'librbd mapped before any RBD bdev');
    assert.equal(await d.rpc('bdev_rbd_create', { name: 'rbd0', pool_name: c.pool, rbd_name: IMG, block_size: 512 }), 'rbd0');
    const [info] = await d.rpc<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'rbd0' });
    assert.equal(info.product_name, 'Ceph Rbd Disk');
    assert.equal(info.block_size, 512);
    assert.equal(info.num_blocks, IMAGE_BYTES / 512);
    assert.deepEqual(info.driver_specific, { rbd: { pool_name: c.pool, rbd_name: IMG } });
    for (const io of ['read', 'write', 'flush', 'unmap', 'write_zeroes']) assert.equal(info.supported_io_types[io], true, io);
    assert.equal(await c.watchers(IMG), 1, 'the bdev holds one image handle');
    assert.equal(mapsLibrbd(d.proc.pid as number), true, 'librbd mapped once an RBD bdev exists');

    await d.rpc('vhost_create_blk_controller', { ctrlr: 'rbd.0', dev_name: 'rbd0', cpumask: '0x3' });
    const ini = await BlkInitiator.connect(d.socket('rbd.0'), { queues: 2, queueSize: 64, maxIoBytes: 128 * 1024, memBytes: 32 * MiB });
    try {
      // Concurrent writes on both queues (reactors on two cores share the image handle).
      const writes = REGIONS.map(([sector, len, seed], i) => ini.write(sector, pattern(seed, len), i % 2));
      for (const r of await Promise.all(writes)) assert.equal(r.status, BlkStatus.OK);
      for (const [sector, len, seed] of REGIONS) {
        const r = await ini.read(sector, len, seed % 2);
        assert.equal(r.status, BlkStatus.OK);
        assert.ok(Buffer.from(r.data).equals(pattern(seed, len)), `read back at sector ${sector}`);
      }
      // A batch of small I/Os in flight at once.
      const many = Array.from({ length: 24 }, (_, i) => ini.write(20000 + i * 8, pattern(100 + i, 4096), i % 2));
      for (const r of await Promise.all(many)) assert.equal(r.status, BlkStatus.OK);
      const reads = await Promise.all(Array.from({ length: 24 }, (_, i) => ini.read(20000 + i * 8, 4096, i % 2)));
      reads.forEach((r, i) => assert.ok(Buffer.from(r.data).equals(pattern(100 + i, 4096)), `small write ${i}`));

      // WRITE_ZEROES over the middle of region 0 (sectors 16..47), DISCARD somewhere unwritten.
      const q = ini.queues[0];
      assert.equal((await q.submit(BlkReqType.WRITE_ZEROES, 0, segment(16, 32), 0)).status, BlkStatus.OK);
      assert.equal((await q.submit(BlkReqType.DISCARD, 0, segment(30000, 64), 0)).status, BlkStatus.OK);
      const z = await ini.read(0, 64 * 1024);
      const expect = pattern(1, 64 * 1024);
      expect.fill(0, 16 * 512, 48 * 512);
      assert.ok(Buffer.from(z.data).equals(expect), 'write-zeroes range reads back zeros, the rest intact');
      // Out of range: the device refuses it before the bdev sees it.
      assert.equal((await ini.read(IMAGE_BYTES / 512, 512)).status, BlkStatus.IOERR);
      assert.equal((await q.submit(BlkReqType.FLUSH, 0, undefined, 0)).status, BlkStatus.OK);
    } finally {
      ini.close();
    }

    // What another client of the cluster sees.
    const image = await c.exportImage(IMG);
    assert.equal(image.length, IMAGE_BYTES);
    const expect0 = pattern(1, 64 * 1024);
    expect0.fill(0, 16 * 512, 48 * 512);
    assert.ok(image.subarray(0, 64 * 1024).equals(expect0), 'rbd export: region 0');
    for (const [sector, len, seed] of REGIONS.slice(1)) {
      assert.ok(image.subarray(sector * 512, sector * 512 + len).equals(pattern(seed, len)), `rbd export: sector ${sector}`);
    }
  });

  test('auto-named bdevs (Ceph<n>), an explicit `config` map, 4096-byte blocks and bdev_rbd_delete', async () => {
    const c = ceph as CephCluster;
    // `config` replaces the config file: the options CEPH_CONF would have given.
    const config: Record<string, string> = {};
    for (const key of ['mon_host', 'auth_client_required', 'keyring']) {
      const v = (await c.rbd(['--show-config-value', key]).catch(() => Buffer.from(''))).toString().trim();
      if (v) config[key] = v;
    }
    if (config.mon_host === undefined) {
      // Older CLIs lack --show-config-value: read mon host from the file.
      config.mon_host = /^\s*mon[ _]host\s*=\s*(.+)$/m.exec(readFileSync(c.conf, 'utf8'))?.[1].trim() ?? '';
    }
    // SPDK's count includes every rbd bdev created so far (rbd0 above): the next auto-name is Ceph1.
    const name = await d.rpc<string>('bdev_rbd_create', { pool_name: c.pool, rbd_name: AUX, block_size: 4096, config });
    assert.equal(name, 'Ceph1');
    const [info] = await d.rpc<Array<Record<string, any>>>('bdev_get_bdevs', { name });
    assert.equal(info.block_size, 4096);
    assert.equal(info.num_blocks, (4 * MiB) / 4096);
    assert.deepEqual(info.driver_specific, { rbd: { pool_name: c.pool, rbd_name: AUX, config } });
    assert.equal(await c.watchers(AUX), 1);

    assert.equal(await d.rpc('bdev_rbd_delete', { name }), true);
    assert.equal(await c.watchers(AUX), 0, 'delete closed the image');
    await rejectsWith(d.rpc('bdev_rbd_delete', { name }), -19, /No such device/);
    // Not an rbd bdev.
    await d.rpc('bdev_malloc_create', { name: 'm0', num_blocks: 64, block_size: 512 });
    await rejectsWith(d.rpc('bdev_rbd_delete', { name: 'm0' }), -19, /No such device/);
    await d.rpc('bdev_malloc_delete', { name: 'm0' });
    // A claimed bdev stays.
    await rejectsWith(d.rpc('bdev_rbd_delete', { name: 'rbd0' }), -16, /Device or resource busy/);
  });

  test('a registered cluster shared by bdevs; read_only', async () => {
    const c = ceph as CephCluster;
    assert.equal(await d.rpc('bdev_rbd_register_cluster', { name: 'c0', config_file: c.conf, core_mask: '0x1' }), 'c0');
    await rejectsWith(d.rpc('bdev_rbd_register_cluster', { name: 'c0', config_file: c.conf }), -17, /rbd cluster c0 is already registered/);
    await rejectsWith(d.rpc('bdev_rbd_register_cluster', { name: 'c1', config_file: '/nonexistent/ceph.conf' }), -2, /cannot read the Ceph config file/);
    assert.deepEqual(await d.rpc('bdev_rbd_get_clusters_info', { name: 'c0' }), { cluster_name: 'c0', config_file: c.conf, core_mask: '0x1' });
    assert.deepEqual(await d.rpc('bdev_rbd_get_clusters_info'), [{ cluster_name: 'c0', config_file: c.conf, core_mask: '0x1' }]);

    const base = { pool_name: c.pool, rbd_name: AUX, block_size: 512, cluster_name: 'c0' };
    assert.equal(await d.rpc('bdev_rbd_create', { ...base, name: 'ro', read_only: true }), 'ro');
    assert.equal(await d.rpc('bdev_rbd_create', { ...base, name: 'rw' }), 'rw');
    const [ro] = await d.rpc<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'ro' });
    assert.deepEqual(ro.driver_specific, { rbd: { pool_name: c.pool, rbd_name: AUX, cluster_name: 'c0', config_file: c.conf, read_only: true } });
    assert.equal(ro.supported_io_types.write, false);
    assert.equal(ro.supported_io_types.read, true);
    const cfg = await d.rpc<Array<{ method: string; params: Record<string, unknown> }>>('framework_get_config', { name: 'bdev' });
    assert.deepEqual(cfg.find((e) => e.params?.name === 'ro')?.params, { ...base, name: 'ro', read_only: true, uuid: ro.uuid });

    await rejectsWith(d.rpc('bdev_rbd_unregister_cluster', { name: 'c0' }), -16, /rbd cluster c0 is used by 2 bdev/);
    await d.rpc('bdev_rbd_delete', { name: 'ro' });
    await d.rpc('bdev_rbd_delete', { name: 'rw' });
    assert.equal(await c.watchers(AUX), 0);
    assert.equal(await d.rpc('bdev_rbd_unregister_cluster', { name: 'c0' }), true);
    await rejectsWith(d.rpc('bdev_rbd_get_clusters_info'), -2, /no rbd cluster is registered/);
  });

  test('bad input: a JSON-RPC error naming the problem, nothing left open', async () => {
    const c = ceph as CephCluster;
    const pid = d.proc.pid as number;
    const bdevsBefore = (await d.rpc<unknown[]>('bdev_get_bdevs')).length;
    const threadsBefore = cephThreads(pid);
    const base = { pool_name: c.pool, rbd_name: IMG, block_size: 512 };

    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, name: 'x1', pool_name: `nopool-${run}` }), -2, new RegExp(`pool nopool-${run} does not exist`));
    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, name: 'x2', rbd_name: `noimage-${run}` }), -2, new RegExp(`image noimage-${run} does not exist in pool ${c.pool}`));
    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, name: 'x3', block_size: 520 }), -22, /block_size 520 is not one of 512, 4096/);
    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, name: 'x4', block_size: 4096, rbd_name: ODD }), -22, /size 1050624 is not a multiple of block_size 4096/);
    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, name: 'rbd0' }), -17, /bdev rbd0 already exists/);
    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, name: 'x5', config: { no_such_option: '1' } }), -2, /config no_such_option="1": unknown option/);
    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, name: 'x6', config: 'mon_host=1.2.3.4' }), -32602, /spdk_json_decode_object failed/);
    await rejectsWith(d.rpc('bdev_rbd_create', { name: 'x7', pool_name: c.pool, block_size: 512 }), -32602, /spdk_json_decode_object failed/);
    await rejectsWith(d.rpc('bdev_rbd_create', { ...base, cluster_name: 'nocluster' }), -2, /rbd cluster nocluster is not registered/);

    // Unreachable monitors: nothing listens on 127.0.0.1:1. Fails within a few seconds, and the
    // daemon keeps answering meanwhile (the connect runs off the control thread).
    const t = Date.now();
    const unreachable = d.rpc('bdev_rbd_create', { ...base, name: 'x8', config: { mon_host: '127.0.0.1:1' } });
    const v = await d.rpc<{ version: string }>('spdk_get_version');
    assert.ok(Date.now() - t < 1000, 'RPC answered while the connect was pending');
    assert.match(v.version, /SPDK/);
    await rejectsWith(unreachable, -110, /cannot reach the Ceph monitors at 127\.0\.0\.1:1/);
    const took = Date.now() - t;
    assert.ok(took < 10_000, `unreachable monitor took ${took} ms`);
    console.log(`# ceph: unreachable monitor failed in ${took} ms`);

    assert.equal((await d.rpc<unknown[]>('bdev_get_bdevs')).length, bdevsBefore, 'no bdev was added');
    // No rados handle left: the threads of the failed connects' librados instances are gone again.
    let threads = cephThreads(pid);
    for (let i = 0; i < 50 && threads !== threadsBefore; i++) {
      await new Promise((r) => setTimeout(r, 100));
      threads = cephThreads(pid);
    }
    assert.equal(threads, threadsBefore, 'librados/librbd threads before and after the failed creates');
    // The failed creates left the image with one watcher: rbd0's.
    assert.equal(await c.watchers(IMG), 1);
    // The names were not kept.
    assert.equal(await d.rpc('bdev_rbd_create', { ...base, name: 'x1', rbd_name: ODD }), 'x1');
    assert.equal(await d.rpc('bdev_rbd_delete', { name: 'x1' }), true);
  });

  test('save_config round-trips; a new vhostd on the same image sees the data', async () => {
    const c = ceph as CephCluster;
    const bdevConfig = await d.rpc<Array<{ method: string; params?: Record<string, unknown> }>>('framework_get_config', { name: 'bdev' });
    const rbdCall = bdevConfig.find((e) => e.method === 'bdev_rbd_create');
    const [info] = await d.rpc<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'rbd0' });
    assert.deepEqual(rbdCall?.params, { name: 'rbd0', pool_name: c.pool, rbd_name: IMG, block_size: 512, uuid: info.uuid });
    const blkConfig = await d.rpc<unknown[]>('framework_get_config', { name: 'vhost_blk' });
    savedConfig = join(d.dir, '..', `vhostd-rbd-${run}.json`);
    writeFileSync(savedConfig, JSON.stringify({ subsystems: [{ subsystem: 'bdev', config: bdevConfig }, { subsystem: 'vhost_blk', config: blkConfig }] }));

    assert.equal(await d.stop(), 0);
    assert.equal(await c.watchers(IMG), 0, 'vhostd closed the image on exit');

    d = await VhostdProcess.start(['-m', '0x3', '-L', 'info', '--json', savedConfig]);
    const [again] = await d.rpc<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'rbd0' });
    assert.equal(again.uuid, info.uuid);
    assert.equal(again.num_blocks, info.num_blocks);
    const ini = await BlkInitiator.connect(d.socket('rbd.0'), { queues: 1, maxIoBytes: 128 * 1024 });
    try {
      for (const [sector, len, seed] of REGIONS.slice(1)) {
        const r = await ini.read(sector, len);
        assert.equal(r.status, BlkStatus.OK);
        assert.ok(Buffer.from(r.data).equals(pattern(seed, len)), `after restart: sector ${sector}`);
      }
      const r0 = await ini.read(0, 16 * 512);
      assert.ok(Buffer.from(r0.data).equals(pattern(1, 16 * 512)), 'after restart: sector 0');
    } finally {
      ini.close();
    }
  });
});
