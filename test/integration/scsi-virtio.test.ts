// virtio-scsi against hostile or odd requests from a userspace front-end: absent targets and LUNs,
// malformed CDBs, transfer lengths that disagree with the buffers, TMFs for unknown tasks, and a
// request without room for its response. Answers come back as virtio-scsi response codes and
// SCSI sense; the device stops only when there is nowhere to answer; the daemon keeps serving.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { VirtioScsiResponse } from '../../src/devices/scsi/scsi-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { DriverRing } from '../../src/initiator/driver-ring.js';
import { check, native } from '../../src/native/index.js';
import { join } from 'node:path';
import type { RpcError } from '../../src/rpc/client.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { pattern, qemuCheck, qemuImg, tempDir } from '../unit/qcow2/qemu.js';

let d: VhostdProcess;

/** A raw virtio-scsi front-end: control, event and one request queue over the initiator's memory. */
class ScsiClient {
  readonly rings: DriverRing[] = [];
  readonly kicks: number[] = [];
  private constructor(readonly ini: BlkInitiator) {}

  static async connect(sock: string): Promise<ScsiClient> {
    const ini = await BlkInitiator.negotiate(sock);
    await ini.setMemTable();
    const c = new ScsiClient(ini);
    for (let q = 0; q < 3; q++) {
      const ring = new DriverRing(ini.mem, 16);
      const kick = check('eventfd', native.eventfd(0));
      const call = check('eventfd', native.eventfd(0));
      const mem = ini.mem;
      await ini.setupVring(q, 16, { desc: mem.gpaToUva(ring.descGpa), avail: mem.gpaToUva(ring.availGpa), used: mem.gpaToUva(ring.usedGpa) }, kick, call);
      c.rings.push(ring);
      c.kicks.push(kick);
    }
    return c;
  }

  /** Submits out/in buffers on queue q and waits for the used entry. */
  async request(q: number, out: Uint8Array[], inLens: number[], timeoutMs = 3000): Promise<{ len: number; ins: Uint8Array[] }> {
    const mem = this.ini.mem;
    const bufs = out.map((b) => {
      const gpa = mem.alloc(Math.max(b.length, 1), 16);
      mem.u8.set(b, mem.off(gpa));
      return { gpa, len: b.length, write: false };
    });
    const ins = inLens.map((len) => ({ gpa: mem.alloc(Math.max(len, 1), 16), len, write: true }));
    const ring = this.rings[q];
    const head = ring.addChain([...bufs, ...ins]);
    ring.publish();
    native.eventfdWrite(this.kicks[q]);
    const t0 = Date.now();
    const done: Array<{ id: number; len: number }> = [];
    while (Date.now() - t0 < timeoutMs) {
      ring.reapUsed(done);
      const hit = done.find((e) => e.id === head);
      if (hit) return { len: hit.len, ins: ins.map((b) => mem.u8.slice(mem.off(b.gpa), mem.off(b.gpa) + b.len)) };
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error('no completion');
  }

  close(): void {
    this.ini.close();
  }
}

function cmdReq(target: number, cdb: number[], lun = 0, tag = 1): Uint8Array {
  const b = new Uint8Array(51);
  b[0] = 1;
  b[1] = target;
  b[2] = 0x40 | (lun >> 8);
  b[3] = lun & 0xff;
  b[8] = tag;
  b.set(cdb, 19);
  return b;
}

const resp = (r: { ins: Uint8Array[] }) => {
  const v = new DataView(r.ins[0].buffer, r.ins[0].byteOffset);
  return { senseLen: v.getUint32(0, true), residual: v.getUint32(4, true), status: r.ins[0][10], response: r.ins[0][11], senseKey: r.ins[0][12 + 2] & 0xf, asc: r.ins[0][12 + 12] };
};

describe('virtio-scsi request handling', () => {
  before(async () => {
    d = await VhostdProcess.start();
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512 });
    await d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi' });
    await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi', scsi_target_num: 0, bdev_name: 'M0' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  test('commands to present, absent targets and absent LUNs', async () => {
    const c = await ScsiClient.connect(d.socket('scsi'));
    try {
      const inq = resp(await c.request(2, [cmdReq(0, [0x12, 0, 0, 0, 96, 0])], [108, 96]));
      assert.equal(inq.response, VirtioScsiResponse.OK);
      assert.equal(inq.status, 0);
      assert.equal(resp(await c.request(2, [cmdReq(5, [0x00])], [108])).response, VirtioScsiResponse.BAD_TARGET);
      assert.equal(resp(await c.request(2, [cmdReq(200, [0x00])], [108])).response, VirtioScsiResponse.BAD_TARGET);
      const badLun = resp(await c.request(2, [cmdReq(0, [0x00], 3)], [108]));
      assert.equal(badLun.status, 2, 'CHECK CONDITION');
      assert.equal(badLun.asc, 0x25, 'LOGICAL UNIT NOT SUPPORTED');
    } finally {
      c.close();
    }
  });

