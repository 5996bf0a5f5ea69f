// bdev_qcow2_snapshot: live external snapshots of a qcow2 bdev in use, served by a real vhostd and
// driven by the project's vhost-user-blk initiator. Under vhost-load --verify (randrw) two
// snapshots are taken (the overlay next to the image: relative backing name; in another
// directory: absolute) without an I/O or verify error; known data written before and after the
// snapshots shows that each old image holds the disk as it was at its snapshot and is not written
// afterwards (sha256 unchanged), that qemu-img check finds every file clean and that the chain,
// as qemu-img reads it, is what the initiator reads. Also: bdev_get_bdevs and save_config after
// the switch, recreating the bdev from the saved config, a snapshot of a bdev without channels
// (the control thread switches), and the RPC errors with the bdev serving on.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlkReqType, BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { RpcError } from '../../src/rpc/client.js';
import { runLoad as load } from '../lib/vhost-load.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { MiB, pattern, qemuCheck, qemuCompare, qemuImg, qemuIo, qemuRaw, tempDir } from '../unit/qcow2/qemu.js';


const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function expectRpcError(p: Promise<unknown>, code: number, re: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(e instanceof RpcError, 'the call was accepted');
  assert.equal(e.code, code, e.message);
  assert.match(e.message, re);
}

async function writeOk(ini: BlkInitiator, byteOff: number, data: Uint8Array): Promise<void> {
  assert.equal((await ini.write(byteOff / 512, data)).status, BlkStatus.OK, `write at ${byteOff}`);
}

async function readOk(ini: BlkInitiator, byteOff: number, len: number): Promise<Buffer> {
  const r = await ini.read(byteOff / 512, len);
  assert.equal(r.status, BlkStatus.OK, `read at ${byteOff}`);
  return Buffer.from(r.data!);
}

async function flushOk(ini: BlkInitiator): Promise<void> {
  assert.equal((await ini.queues[0].submit(BlkReqType.FLUSH, 0, undefined, 0)).status, BlkStatus.OK);
}

/** The whole disk as the initiator reads it. */
async function readAll(ini: BlkInitiator, size: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (let off = 0; off < size; off += 256 * 1024) chunks.push(await readOk(ini, off, 256 * 1024));
  return Buffer.concat(chunks);
}

/** Waits (up to 20 s) until framework_get_reactors shows more than `min` requests in flight. */
async function untilInFlight(d: VhostdProcess, min: number): Promise<void> {
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    const r = await d.rpc<{ reactors: Array<{ queues: Array<{ in_flight: number }> }> }>('framework_get_reactors');
    if (r.reactors.some((x) => x.queues.some((q) => q.in_flight > min))) return;
    await sleep(2);
  }
  assert.fail('vhost-load did not get going');
}

type Bdev = { name: string; uuid: string; driver_specific: { qcow2: { filename: string; cluster_size: number; backing_chain: Array<{ filename: string; format: string }> } } };

