// Live migration's back-end side against a real vhostd, driven the way QEMU 7.2 drives it
// (hw/virtio/vhost.c, vhost-user.c): LOG_ALL and LOG_SHMFD offered; SET_LOG_BASE answered with a
// message of its own code; SET_FEATURES + LOG_ALL and SET_VRING_ADDR + VHOST_VRING_F_LOG while
// the rings run; every page the device writes marked in the log; GET_VRING_BASE only after the
// ring drained (bounded); bad log messages refused with a log line while another controller serves.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostUserFrontend } from '../../src/initiator/frontend.js';
import { check, native } from '../../src/native/index.js';
import { VirtioFeature, bit } from '../../src/virtio/features.js';
import { ProtocolFeature, Req, VHOST_F_LOG_ALL, VHOST_VRING_F_LOG, encodeU64 } from '../../src/vhost-user/protocol.js';
import { mmapShared } from '../../src/native/index.js';
import { VhostdProcess } from '../lib/vhostd.js';

const MEM = 16 << 20;
const PAGES = MEM / 4096;

let d: VhostdProcess;

interface Log {
  fd: number;
  bytes: Uint8Array;
  size: number;
}

/** A log memfd as QEMU makes one: a bit per 4 KiB page of guest memory, rounded up to u64s. */
function makeLog(pages = PAGES, fileBytes?: number): Log {
  const size = Math.ceil(pages / 64) * 8;
  const fd = check('memfd_create', native.memfdCreate('test-vhost-log', fileBytes ?? size));
  const m = mmapShared(fd, Math.max(fileBytes ?? size, 8), 0);
  return { fd, bytes: new Uint8Array(m.buffer, 0, size), size };
}

function logBasePayload(size: number, offset = 0): Uint8Array {
  const p = new Uint8Array(16);
  const v = new DataView(p.buffer);
  v.setBigUint64(0, BigInt(size), true);
  v.setBigUint64(8, BigInt(offset), true);
  return p;
}

const isMarked = (log: Log, gpa: number) => (log.bytes[Math.floor(gpa / 4096) >> 3] & (1 << (Math.floor(gpa / 4096) & 7))) !== 0;
const markedCount = (log: Log) => log.bytes.reduce((n, b) => n + (b.toString(2).match(/1/g)?.length ?? 0), 0);

async function session(ctrlr: string): Promise<BlkInitiator> {
  const ini = await BlkInitiator.negotiate(d.socket(ctrlr), MEM, { logShmfd: true });
  await ini.setMemTable();
  await ini.startQueue(0, 16, 65536);
  return ini;
}

/** SET_LOG_BASE as QEMU sends it (no NEED_REPLY): resolves with the back-end's own reply. */
async function setLogBase(ini: BlkInitiator, log: Log, offset = 0): Promise<DataView> {
  return ini.fe.call(Req.SET_LOG_BASE, logBasePayload(log.size, offset), [log.fd]);
}

async function setLogAll(ini: BlkInitiator, on: boolean): Promise<void> {
  await ini.ack(Req.SET_FEATURES, encodeU64(on ? ini.features | bit(VHOST_F_LOG_ALL) : ini.features));
}

/** SET_VRING_ADDR of queue 0 again, with VHOST_VRING_F_LOG set or cleared (QEMU does it while running). */
async function setVringLogFlag(ini: BlkInitiator, on: boolean): Promise<void> {
  const ring = ini.queues[0].ring;
  const a = new Uint8Array(40);
  const v = new DataView(a.buffer);
  v.setUint32(0, 0, true);
  v.setUint32(4, on ? VHOST_VRING_F_LOG : 0, true);
  v.setBigUint64(8, BigInt(ini.mem.gpaToUva(ring.descGpa)), true);
  v.setBigUint64(16, BigInt(ini.mem.gpaToUva(ring.usedGpa)), true);
  v.setBigUint64(24, BigInt(ini.mem.gpaToUva(ring.availGpa)), true);
  v.setBigUint64(32, BigInt(ring.usedGpa), true);
  await ini.ack(Req.SET_VRING_ADDR, a);
}

async function controllers(): Promise<Array<{ ctrlr: string; dirty_logging: boolean; sessions: Array<{ dirty_logging: boolean }> }>> {
  return d.rpc('vhost_get_controllers');
}