  test('malformed CDBs and transfer lengths that disagree with the buffers', async () => {
    const c = await ScsiClient.connect(d.socket('scsi'));
    try {
      const badOp = resp(await c.request(2, [cmdReq(0, [0xff])], [108]));
      assert.equal(badOp.status, 2);
      assert.equal(badOp.senseKey, 5, 'ILLEGAL REQUEST');
      assert.equal(badOp.asc, 0x20, 'INVALID COMMAND OPERATION CODE');
      // READ(10) of 8 blocks beyond the end of the disk.
      const oob = resp(await c.request(2, [cmdReq(0, [0x28, 0, 0, 0, 0x08, 0, 0, 0, 8, 0])], [108, 4096]));
      assert.equal(oob.asc, 0x21, 'LBA OUT OF RANGE');
      // READ(10) of 8 blocks into a 1-block buffer.
      const short = resp(await c.request(2, [cmdReq(0, [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])], [108, 512]));
      assert.equal(short.status, 2, 'a buffer smaller than the transfer is refused');
      // READ(10) of 1 block into an 8-block buffer: done, with the rest reported as residual.
      const long = resp(await c.request(2, [cmdReq(0, [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])], [108, 4096]));
      assert.equal(long.status, 0);
      assert.equal(long.residual, 4096 - 512);
      // A header shorter than virtio_scsi_cmd_req.
      assert.equal(resp(await c.request(2, [new Uint8Array(10)], [108])).response, VirtioScsiResponse.FAILURE);
    } finally {
      c.close();
    }
  });

  test('task management for unknown tasks and absent targets; AN queries', async () => {
    const c = await ScsiClient.connect(d.socket('scsi'));
    try {
      const tmf = (subtype: number, target: number, tag: number) => {
        const b = new Uint8Array(24);
        const v = new DataView(b.buffer);
        v.setUint32(0, 0, true);
        v.setUint32(4, subtype, true);
        b[8] = 1;
        b[9] = target;
        v.setUint32(16, tag, true);
        return b;
      };
      const abortUnknown = await c.request(0, [tmf(0, 0, 999)], [1]);
      assert.equal(abortUnknown.ins[0][0], VirtioScsiResponse.OK, 'ABORT TASK of an unknown tag completes');
      const lunReset = await c.request(0, [tmf(5, 0, 0)], [1]);
      assert.equal(lunReset.ins[0][0], VirtioScsiResponse.OK);
      const absent = await c.request(0, [tmf(5, 6, 0)], [1]);
      assert.equal(absent.ins[0][0], VirtioScsiResponse.BAD_TARGET);
      const an = new Uint8Array(16);
      an[0] = 1;
      const anq = await c.request(0, [an], [8]);
      assert.equal(anq.ins[0][4], VirtioScsiResponse.OK);
    } finally {
      c.close();
    }
  });