describe('qcow2 live snapshot (bdev_qcow2_snapshot)', { timeout: 300_000 }, () => {
  let d: VhostdProcess;
  let dir: string;
  let cleanup: () => void;

  before(async () => {
    ({ dir, cleanup } = tempDir());
    d = await VhostdProcess.start(['-m', '0x1', '-L', 'info']);
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
    cleanup();
  });

  it('under vhost-load --verify: two snapshots, no I/O error; old images frozen at their snapshot, clean, unchanged; the chain reads what the initiator read', async () => {
    const SIZE = 64 * MiB;
    const base = join(dir, 'live.qcow2');
    const snap1 = join(dir, 'live-snap1.qcow2');
    const other = join(dir, 'elsewhere');
    mkdirSync(other);
    const snap2 = join(other, 'live-snap2.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', base, '64M');
    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'L', filename: base }), 'L');
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.L', dev_name: 'L' });
    const ini = await BlkInitiator.connect(d.socket('vhost.L'), { queues: 1, queueSize: 64, maxIoBytes: 256 * 1024 });
    // Known regions outside the loaded 16 MiB: A written before both snapshots, rewritten after the
    // first; B written between them; C only after the second.
    const A = 32 * MiB;
    const B = 40 * MiB;
    const C = 48 * MiB;
    let atSnap1: Buffer;
    let atSnap2: Buffer;
    let final: Buffer;
    let sum1: string;
    let sum2: string;
    try {
      await writeOk(ini, A, pattern(MiB, 1));
      await writeOk(ini, A + 3 * MiB + 4096, pattern(8192, 2)); // partial clusters
      await flushOk(ini);
      const loadRun = load(d.socket('vhost.L'), ['-q', '2', '-d', '32', '-b', '64k', '--rw', 'randrw', '--verify', '--range', '16m', '-t', '5']);
      await untilInFlight(d, 4);
      // The loaded range changes all the time: what the disk was at the snapshot is what the
      // initiator reads outside it, plus whatever vhost-load had written inside it.
      atSnap1 = await readAll(ini, SIZE);
      await untilInFlight(d, 4);
      assert.equal(await d.rpc('bdev_qcow2_snapshot', { name: 'L', snapshot_file: snap1 }), snap1);
      sum1 = sha256(base);
      await writeOk(ini, A, pattern(MiB, 3));
      await writeOk(ini, B, pattern(2 * MiB, 4));
      await flushOk(ini);
      atSnap2 = await readAll(ini, SIZE);
      await untilInFlight(d, 4);
      assert.equal(await d.rpc('bdev_qcow2_snapshot', { name: 'L', snapshot_file: snap2, cluster_size: 4096 }), snap2);
      sum2 = sha256(snap1);
      await writeOk(ini, C, pattern(MiB + 512, 5));
      await writeOk(ini, B + 4096, pattern(4096, 6));
      const l = await loadRun;
      assert.equal(l.errors + l.verifyErrors, 0, JSON.stringify(l));
      assert.ok(l.writes > 100 && l.reads > 100, JSON.stringify(l));
      // After the load: a second verify run over the whole range reads through all three files.
      const l2 = await load(d.socket('vhost.L'), ['-d', '8', '--rw', 'randrw', '--verify', '--range', '16m', '-t', '1']);
      assert.equal(l2.errors + l2.verifyErrors, 0, JSON.stringify(l2));
      await flushOk(ini);
      final = await readAll(ini, SIZE);

      // The new chain in bdev_get_bdevs and save_config.
      const [b] = await d.rpc<Bdev[]>('bdev_get_bdevs', { name: 'L' });
      const q = b!.driver_specific.qcow2;
      assert.equal(q.filename, snap2);
      assert.equal(q.cluster_size, 4096);
      assert.deepEqual(
        q.backing_chain.map((c) => [c.filename, c.format]),
        [
          [snap1, 'qcow2'],
          [base, 'qcow2'],
        ],
      );
      const cfg = await d.rpc<Array<{ method: string; params: Record<string, unknown> }>>('framework_get_config', { name: 'bdev' });
      assert.deepEqual(cfg.find((c) => c.method === 'bdev_qcow2_create')?.params, { name: 'L', filename: snap2, readonly: false, uuid: b!.uuid });
      const switched = d.logsMatching(/switched to .*requests held/);
      assert.equal(switched.length, 2, switched.join('\n'));
      for (const line of switched) {
        const [, ms, drained] = /requests held ([\d.]+) ms: drain of (\d+)/.exec(line)!;
        console.log(`# requests held ${ms} ms, ${drained} drained`);
        assert.ok(Number(ms) < 200, `requests held ${ms} ms: ${line}`);
      }
    } finally {
      ini.close();
      await d.deleteController('vhost.L');
      assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'L' }), true);
    }
    // The old images: not written after their snapshot, clean, and the disk as it was then.
    assert.equal(sha256(base), sum1, `${base} changed after the snapshot`);
    assert.equal(sha256(snap1), sum2, `${snap1} changed after the snapshot`);
    for (const f of [base, snap1, snap2]) {
      const c = qemuCheck(f);
      assert.equal(c.code, 0, `${f}: ${c.out}`);
    }
    const rawBase = qemuRaw(dir, base);
    // Outside the loaded range exactly; inside it vhost-load kept writing between the read and the snapshot.
    assert.ok(rawBase.subarray(16 * MiB).equals(atSnap1!.subarray(16 * MiB)), 'the base holds the disk as it was at the first snapshot');
    assert.ok(rawBase.subarray(A, A + MiB).equals(Buffer.from(pattern(MiB, 1))));
    assert.ok(rawBase.subarray(B, B + 2 * MiB).equals(Buffer.alloc(2 * MiB)), 'written after the snapshot: not in the base');
    const rawSnap1 = qemuRaw(dir, snap1);
    assert.ok(rawSnap1.subarray(16 * MiB).equals(atSnap2!.subarray(16 * MiB)), 'snap1 (with its backing) holds the disk at the second snapshot');
    assert.ok(rawSnap1.subarray(A, A + MiB).equals(Buffer.from(pattern(MiB, 3))));
    assert.ok(rawSnap1.subarray(C, C + MiB).equals(Buffer.alloc(MiB)));
    // The whole chain: what the initiator read at the end.
    assert.equal(qemuCompare(dir, snap2, new Uint8Array(final!)).code, 0, 'qemu-img compare: the chain holds what the initiator read');
    const info = JSON.parse(qemuImg('info', '--output=json', '--backing-chain', snap2)) as Array<Record<string, unknown>>;
    assert.deepEqual(
      info.map((i) => [i.filename, i['backing-filename']]),
      [
        [snap2, snap1], // another directory: absolute
        [snap1, 'live.qcow2'], // the same directory: relative
        [base, undefined],
      ],
    );
    assert.equal(info[0]!['backing-filename-format'], 'qcow2');

    // save_config's call serves the same disk after a restart.
    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'L2', filename: snap2 }), 'L2');
    try {
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.L2', dev_name: 'L2' });
      const ini2 = await BlkInitiator.connect(d.socket('vhost.L2'), { queues: 1, queueSize: 64, maxIoBytes: 256 * 1024 });
      try {
        assert.ok((await readAll(ini2, SIZE)).equals(final!), 'recreated on the overlay: the same disk');
      } finally {
        ini2.close();
      }
      await d.deleteController('vhost.L2');
    } finally {
      assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'L2' }), true);
    }
  });

  it('a switch that catches requests in flight holds new ones until those drain; nothing is lost', async () => {
    // Whether requests are in flight at the instant of the switch is chance: writes to a file in
    // the page cache mostly complete inside io_uring's submit, and only those punted to its
    // workers stay out. So the snapshots go on, under load, until one found some (at most 12).
    const img = join(dir, 'drain.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', img, '32M');
    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'D', filename: img }), 'D');
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.D', dev_name: 'D' });
    const files = [img];
    let drained = 0;
    try {
      const loadRun = load(d.socket('vhost.D'), ['-q', '2', '-d', '32', '-b', '64k', '--rw', 'randrw', '--verify', '--range', '16m', '-t', '8']);
      for (let i = 1; i <= 12 && drained === 0; i++) {
        await untilInFlight(d, 4);
        const snap = join(dir, `drain-${i}.qcow2`);
        assert.equal(await d.rpc('bdev_qcow2_snapshot', { name: 'D', snapshot_file: snap }), snap);
        files.push(snap);
        const line = d.logsMatching(new RegExp(`switched to ${snap.replace(/[.]/g, '\\.')} .*requests held`)).at(-1);
        assert.ok(line, `no switch line for ${snap}`);
        drained = Number(/drain of (\d+)/.exec(line)![1]);
        console.log(`# switch ${i}: ${drained} requests in flight drained`);
      }
      const l = await loadRun;
      assert.equal(l.errors + l.verifyErrors, 0, JSON.stringify(l));
      assert.ok(drained > 0, `no switch in ${files.length - 1} caught a request in flight`);
      // A second run on the chain the switches left: its writes and verified reads go through every level.
      const l2 = await load(d.socket('vhost.D'), ['-d', '8', '--rw', 'randrw', '--verify', '--range', '16m', '-t', '1']);
      assert.equal(l2.errors + l2.verifyErrors, 0, JSON.stringify(l2));
    } finally {
      await d.deleteController('vhost.D');
      assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'D' }), true);
    }
    for (const f of files) assert.equal(qemuCheck(f).code, 0, `${f} is not clean`);
  });

  it('a bdev without channels switches on the control thread; a controller made afterwards reads the chain', async () => {
    const img = join(dir, 'idle.qcow2');
    const snap = join(dir, 'idle-snap.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
    qemuIo(img, 'write -P 0x5a 0 1M');
    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'I', filename: img }), 'I');
    try {
      const sum = sha256(img);
      assert.equal(await d.rpc('bdev_qcow2_snapshot', { name: 'I', snapshot_file: snap }), snap);
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.I', dev_name: 'I' });
      const ini = await BlkInitiator.connect(d.socket('vhost.I'), { queues: 1, queueSize: 64, maxIoBytes: 256 * 1024 });
      try {
        assert.ok((await readOk(ini, 0, 65536)).equals(Buffer.alloc(65536, 0x5a)));
        await writeOk(ini, 4096, pattern(4096, 10));
        await flushOk(ini);
      } finally {
        ini.close();
      }
      await d.deleteController('vhost.I');
      assert.equal(sha256(img), sum);
    } finally {
      assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'I' }), true);
    }
    const model = new Uint8Array(8 * MiB);
    model.fill(0x5a, 0, MiB);
    model.set(pattern(4096, 10), 4096);
    assert.equal(qemuCompare(dir, snap, model).code, 0);
    assert.equal(qemuCheck(snap).code, 0);
  });

  it('errors: file exists, relative path, not qcow2, read-only, backing_file override, bad cluster size, missing bdev; the bdev serves the old image on', async () => {
    const img = join(dir, 'err.qcow2');
    const exists = join(dir, 'exists.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
    writeFileSync(exists, 'x');
    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'E', filename: img }), 'E');
    await d.rpc('bdev_malloc_create', { name: 'M', num_blocks: 2048, block_size: 512 });
    const ro = join(dir, 'ro.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', ro, '8M');
    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'R', filename: ro, readonly: true }), 'R');
    const ov = join(dir, 'ov.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', ov, '8M');
    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'O', filename: ov, backing_file: '' }), 'O');
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.E', dev_name: 'E' });
    const ini = await BlkInitiator.connect(d.socket('vhost.E'), { queues: 1, queueSize: 64, maxIoBytes: 256 * 1024 });
    try {
      await writeOk(ini, 0, pattern(65536, 11));
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'E', snapshot_file: exists }), -17, /File exists: .*exists\.qcow2 already exists/);
      assert.equal(readFileSync(exists, 'utf8'), 'x', 'an existing file is left alone');
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'E', snapshot_file: 'rel.qcow2' }), -22, /must be an absolute path/);
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'M', snapshot_file: join(dir, 'm.qcow2') }), -19, /bdev M is a malloc bdev, not qcow2/);
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'R', snapshot_file: join(dir, 'r.qcow2') }), -30, /bdev R is read-only/);
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'O', snapshot_file: join(dir, 'o.qcow2') }), -95, /backing_file/);
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'E', snapshot_file: join(dir, 'c.qcow2'), cluster_size: 1000 }), -22, /cluster size 1000/);
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'nobdev', snapshot_file: join(dir, 'n.qcow2') }), -19, /bdev nobdev does not exist/);
      await expectRpcError(d.rpc('bdev_qcow2_snapshot', { name: 'E' }), -32602, /spdk_json_decode_object failed/);
      for (const f of ['m', 'r', 'o', 'c', 'n']) assert.ok(!existsSync(join(dir, `${f}.qcow2`)), `${f}.qcow2 not left behind`);
      // Still the old image, still writable.
      await writeOk(ini, 65536, pattern(4096, 12));
      assert.ok((await readOk(ini, 0, 65536)).equals(Buffer.from(pattern(65536, 11))));
      await flushOk(ini);
      const [b] = await d.rpc<Bdev[]>('bdev_get_bdevs', { name: 'E' });
      assert.equal(b!.driver_specific.qcow2.filename, img);
      assert.deepEqual(b!.driver_specific.qcow2.backing_chain, []);
    } finally {
      ini.close();
      await d.deleteController('vhost.E');
      for (const n of ['E', 'R', 'O']) assert.equal(await d.rpc('bdev_qcow2_delete', { name: n }), true);
      await d.rpc('bdev_malloc_delete', { name: 'M' });
    }
    assert.equal(qemuCheck(img).code, 0);
  });
});