async function assertHealthy(): Promise<void> {
  assert.ok(d.alive, 'vhostd died');
  const ini = await BlkInitiator.connect(d.socket('healthy'));
  try {
    const data = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
    assert.equal((await ini.write(8, data)).status, BlkStatus.OK);
    assert.deepEqual((await ini.read(8, 4096)).data, data);
  } finally {
    ini.close();
  }
}

describe('live migration: dirty logging and drain (vhost-user, as QEMU 7.2 drives it)', () => {
  before(async () => {
    d = await VhostdProcess.start(['-L', 'info']);
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 8192, block_size: 512 });
    await d.rpc('bdev_malloc_create', { name: 'M1', num_blocks: 8192, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'src', dev_name: 'M0' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'healthy', dev_name: 'M1' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  test('blk and scsi controllers offer VHOST_F_LOG_ALL and LOG_SHMFD (QEMU blocks migration without them)', async () => {
    await d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi' });
    for (const ctrlr of ['src', 'scsi']) {
      const fe = VhostUserFrontend.connect(d.socket(ctrlr));
      try {
        const features = (await fe.call(Req.GET_FEATURES)).getBigUint64(0, true);
        const proto = (await fe.call(Req.GET_PROTOCOL_FEATURES)).getBigUint64(0, true);
        assert.ok(features & bit(VHOST_F_LOG_ALL), `${ctrlr}: LOG_ALL`);
        assert.ok(proto & bit(ProtocolFeature.LOG_SHMFD), `${ctrlr}: LOG_SHMFD`);
      } finally {
        fe.close();
      }
    }
    await d.rpc('vhost_delete_controller', { ctrlr: 'scsi' });
  });

  test('the device marks the pages it writes while LOG_ALL is on, and only then; the log can be replaced', async () => {
    const ini = await session('src');
    const log = makeLog();
    try {
      assert.ok(ini.protocolFeatures & bit(ProtocolFeature.LOG_SHMFD));
      // Before logging: reads mark nothing (no log yet, then a log without LOG_ALL).
      await ini.read(0, 8192);
      const reply = await setLogBase(ini, log);
      assert.ok(reply.byteLength >= 0, 'SET_LOG_BASE answered with a message of its own code');
      await ini.read(0, 8192);
      assert.equal(markedCount(log), 0, 'pages marked without LOG_ALL');
      assert.equal((await controllers()).find((c) => c.ctrlr === 'src')?.dirty_logging, false);

      // QEMU's order at migration start: log base (done), features + LOG_ALL, ring address + F_LOG.
      await setLogAll(ini, true);
      await setVringLogFlag(ini, true);
      const c = (await controllers()).find((x) => x.ctrlr === 'src');
      assert.equal(c?.dirty_logging, true);
      assert.deepEqual(c?.sessions.map((s) => s.dirty_logging), [true]);
      await d.waitForLog(/dirty logging started/);

      // A read: its data pages (8 KiB: two pages), its status byte, and the used ring.
      const r = await ini.read(16, 8192);
      assert.equal(r.status, BlkStatus.OK);
      assert.ok(isMarked(log, r.dataGpa) && isMarked(log, r.dataGpa + 8191), 'read data pages');
      assert.ok(isMarked(log, r.statusGpa), 'status byte page');
      assert.ok(isMarked(log, ini.queues[0].ring.usedGpa), 'used ring page');
      // A write's data buffer is only read by the device: a fresh log shows it unmarked.
      log.bytes.fill(0);
      const w = await ini.write(32, new Uint8Array(8192).fill(7));
      assert.ok(!isMarked(log, w.dataGpa) || w.dataGpa === r.statusGpa, 'a device-readable buffer was marked');
      assert.ok(isMarked(log, w.statusGpa));

      // Memory grew: a new, larger log replaces the old one mid-migration.
      const bigger = makeLog(PAGES * 2);
      await setLogBase(ini, bigger);
      log.bytes.fill(0);
      const r2 = await ini.read(48, 4096);
      assert.ok(isMarked(bigger, r2.dataGpa), 'the new log is marked');
      assert.equal(markedCount(log), 0, 'the replaced log is still written');
      await d.waitForLog(/dirty logging switched to a new log/);

      // Migration cancelled: LOG_ALL off, then nothing is marked.
      await setLogAll(ini, false);
      await setVringLogFlag(ini, false);
      bigger.bytes.fill(0);
      await ini.read(64, 4096);
      assert.equal(markedCount(bigger), 0);
      assert.equal((await controllers()).find((x) => x.ctrlr === 'src')?.dirty_logging, false);
      native.close(bigger.fd);
    } finally {
      ini.close();
      native.close(log.fd);
    }
  });

  test('GET_VRING_BASE answers once the ring drained, and within a bound when a request never completes', async () => {
    await d.rpc('bdev_malloc_create', { name: 'M3', num_blocks: 8192, block_size: 512 });
    await d.rpc('bdev_delay_create', { base_bdev_name: 'M3', name: 'slow', avg_read_latency: 300_000, p99_read_latency: 300_000, avg_write_latency: 300_000, p99_write_latency: 300_000 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'slowc', dev_name: 'slow' });
    const ini = await session('slowc');
    const log = makeLog();
    try {
      await setLogBase(ini, log);
      await setLogAll(ini, true);
      const pending = ini.read(0, 4096);
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      const state = new Uint8Array(8);
      const base = await ini.fe.call(Req.GET_VRING_BASE, state, [], 10_000);
      const ms = Date.now() - t0;
      assert.ok(ms >= 150, `replied after ${ms} ms, before the 300 ms request completed`);
      assert.equal(base.getUint32(4, true), 1, 'vring base counts the drained request');
      const r = await pending;
      assert.equal(r.status, BlkStatus.OK, 'the request completed before the reply');
      assert.ok(isMarked(log, r.dataGpa), 'and was logged');
      await d.waitForLog(/drained 1 in-flight requests/);
    } finally {
      ini.close();
      native.close(log.fd);
    }
    // A request that takes far longer than the bound: the reply comes after ~3 s, not 10.
    await d.rpc('bdev_delay_update_latency', { delay_bdev_name: 'slow', latency_type: 'avg_read', latency_us: 10_000_000 });
    await d.rpc('bdev_delay_update_latency', { delay_bdev_name: 'slow', latency_type: 'p99_read', latency_us: 10_000_000 });
    const ini2 = await session('slowc');
    try {
      void ini2.read(0, 4096).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      await ini2.fe.call(Req.GET_VRING_BASE, new Uint8Array(8), [], 9000);
      const ms = Date.now() - t0;
      assert.ok(ms >= 2500 && ms < 6000, `GET_VRING_BASE took ${ms} ms`);
      await d.waitForLog(/requests still in flight after 3000 ms; stopped without them/);
    } finally {
      ini2.close();
    }
    await assertHealthy();
  });

  describe('bad log input: a log line, an error or a dropped connection; the daemon and others serve on', () => {
    before(async () => {
      await d.rpc('bdev_malloc_create', { name: 'M2', num_blocks: 8192, block_size: 512 });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'victim', dev_name: 'M2' });
    });

    /** Sends a bad SET_LOG_BASE; the reply QEMU would wait for never comes and the connection closes. */
    async function refused(payload: Uint8Array, fds: number[], expect: RegExp, opts: { negotiate?: boolean } = {}): Promise<void> {
      const ini = opts.negotiate === false ? undefined : await session('victim');
      const fe = ini?.fe ?? VhostUserFrontend.connect(d.socket('victim'));
      try {
        fe.send(Req.SET_LOG_BASE, payload, fds);
        if (ini) assert.ok(await fe.waitClosed(5000), 'the connection stays open without the reply QEMU waits for');
        await d.waitForLog(expect);
      } finally {
        if (ini) ini.close();
        else fe.close();
      }
      await assertHealthy();
    }

    test('no fd', async () => {
      await refused(logBasePayload(512), [], /SET_LOG_BASE without a file descriptor/);
    });
    test('mmap_size 0', async () => {
      const log = makeLog();
      await refused(logBasePayload(0), [log.fd], /SET_LOG_BASE: log of 0 bytes/);
      native.close(log.fd);
    });
    test('larger than the file, and an offset past its end', async () => {
      const log = makeLog();
      await refused(logBasePayload(log.size * 4), [log.fd], /is beyond the end of its \d+-byte file/);
      await refused(logBasePayload(64, log.size * 2), [log.fd], /is beyond the end of its \d+-byte file/);
      native.close(log.fd);
    });
    test('a payload of the wrong size', async () => {
      const log = makeLog();
      await refused(new Uint8Array(8), [log.fd], /SET_LOG_BASE: payload is 8 bytes, expected 16/);
      native.close(log.fd);
    });
    test('before LOG_SHMFD was negotiated', async () => {
      const log = makeLog();
      await refused(logBasePayload(log.size), [log.fd], /SET_LOG_BASE before LOG_SHMFD was negotiated/, { negotiate: false });
      native.close(log.fd);
    });

    test('a log too small for a page the device writes: the device stops with the reason', async () => {
      const ini = await session('victim');
      // Covers the first 64 pages only; the ring and buffers lie beyond.
      const log = makeLog(64);
      try {
        await setLogBase(ini, log);
        await setLogAll(ini, true);
        const r = ini.read(0, 4096);
        await d.waitForLog(/device stopped.*the dirty log \(64 pages\) does not cover gpa/);
        void r.catch(() => undefined);
      } finally {
        ini.close();
        native.close(log.fd);
      }
      await assertHealthy();
    });
  });

  test('LOG_ALL is offered with packed rings too', async () => {
    await d.rpc('bdev_null_create', { name: 'N9', num_blocks: 64, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'packed', dev_name: 'N9', packed_ring: true });
    const ini = await BlkInitiator.negotiate(d.socket('packed'), MEM, { logShmfd: true, packed: true });
    try {
      assert.ok(ini.has(VirtioFeature.RING_PACKED));
      assert.ok(ini.offeredFeatures & bit(VHOST_F_LOG_ALL));
    } finally {
      ini.close();
    }
  });
});

