// qcow2 bdevs served by a real vhostd: images made by qemu-img (64 KiB and 4 KiB clusters) and an
// overlay over a qcow2 base, driven by the project's vhost-user-blk initiator (vhost-load --verify
// randrw, and known data written and read back through BlkInitiator). After the bdev is deleted,
// QEMU's tools judge the files: qemu-img check clean, the base unchanged, the guest content as
// qemu-img convert reads it equal to what the initiator wrote and read. Also the round trip with
// qemu-io, thin allocation and discard, the RPC errors, bdev_get_bdevs and save_config.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlkReqType, BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { RpcError } from '../../src/rpc/client.js';
import { runLoad as load } from '../lib/vhost-load.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { MiB, pattern, qemuCheck, qemuCompare, qemuImg, qemuIo, qemuMap, qemuRaw, tempDir } from '../unit/qcow2/qemu.js';


const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

function rangeSegment(sector: number, sectors: number): Uint8Array {
  const seg = new Uint8Array(16);
  const v = new DataView(seg.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  return seg;
}

async function readOk(ini: BlkInitiator, sector: number, len: number): Promise<Uint8Array> {
  const r = await ini.read(sector, len);
  assert.equal(r.status, BlkStatus.OK, `read at sector ${sector}`);
  return r.data!;
}

async function expectRpcError(p: Promise<unknown>, code: number, re: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(e instanceof RpcError, 'the call was accepted');
  assert.equal(e.code, code, e.message);
  assert.match(e.message, re);
}

describe('qcow2 bdev through vhostd', { timeout: 300_000 }, () => {
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

  /** Creates bdev + controller, runs fn with an initiator, then deletes controller and bdev. */
  async function serve(name: string, params: Record<string, unknown>, fn: (ini: BlkInitiator, socket: string) => Promise<void>): Promise<void> {
    assert.equal(await d.rpc('bdev_qcow2_create', { name, ...params }), name);
    const ctrlr = `vhost.${name}`;
    await d.rpc('vhost_create_blk_controller', { ctrlr, dev_name: name });
    try {
      const ini = await BlkInitiator.connect(d.socket(ctrlr), { queues: 1, queueSize: 64, maxIoBytes: 256 * 1024 });
      try {
        await fn(ini, d.socket(ctrlr));
      } finally {
        ini.close();
      }
    } finally {
      await d.deleteController(ctrlr);
      assert.equal(await d.rpc('bdev_qcow2_delete', { name }), true);
    }
  }

  for (const cs of [65536, 4096]) {
    it(`${cs / 1024} KiB clusters: randrw --verify, known data, qemu-img check clean, qemu-img convert reads the same`, async () => {
      const img = join(dir, `plain-${cs}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, img, '64M');
      // [sector, bytes, seed]: inside one cluster, across clusters, unaligned to clusters, at the end.
      const writes: Array<[number, number, number]> = [
        [65536, 4096, 1],
        [65536 + 5, 512, 2],
        [70000, 200 * 1024, 3],
        [100003, 3 * 512, 4],
        [131072 - 256, 128 * 1024, 5],
      ];
      let ini16: Uint8Array | undefined;
      await serve(`Q${cs}`, { filename: img }, async (ini, socket) => {
        for (const [s, len, seed] of writes) assert.equal((await ini.write(s, pattern(len, seed))).status, BlkStatus.OK, `write at sector ${s}`);
        for (const [s, len, seed] of writes.slice(2)) {
          const r = await ini.read(s, len);
          assert.equal(r.status, BlkStatus.OK);
          assert.ok(Buffer.from(r.data!).equals(Buffer.from(pattern(len, seed))), `read back sector ${s}`);
        }
        const r0 = await ini.read(65536, 4096);
        const want = pattern(4096, 1);
        want.set(pattern(512, 2), 5 * 512);
        assert.ok(Buffer.from(r0.data!).equals(Buffer.from(want)), 'overlapping writes');
        const zeros = await ini.read(120000, 64 * 1024);
        assert.ok(Buffer.from(zeros.data!).equals(Buffer.alloc(64 * 1024)), 'never written: zeros');
        const l = await load(socket, ['-d', '16', '--rw', 'randrw', '--verify', '--range', '16m', '-t', '2']);
        assert.equal(l.errors + l.verifyErrors, 0, JSON.stringify(l));
        assert.ok(l.writes > 100 && l.reads > 100, JSON.stringify(l));
        assert.equal((await ini.queues[0].submit(BlkReqType.FLUSH, 0, undefined, 0)).status, BlkStatus.OK);
        // What the guest sees of the loaded range, to compare with QEMU's view below.
        const chunks: Uint8Array[] = [];
        for (let off = 0; off < 16 * MiB; off += 256 * 1024) chunks.push(await readOk(ini, off / 512, 256 * 1024));
        ini16 = Buffer.concat(chunks);
      });
      const c = qemuCheck(img);
      assert.equal(c.code, 0, c.out);
      const raw = qemuRaw(dir, img);
      assert.ok(raw.subarray(0, 16 * MiB).equals(Buffer.from(ini16!)), 'qemu-img convert reads what the initiator read');
      const model = new Uint8Array(raw.length);
      model.set(raw.subarray(0, 16 * MiB));
      for (const [s, len, seed] of writes) model.set(pattern(len, seed), s * 512);
      assert.equal(qemuCompare(dir, img, model).code, 0, 'content outside the loaded range: exactly the known writes');
    });
  }

  it('overlay over a qcow2 base: copy-on-write reads the base, the base stays unchanged, qemu-img compare matches', async () => {
    const base = join(dir, 'base.qcow2');
    const top = join(dir, 'overlay.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '64M');
    qemuIo(base, 'write -P 0x5a 0 8M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top);
    const baseSum = sha256(base);
    const model = new Uint8Array(64 * MiB);
    model.fill(0x5a, 0, 8 * MiB);
    // Partial clusters inside the base's data (copy-on-write), across its end, and past it.
    const writes: Array<[number, number, number]> = [
      [1, 512, 11],
      [130, 2048, 12],
      [16384 - 8, 8192, 13],
      [40000, 100 * 1024, 14],
    ];
    let guest: Uint8Array | undefined;
    await serve('OV', { filename: top }, async (ini, socket) => {
      const r = await ini.read(0, 64 * 1024);
      assert.ok(Buffer.from(r.data!).equals(Buffer.alloc(64 * 1024, 0x5a)), 'unallocated reads come from the base');
      for (const [s, len, seed] of writes) {
        assert.equal((await ini.write(s, pattern(len, seed))).status, BlkStatus.OK);
        model.set(pattern(len, seed), s * 512);
      }
      const back = await ini.read(0, 256 * 1024);
      assert.ok(Buffer.from(back.data!).equals(Buffer.from(model.subarray(0, 256 * 1024))), 'copy-on-write kept the base around the writes');
      // randrw verify over the part of the disk where the base has data.
      const l = await load(socket, ['-d', '16', '--rw', 'randrw', '--verify', '--range', '4m', '-t', '2']);
      assert.equal(l.errors + l.verifyErrors, 0, JSON.stringify(l));
      const chunks: Uint8Array[] = [];
      for (let off = 0; off < 12 * MiB; off += 256 * 1024) chunks.push(await readOk(ini, off / 512, 256 * 1024));
      guest = Buffer.concat(chunks);
    });
    model.set(guest!.subarray(0, 4 * MiB));
    assert.ok(Buffer.from(guest!).subarray(4 * MiB).equals(Buffer.from(model.subarray(4 * MiB, 12 * MiB))), 'beyond the loaded range: base and known writes');
    assert.equal(qemuCheck(top).code, 0, qemuCheck(top).out);
    assert.equal(qemuCheck(base).code, 0, qemuCheck(base).out);
    assert.equal(sha256(base), baseSum, 'the base is unchanged');
    const cmp = qemuCompare(dir, top, model);
    assert.equal(cmp.code, 0, cmp.out);
  });

  it('round trip: what vhostd wrote qemu-img converts; what qemu-io wrote vhostd reads', async () => {
    const img = join(dir, 'rt.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    qemuIo(img, 'write -P 0x33 1M 192k', 'write -P 0x44 5M 4k');
    await serve('RT', { filename: img }, async (ini) => {
      const r = await ini.read((1 * MiB) / 512, 192 * 1024);
      assert.ok(Buffer.from(r.data!).equals(Buffer.alloc(192 * 1024, 0x33)));
      const r2 = await ini.read((5 * MiB) / 512, 8192);
      const want = Buffer.alloc(8192);
      want.fill(0x44, 0, 4096);
      assert.ok(Buffer.from(r2.data!).equals(want));
      assert.equal((await ini.write((10 * MiB) / 512, pattern(64 * 1024, 21))).status, BlkStatus.OK);
    });
    const raw = qemuRaw(dir, img);
    assert.ok(raw.subarray(10 * MiB, 10 * MiB + 65536).equals(Buffer.from(pattern(64 * 1024, 21))));
    assert.ok(raw.subarray(1 * MiB, 1 * MiB + 192 * 1024).equals(Buffer.alloc(192 * 1024, 0x33)));
    const out = qemuIo(img, 'read -P 0x33 1M 192k');
    assert.match(out, /read 196608\/196608 bytes/);
  });

  it('thin allocation: 10 MiB written to a 1 GiB image take about 10 MiB; discard frees them again', async () => {
    const img = join(dir, 'thin.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '1G');
    const actual = () => (JSON.parse(qemuImg('info', '--output=json', img)) as { 'actual-size': number })['actual-size'];
    const empty = actual();
    const data = (m: ReturnType<typeof qemuMap>) => m.filter((e) => e.data).reduce((n, e) => n + e.length, 0);
    await serve('THIN', { filename: img }, async (ini) => {
      for (let off = 100 * MiB; off < 110 * MiB; off += 256 * 1024) {
        assert.equal((await ini.write(off / 512, pattern(256 * 1024, off / MiB))).status, BlkStatus.OK);
      }
      assert.equal((await ini.queues[0].submit(BlkReqType.FLUSH, 0, undefined, 0)).status, BlkStatus.OK);
      const grown = actual() - empty;
      assert.ok(grown >= 10 * MiB && grown < 11 * MiB, `actual-size grew by ${grown}`);
      assert.equal(data(qemuMap(img)), 10 * MiB);
      const discard = await ini.queues[0].submit(BlkReqType.DISCARD, 0, rangeSegment((100 * MiB) / 512, (10 * MiB) / 512), 0);
      assert.equal(discard.status, BlkStatus.OK);
      assert.equal((await ini.queues[0].submit(BlkReqType.FLUSH, 0, undefined, 0)).status, BlkStatus.OK);
      const z = await ini.read((100 * MiB) / 512, 64 * 1024);
      assert.ok(Buffer.from(z.data!).equals(Buffer.alloc(64 * 1024)), 'discarded range reads zeros');
    });
    assert.equal(qemuCheck(img).code, 0, qemuCheck(img).out);
    assert.equal(data(qemuMap(img)), 0, 'nothing mapped after the discard');
    const left = actual() - empty;
    assert.ok(left < 1 * MiB, `actual-size after discard: ${left} bytes above the empty image`);
  });

  it('bdev_qcow2_create_image, bdev_get_bdevs with the backing chain, save_config', async () => {
    const base = join(dir, 'cbase.raw');
    writeFileSync(base, Buffer.alloc(4 * MiB, 0x77));
    const mid = join(dir, 'cmid.qcow2');
    const top = join(dir, 'ctop.qcow2');
    assert.equal(await d.rpc('bdev_qcow2_create_image', { filename: mid, size: 8 * MiB, cluster_size: 4096, backing_file: 'cbase.raw', backing_format: 'raw' }), mid);
    assert.equal(await d.rpc('bdev_qcow2_create_image', { filename: top, size: 8 * MiB, backing_file: 'cmid.qcow2' }), top);
    await expectRpcError(d.rpc('bdev_qcow2_create_image', { filename: top, size: 8 * MiB }), -17, /File exists: .*ctop\.qcow2 already exists/);
    await expectRpcError(d.rpc('bdev_qcow2_create_image', { filename: 'rel.qcow2', size: 8 * MiB }), -22, /must be an absolute path/);
    await expectRpcError(d.rpc('bdev_qcow2_create_image', { filename: join(dir, 'x.qcow2'), size: 1000 }), -22, /multiple of 512/);
    await expectRpcError(d.rpc('bdev_qcow2_create_image', { filename: join(dir, 'y.qcow2'), size: MiB, backing_file: 'none.qcow2' }), -2, /backing file none\.qcow2 does not exist/);
    assert.equal(qemuCheck(top).code, 0);
    const info = JSON.parse(qemuImg('info', '--output=json', '--backing-chain', top)) as Array<Record<string, unknown>>;
    assert.deepEqual(info.map((i) => i.format), ['qcow2', 'qcow2', 'raw']);
    assert.equal(info[1]['cluster-size'], 4096);

    assert.equal(await d.rpc('bdev_qcow2_create', { name: 'CH', filename: top }), 'CH');
    try {
      const [b] = await d.rpc<Array<Record<string, unknown>>>('bdev_get_bdevs', { name: 'CH' });
      assert.equal(b.product_name, 'QCOW2 disk');
      assert.equal(b.block_size, 512);
      assert.equal(b.num_blocks, (8 * MiB) / 512);
      const q = (b.driver_specific as { qcow2: Record<string, unknown> }).qcow2;
      assert.equal(q.filename, top);
      assert.equal(q.readonly, false);
      assert.equal(q.cluster_size, 65536);
      assert.equal(q.virtual_size, 8 * MiB);
      assert.equal(q.allocated_bytes, statSync(top).blocks * 512);
      assert.deepEqual(q.backing_chain, [
        { filename: mid, format: 'qcow2', virtual_size: 8 * MiB, allocated_bytes: statSync(mid).blocks * 512 },
        { filename: base, format: 'raw', virtual_size: 4 * MiB, allocated_bytes: statSync(base).blocks * 512 },
      ]);
      const cfg = await d.rpc<Array<{ method: string; params: Record<string, unknown> }>>('framework_get_config', { name: 'bdev' });
      const saved = cfg.find((c) => c.method === 'bdev_qcow2_create');
      assert.deepEqual(saved?.params, { name: 'CH', filename: top, readonly: false, uuid: b.uuid });
      // The chain reads through: raw base below 4 MiB, zeros past its end.
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.CH', dev_name: 'CH' });
      const ini = await BlkInitiator.connect(d.socket('vhost.CH'), { queues: 1, queueSize: 64, maxIoBytes: 256 * 1024 });
      try {
        const r = await readOk(ini, (4 * MiB - 4096) / 512, 8192);
        assert.ok(Buffer.from(r).equals(Buffer.concat([Buffer.alloc(4096, 0x77), Buffer.alloc(4096)])));
        assert.equal((await ini.write((4 * MiB - 1024) / 512, pattern(2048, 31))).status, BlkStatus.OK);
      } finally {
        ini.close();
      }
      await d.deleteController('vhost.CH');
      // A writable image cannot be opened twice, nor be another bdev's backing file.
      await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'CH2', filename: top, readonly: true }), -16, /open for writing by qcow2 bdev CH/);
      assert.equal(await d.rpc('bdev_qcow2_create', { name: 'MIDRO', filename: mid, readonly: true }), 'MIDRO');
      assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'MIDRO' }), true);
    } finally {
      assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'CH' }), true);
    }
    assert.equal(qemuCheck(top).code, 0);
    const model = new Uint8Array(8 * MiB);
    model.fill(0x77, 0, 4 * MiB);
    model.set(pattern(2048, 31), 4 * MiB - 1024);
    assert.equal(qemuCompare(dir, top, model).code, 0);
  });

  it('RPC errors: missing file, corrupt header, backing loop, missing backing file, unsupported feature; the daemon keeps serving', async () => {
    await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'E1', filename: join(dir, 'nope.qcow2') }), -2, /No such file or directory: .*nope\.qcow2.*does not exist/);
    const bad = join(dir, 'bad.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', bad, '16M');
    const b = readFileSync(bad);
    b.writeUInt32BE(0, 56); // refcount_table_clusters 0
    writeFileSync(bad, b);
    await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'E2', filename: bad }), -5, /Input\/output error: bad\.qcow2: refcount table is empty/);
    const notQcow = join(dir, 'raw.img');
    writeFileSync(notQcow, Buffer.alloc(1 * MiB));
    await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'E3', filename: notQcow }), -22, /is not a qcow2 image/);
    // a -> b -> a
    const la = join(dir, 'loop-a.qcow2');
    const lb = join(dir, 'loop-b.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', lb, '16M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'loop-b.qcow2', '-F', 'qcow2', la);
    qemuImg('rebase', '-u', '-f', 'qcow2', '-b', 'loop-a.qcow2', '-F', 'qcow2', lb);
    await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'E4', filename: la }), -40, /backing chain loops: loop-a\.qcow2 -> loop-b\.qcow2 -> loop-a\.qcow2/);
    const orphan = join(dir, 'orphan.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', orphan, '16M');
    await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'E5', filename: orphan }), -2, /backing file gone\.qcow2 of orphan\.qcow2 does not exist/);
    const l2 = join(dir, 'extl2.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', l2, '16M');
    await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'E6', filename: l2 }), -95, /extended L2 entries/);
    await expectRpcError(d.rpc('bdev_qcow2_create', { name: 'E7' }), -32602, /spdk_json_decode_object failed/);
    await expectRpcError(d.rpc('bdev_qcow2_delete', { name: 'E1' }), -19, /bdev E1 does not exist/);
    const bdevs = await d.rpc<unknown[]>('bdev_get_bdevs');
    assert.ok(!bdevs.some((x) => /^E\d$/.test((x as { name: string }).name)), 'nothing half-created');
    assert.ok(await d.rpc('spdk_get_version'));
    assert.ok(statSync(la).size > 0);
  });
});

describe('qcow2 bdev: one reactor thread writes an image', { timeout: 120_000 }, () => {
  it('a controller on a second reactor fails its I/O with a log line while the first one serves the image, then takes over', async () => {
    const { dir, cleanup } = tempDir();
    const d = await VhostdProcess.start(['-m', '0x3', '-L', 'info']);
    try {
      const img = join(dir, 'shared.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
      await d.rpc('bdev_qcow2_create', { name: 'S', filename: img });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'a', dev_name: 'S', cpumask: '0x1' });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'b', dev_name: 'S', cpumask: '0x2' });
      const a = await BlkInitiator.connect(d.socket('a'), { queues: 1, queueSize: 64, maxIoBytes: 65536 });
      const b = await BlkInitiator.connect(d.socket('b'), { queues: 1, queueSize: 64, maxIoBytes: 65536 });
      try {
        assert.equal((await a.write(8, pattern(4096, 41))).status, BlkStatus.OK);
        assert.equal((await b.read(8, 4096)).status, BlkStatus.IOERR);
        await d.waitForLog(/shared\.qcow2 is open for writing on reactor 0: a writable qcow2 image is served by one reactor thread at a time/);
        a.close();
        await d.deleteController('a');
        // The first reactor's engine closed (metadata flushed): the second one opens the image.
        let r = await b.read(8, 4096);
        // Polled up to 20 s: the close and the reopen run on two reactors a loaded machine can delay.
        for (const until = Date.now() + 20_000; Date.now() < until && r.status !== BlkStatus.OK; ) {
          await new Promise((res) => setTimeout(res, 20));
          r = await b.read(8, 4096);
        }
        assert.equal(r.status, BlkStatus.OK);
        assert.ok(Buffer.from(r.data!).equals(Buffer.from(pattern(4096, 41))));
      } finally {
        b.close();
      }
      await d.deleteController('b');
      assert.equal(await d.rpc('bdev_qcow2_delete', { name: 'S' }), true);
      assert.equal(qemuCheck(img).code, 0);
    } finally {
      assert.equal(await d.stop(), 0);
      cleanup();
    }
  });
});
