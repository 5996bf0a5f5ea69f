// A backend that answers NOMEM (its queue is full) under a deep guest queue: every request still
// completes OK, with the right data, on virtio-blk and on virtio-scsi. As in SPDK's bdev layer, a
// request the bdev refused with NOMEM waits in its channel's NomemQueue (src/bdev/nomem-queue.ts)
// and is submitted again when another request of the channel completes, or on the next poll; the
// guest never sees an error for a full queue.
//
// Two real sources of NOMEM completions:
// * a uring bdev with one io_uring entry and a wait ring of one I/O per channel
//   (VHOSTD_URING_DEPTH=1, VHOSTD_URING_BACKLOG=1): the third request in flight is refused;
// * the error bdev's `nomem` injection (bdev_error_inject_error), over malloc bdevs: the first N
//   reads and writes complete NOMEM at once, inside submit, with nothing else in flight.
// Both run with the load generator's rescue kicks off: a request left waiting would hang the
// run instead of being rescued by a guest kick.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { VirtioScsiResponse } from '../../src/devices/scsi/scsi-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { DriverRing } from '../../src/initiator/driver-ring.js';
import { LoadGenerator } from '../../src/initiator/load.js';
import { check, native } from '../../src/native/index.js';
import { VhostdProcess } from '../lib/vhostd.js';

const MiB = 1 << 20;
const BS = 512;
/** Requests a SCSI wave has in flight at once (each a 3-descriptor chain). */
const SCSI_DEPTH = 128;
const SCSI_RING = 512;
/** Blocks per SCSI request. */
const SCSI_BLOCKS = 8;

/** Block contents that encode the LBA and a generation. */
function blockPattern(lba: number, gen: number, out: Uint8Array, off: number): void {
  for (let i = 0; i < BS; i++) out[off + i] = (lba * 7 + gen * 131 + i * 13 + (i >> 7)) & 0xff;
}

/** A virtio-scsi front-end with one request queue that keeps SCSI_DEPTH commands in flight. */
class DeepScsiClient {
  private constructor(
    readonly ini: BlkInitiator,
    readonly ring: DriverRing,
    readonly kick: number,
  ) {}

  static async connect(sock: string): Promise<DeepScsiClient> {
    const ini = await BlkInitiator.negotiate(sock, 32 << 20);
    await ini.setMemTable();
    const mem = ini.mem;
    let req: DriverRing | undefined;
    let reqKick = -1;
    // control, event, request queue
    for (let q = 0; q < 3; q++) {
      const size = q === 2 ? SCSI_RING : 16;
      const ring = new DriverRing(mem, size);
      const kick = check('eventfd', native.eventfd(0));
      const call = check('eventfd', native.eventfd(0));
      await ini.setupVring(q, size, { desc: mem.gpaToUva(ring.descGpa), avail: mem.gpaToUva(ring.availGpa), used: mem.gpaToUva(ring.usedGpa) }, kick, call);
      if (q === 2) {
        req = ring;
        reqKick = kick;
      }
    }
    return new DeepScsiClient(ini, req as DriverRing, reqKick);
  }