describe('one bdev behind several controllers (SPDK opens bdevs for writing without claiming them)', () => {
  let v: VhostdProcess;
  before(async () => {
    v = await VhostdProcess.start([]);
  });
  after(async () => {
    assert.equal(await v.stop(), 0);
  });

  test('two blk controllers and two scsi targets share a bdev; a vbdev claim stays exclusive; deleting it detaches the targets', async () => {
    await v.rpc('bdev_malloc_create', { name: 'S0', num_blocks: 8192, block_size: 512 });
    await v.rpc('vhost_create_blk_controller', { ctrlr: 'a', dev_name: 'S0' });
    await v.rpc('vhost_create_blk_controller', { ctrlr: 'b', dev_name: 'S0' });
    await v.rpc('vhost_create_scsi_controller', { ctrlr: 's1' });
    await v.rpc('vhost_create_scsi_controller', { ctrlr: 's2' });
    await v.rpc('vhost_scsi_controller_add_target', { ctrlr: 's1', scsi_target_num: 0, bdev_name: 'S0' });
    await v.rpc('vhost_scsi_controller_add_target', { ctrlr: 's2', scsi_target_num: 3, bdev_name: 'S0' });
    const [info] = await v.rpc<Array<{ claimed: boolean }>>('bdev_get_bdevs', { name: 'S0' });
    assert.equal(info.claimed, false);
    // What one controller writes, the other reads.
    const a = await BlkInitiator.connect(v.socket('a'));
    const b = await BlkInitiator.connect(v.socket('b'));
    try {
      const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff);
      assert.equal((await a.write(100, data)).status, BlkStatus.OK);
      assert.deepEqual((await b.read(100, 4096)).data, data);
    } finally {
      a.close();
      b.close();
    }
    // A vbdev cannot claim a bdev controllers write to, and the bdev cannot go while blk controllers use it.
    await assert.rejects(
      v.rpc('bdev_delay_create', { base_bdev_name: 'S0', name: 'D', avg_read_latency: 1, p99_read_latency: 1, avg_write_latency: 1, p99_write_latency: 1 }),
      /Operation not permitted/,
    );
    await assert.rejects(v.rpc('bdev_malloc_delete', { name: 'S0' }), (e: { code: number; message: string }) => e.code === -16);
    await v.deleteController('a');
    await v.deleteController('b');
    // Only SCSI targets left: deleting the bdev hot-detaches it from both controllers.
    assert.equal(await v.rpc('bdev_malloc_delete', { name: 'S0' }), true);
    const ctrls = await v.rpc<Array<{ ctrlr: string; backend_specific: { scsi?: unknown[] } }>>('vhost_get_controllers');
    for (const c of ctrls) assert.deepEqual(c.backend_specific.scsi, [], c.ctrlr);
  });
});