  test('a request with no room for its response stops the device; the daemon serves on', async () => {
    const c = await ScsiClient.connect(d.socket('scsi'));
    try {
      await assert.rejects(c.request(2, [cmdReq(0, [0x00])], [16], 500), /no completion/);
      await d.waitForLog(/device stopped/);
    } finally {
      c.close();
    }
    const c2 = await ScsiClient.connect(d.socket('scsi'));
    try {
      assert.equal(resp(await c2.request(2, [cmdReq(0, [0x00])], [108])).status, 0, 'TEST UNIT READY on a fresh session');
    } finally {
      c2.close();
    }
  });
});

describe('a writable qcow2 image as a SCSI target on a two-core vhostd', () => {
  // One reactor thread serves a writable image. A session whose queues are spread over both
  // reactors would open it on both, and the guest's commands on one of them would fail.
  test('hot-attach to a running spread session is refused (EBUSY); attached before the session, its queues share one core and I/O works', { timeout: 60_000 }, async () => {
    const { dir, cleanup } = tempDir();
    const v = await VhostdProcess.start(['-m', '0x3']);
    try {
      const img = join(dir, 'lun.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
      await v.rpc('bdev_qcow2_create', { name: 'Q', filename: img });
      await v.rpc('vhost_create_scsi_controller', { ctrlr: 'spread' });
      const add = () => v.rpc('vhost_scsi_controller_add_target', { ctrlr: 'spread', scsi_target_num: 0, bdev_name: 'Q' });
      const c = await ScsiClient.connect(v.socket('spread'));
      try {
        // As SPDK's vhost RPCs answer an errno: INVALID_PARAMS with its text.
        await assert.rejects(add(), (e: RpcError) => e.code === -32602 && e.message === 'Device or resource busy');
        const line = await v.waitForLog(/bdev Q is served by one reactor thread .*queues on cores (0, 1|1, 0)/);
        // One JSON object with one "msg" (a second key of that name hid the first from log tools).
        assert.equal(line.match(/"msg":/g)?.length, 1, line);
        const entry = JSON.parse(line) as { msg: string; error: string };
        assert.deepEqual([entry.msg, entry.error], ['RPC method failed', 'Device or resource busy']);
        // Nothing was attached: the target is still free.
        const ctrl = await v.rpc<Array<{ backend_specific: { scsi: Array<unknown> } }>>('vhost_get_controllers', { name: 'spread' });
        assert.equal(ctrl[0]!.backend_specific.scsi.length, 0);
      } finally {
        c.close();
      }
      // Once the session is gone the target can be added; the next session puts its queues on one core.
      let added = false;
      // Polled up to 20 s: the session's teardown can be delayed on a loaded machine.
      for (const until = Date.now() + 20_000; Date.now() < until && !added; ) {
        try {
          await add();
          added = true;
        } catch (e) {
          if ((e as RpcError).message !== 'Device or resource busy') throw e;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      assert.ok(added, 'the target is added once the spread session has closed');
      const c2 = await ScsiClient.connect(v.socket('spread'));
      try {
        const data = pattern(512, 7);
        const w = resp(await c2.request(2, [cmdReq(0, [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0]), data], [108]));
        assert.equal(w.status, 0, 'WRITE(10)');
        const r = await c2.request(2, [cmdReq(0, [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0])], [108, 512]);
        assert.equal(resp(r).status, 0, 'READ(10)');
        assert.deepEqual(r.ins[1], data);
        const reactors = await v.rpc<{ reactors: Array<{ lcore: number; queues: Array<{ device: string }> }> }>('framework_get_reactors');
        const cores = reactors.reactors.filter((x) => x.queues.some((q) => q.device === 'spread')).map((x) => x.lcore);
        assert.equal(cores.length, 1, `the session's queues share one core: ${JSON.stringify(cores)}`);
      } finally {
        c2.close();
      }
      await v.deleteController('spread');
      await v.rpc('bdev_qcow2_delete', { name: 'Q' });
      assert.equal(qemuCheck(img).code, 0);
    } finally {
      assert.equal(await v.stop(), 0);
      cleanup();
    }
  });
});