  /**
   * Runs `count` READ(10)/WRITE(10) commands of SCSI_BLOCKS blocks each, all submitted before the
   * first kick; returns per command the virtio response, SCSI status, and the data read.
   */
  async wave(write: boolean, lbas: number[], gen: number): Promise<Array<{ response: number; status: number; data: Uint8Array | undefined }>> {
    const mem = this.ini.mem;
    const len = SCSI_BLOCKS * BS;
    const reqs = lbas.map((lba) => {
      const cmd = mem.alloc(51, 16);
      const c = mem.u8.subarray(mem.off(cmd), mem.off(cmd) + 51);
      c.fill(0);
      c[0] = 1; // LUN address: target 0, LUN 0
      c[2] = 0x40;
      new DataView(c.buffer, c.byteOffset).setUint32(8, lba + 1, true); // tag
      const cdb = c.subarray(19);
      cdb[0] = write ? 0x2a : 0x28;
      new DataView(cdb.buffer, cdb.byteOffset).setUint32(2, lba, false);
      new DataView(cdb.buffer, cdb.byteOffset).setUint16(7, SCSI_BLOCKS, false);
      const resp = mem.alloc(108, 16);
      mem.u8.fill(0xff, mem.off(resp), mem.off(resp) + 108);
      const data = mem.alloc(len, 4096);
      if (write) for (let b = 0; b < SCSI_BLOCKS; b++) blockPattern(lba + b, gen, mem.u8, mem.off(data) + b * BS);
      else mem.u8.fill(0, mem.off(data), mem.off(data) + len);
      const bufs = write
        ? [
            { gpa: cmd, len: 51, write: false },
            { gpa: data, len, write: false },
            { gpa: resp, len: 108, write: true },
          ]
        : [
            { gpa: cmd, len: 51, write: false },
            { gpa: resp, len: 108, write: true },
            { gpa: data, len, write: true },
          ];
      const head = this.ring.addChain(bufs);
      assert.ok(head >= 0, 'ring has room for the wave');
      return { head, resp, data };
    });
    this.ring.publish();
    native.eventfdWrite(this.kick);
    const done = new Set<number>();
    const used: Array<{ id: number; len: number }> = [];
    const t0 = Date.now();
    while (done.size < reqs.length) {
      if (Date.now() - t0 > 20_000) throw new Error(`only ${done.size} of ${reqs.length} SCSI commands completed`);
      used.length = 0;
      this.ring.reapUsed(used);
      for (const u of used) done.add(u.id);
      if (used.length === 0) await new Promise((r) => setTimeout(r, 2));
    }
    return reqs.map((r) => {
      const o = mem.off(r.resp);
      return {
        response: mem.u8[o + 11],
        status: mem.u8[o + 10],
        data: write ? undefined : mem.u8.slice(mem.off(r.data), mem.off(r.data) + len),
      };
    });
  }

  close(): void {
    this.ini.close();
  }
}

/** Writes then reads back SCSI_DEPTH commands at once, three rounds; asserts GOOD and the data. */
async function scsiDeepQueue(d: VhostdProcess, ctrlr: string): Promise<void> {
  const c = await DeepScsiClient.connect(d.socket(ctrlr));
  try {
    for (let gen = 1; gen <= 3; gen++) {
      const lbas = Array.from({ length: SCSI_DEPTH }, (_, i) => ((i * 37 + gen * 11) % SCSI_DEPTH) * SCSI_BLOCKS);
      const w = await c.wave(true, lbas, gen);
      w.forEach((r, i) => {
        assert.equal(r.response, VirtioScsiResponse.OK, `write ${i} (gen ${gen}): response`);
        assert.equal(r.status, 0, `write ${i} (gen ${gen}): SCSI status`);
      });
      const rd = await c.wave(false, lbas, gen);
      const expect = new Uint8Array(SCSI_BLOCKS * BS);
      rd.forEach((r, i) => {
        assert.equal(r.response, VirtioScsiResponse.OK, `read ${i} (gen ${gen}): response`);
        assert.equal(r.status, 0, `read ${i} (gen ${gen}): SCSI status`);
        for (let b = 0; b < SCSI_BLOCKS; b++) blockPattern(lbas[i] + b, gen, expect, b * BS);
        assert.ok(Buffer.from(r.data as Uint8Array).equals(Buffer.from(expect)), `read ${i} (gen ${gen}, lba ${lbas[i]}): data`);
      });
    }
  } finally {
    c.close();
  }
}

/** Random reads and writes at queue depth 64 on two queues, verified; then a verified read pass. */
async function blkDeepQueue(d: VhostdProcess, ctrlr: string): Promise<void> {
  const gen = await LoadGenerator.connect({ socketPath: d.socket(ctrlr), queues: 2, iodepth: 64, rangeBytes: 2 * MiB, rescueMs: 0 });
  try {
    const first = await gen.run({ rw: 'randrw', verify: true, stopOnError: false, requests: 20_000 });
    assert.equal(first.errors, 0, `blk requests completed with an error status: ${first.errors} (first: ${first.firstError})`);
    assert.equal(first.verifyErrors, 0, first.firstError);
    assert.ok(first.reads > 5000 && first.writes > 5000, `reads ${first.reads}, writes ${first.writes}`);
    const second = await gen.run({ rw: 'randread', verify: true, stopOnError: false, requests: 5000 });
    assert.equal(second.errors, 0, `blk reads completed with an error status: ${second.errors} (first: ${second.firstError})`);
    assert.equal(second.verifyErrors, 0, second.firstError);
  } finally {
    gen.close();
  }
}

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

describe('NOMEM from a uring bdev with a tiny queue (VHOSTD_URING_DEPTH=1, VHOSTD_URING_BACKLOG=1)', { timeout: 180_000 }, () => {
  let d: VhostdProcess;
  let dir: string;
  let skip: string | undefined;

  before(async () => {
    // Files on tmpfs/ramfs are read and written inline, never queued: use a disk-backed directory.
    const base = [tmpdir(), '/var/tmp'].find((p) => ![TMPFS_MAGIC, RAMFS_MAGIC].includes(Number(statfsSync(p).type)));
    if (base === undefined) {
      skip = 'no disk-backed temporary directory';
      return;
    }
    dir = mkdtempSync(join(base, 'vhostd-nomem-it-'));
    for (const f of ['blk.img', 'scsi.img']) writeFileSync(join(dir, f), Buffer.alloc(4 * MiB));
    d = await VhostdProcess.start(['-m', '0x1', '-L', 'info'], { env: { VHOSTD_URING_DEPTH: '1', VHOSTD_URING_BACKLOG: '1' } });
    await d.rpc('bdev_uring_create', { filename: join(dir, 'blk.img'), name: 'U0' });
    await d.rpc('bdev_uring_create', { filename: join(dir, 'scsi.img'), name: 'U1' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'blk.u', dev_name: 'U0' });
    await d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi.u' });
    await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi.u', scsi_target_num: 0, bdev_name: 'U1' });
  });
  after(async () => {
    if (d) assert.equal(await d.stop(), 0);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Whether the channel really queued on an io_uring (not the synchronous fallback). */
  function checkEngine(t: { skip(msg: string): void }): boolean {
    if (skip) {
      t.skip(skip);
      return false;
    }
    if (d.logsMatching(/falling back to synchronous|io_uring disabled/).length > 0) {
      t.skip('io_uring is not available: the synchronous fallback never queues, so never refuses');
      return false;
    }
    return true;
  }

  test('virtio-blk: every request completes OK with the data written', async (t) => {
    await blkDeepQueue(d, 'blk.u');
    if (!checkEngine(t)) return;
    assert.ok(d.logsMatching(/"bdev":"U0".*refusing with NOMEM/).length > 0, 'the uring channel refused requests with NOMEM');
  });

  test('virtio-scsi: every command completes GOOD with the data written', async (t) => {
    await scsiDeepQueue(d, 'scsi.u');
    if (!checkEngine(t)) return;
    assert.ok(d.logsMatching(/"bdev":"U1".*refusing with NOMEM/).length > 0, 'the uring channel refused requests with NOMEM');
  });
});

describe('NOMEM injected by the error bdev (bdev_error_inject_error error_type nomem)', { timeout: 180_000 }, () => {
  let d: VhostdProcess;

  before(async () => {
    d = await VhostdProcess.start(['-m', '0x1']);
    for (const m of ['M0', 'M1']) {
      await d.rpc('bdev_malloc_create', { name: m, num_blocks: (4 * MiB) / BS, block_size: BS });
      await d.rpc('bdev_error_create', { base_name: m });
    }
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'blk.e', dev_name: 'EE_M0' });
    await d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi.e' });
    await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi.e', scsi_target_num: 0, bdev_name: 'EE_M1' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  async function inject(name: string, num: number): Promise<void> {
    for (const io_type of ['read', 'write']) await d.rpc('bdev_error_inject_error', { name, io_type, error_type: 'nomem', num });
  }

  /** bdev_get_iostat of one bdev: completed reads and writes, and the failed I/O it saw. */
  async function iostat(name: string): Promise<{ ops: number; failed: number }> {
    const r = await d.rpc<{ bdevs: Array<{ num_read_ops: number; num_write_ops: number; io_error: { failed?: number } }> }>('bdev_get_iostat', { name });
    assert.equal(r.bdevs.length, 1);
    const b = r.bdevs[0];
    return { ops: b.num_read_ops + b.num_write_ops, failed: b.io_error.failed ?? 0 };
  }

  test('virtio-blk: every request completes OK with the data written', async () => {
    await inject('EE_M0', 500);
    await blkDeepQueue(d, 'blk.e');
    const st = await iostat('EE_M0');
    assert.ok(st.ops >= 25_000, `${st.ops} reads and writes completed`);
    assert.equal(st.failed, 0);
  });

  test('virtio-scsi: every command completes GOOD with the data written', async () => {
    await inject('EE_M1', 200);
    await scsiDeepQueue(d, 'scsi.e');
    const st = await iostat('EE_M1');
    assert.equal(st.ops, 2 * 3 * SCSI_DEPTH);
    assert.equal(st.failed, 0);
  });
});
