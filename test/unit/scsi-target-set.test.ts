// ScsiTargetSet: virtio-scsi LUN addressing, absent targets and LUNs, task management functions,
// and hot-detach (removal waits for in-flight tasks, new tasks are refused).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { type BdevIo, IoStatus } from '../../src/bdev/io.js';
import { LayerChannel } from '../../src/bdev/layer-channel.js';
import { MallocBdev, MallocChannel } from '../../src/bdev/modules/malloc/malloc.js';
import {
  Asc,
  decodeFixedSense,
  encodeLunAddress,
  lunAddressLun,
  lunAddressTarget,
  ScsiLun,
  scsiLunInfoFromBdev,
  ScsiStatus,
  ScsiTargetSet,
  ScsiTask,
  SenseKey,
  TargetState,
  TaskResponse,
  TmfFunction,
  TmfResponse,
} from '../../src/scsi/index.js';
import type { VhostdError } from '../../src/util/errors.js';
import { layerOf } from './helpers/open-spec.js';

const BS = 512;

/** Malloc channel whose completions are held until released (or NOMEM'd on demand). */
class HoldChannel implements BdevChannel {
  private readonly inner: MallocChannel;
  readonly held: BdevIo[] = [];
  hold = false;
  nomem = 0;
  submitted = 0;
  closed = false;

  constructor(bdev: MallocBdev) {
    this.inner = new MallocChannel(bdev.channelSpec());
  }

  submit(io: BdevIo): void {
    this.submitted++;
    if (this.nomem > 0) {
      this.nomem--;
      io.complete(IoStatus.NOMEM);
      return;
    }
    if (this.hold) this.held.push(io);
    else this.inner.submit(io);
  }

  releaseOne(): void {
    const io = this.held.shift();
    if (io) this.inner.submit(io);
  }

  releaseAll(): void {
    while (this.held.length) this.releaseOne();
  }

  close(): void {
    this.closed = true;
  }
}

/** `layer`: the LUN opens the HoldChannel through a bdev layer channel (as a ScsiDevice does), which retries NOMEM. */
function makeLun(opts: { layer?: boolean } = {}) {
  const bdev = new MallocBdev('Malloc0', BS, 64 * BS);
  const ch = new HoldChannel(bdev);
  const layer = opts.layer ? new LayerChannel(ch, layerOf(bdev).share) : undefined;
  const lun = new ScsiLun(scsiLunInfoFromBdev(bdev), layer ?? ch);
  // Every I/O status the LUN is handed.
  const statuses: IoStatus[] = [];
  const ioDone = lun.ioDone.bind(lun);
  lun.ioDone = (task, status) => {
    statuses.push(status);
    ioDone(task, status);
  };
  return { bdev, ch, layer, lun, statuses };
}

const addr = (target: number, lun = 0, b0 = 1) => {
  const a = new Uint8Array(8);
  encodeLunAddress(target, lun, a);
  a[0] = b0;
  return a;
};

interface Sub {
  task: ScsiTask;
  calls: () => number;
  data: Uint8Array;
  done: Promise<ScsiTask>;
}

function submit(set: ScsiTargetSet, a: Uint8Array, cdb: number[], opts: { inLen?: number; out?: Uint8Array; tag?: number } = {}): Sub {
  const task = new ScsiTask();
  let calls = 0;
  let resolve!: (t: ScsiTask) => void;
  const done = new Promise<ScsiTask>((r) => {
    resolve = r;
  });
  task.onComplete = (t) => {
    calls++;
    resolve(t);
  };
  task.setCdb(cdb);
  task.tagLo = opts.tag ?? 0;
  const data = new Uint8Array(opts.inLen ?? 0);
  if (data.length) task.dataIn.push(data, 0, data.length);
  if (opts.out) task.dataOut.push(opts.out, 0, opts.out.length);
  set.submit(a, 0, task);
  return { task, calls: () => calls, data, done };
}

function sense(t: ScsiTask): number[] {
  const s = decodeFixedSense(t.sense, t.senseLength);
  assert.ok(s, 'fixed sense present');
  return [s.senseKey, s.asc, s.ascq];
}

const TUR = [0, 0, 0, 0, 0, 0];
const INQUIRY = [0x12, 0, 0, 0, 96, 0];
const REPORT_LUNS = [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
const READ1 = (lba: number) => [0x28, 0, 0, 0, 0, lba, 0, 0, 1, 0];
const WRITE1 = (lba: number) => [0x2a, 0, 0, 0, 0, lba, 0, 0, 1, 0];
const tick = () => new Promise((r) => setImmediate(r));

describe('LUN addressing', () => {
  it('decodes byte 0 = 1, target in byte 1, LUN in bytes 2-3 with the address method masked', () => {
    const a = Uint8Array.from([1, 5, 0x40, 0x00, 0, 0, 0, 0]);
    assert.equal(lunAddressTarget(a), 5);
    assert.equal(lunAddressLun(a), 0);
    assert.equal(lunAddressLun(Uint8Array.from([1, 0, 0x41, 0x02, 0, 0, 0, 0])), 0x102);
    assert.equal(lunAddressTarget(Uint8Array.from([0, 5, 0, 0, 0, 0, 0, 0])), -1);
    assert.equal(lunAddressTarget(Uint8Array.from([1, 8, 0, 0, 0, 0, 0, 0])), -1);
    const buf = new Uint8Array(12).fill(0xff);
    encodeLunAddress(3, 0, buf, 2);
    assert.deepEqual([...buf], [0xff, 0xff, 1, 3, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
  });

  it('routes commands to the LUN of the addressed target (Linux flat-addressing form)', () => {
    const set = new ScsiTargetSet();
    const { lun } = makeLun();
    set.attach(6, lun);
    const s = submit(set, Uint8Array.from([1, 6, 0x40, 0, 0, 0, 0, 0]), INQUIRY, { inLen: 96 });
    assert.equal(s.calls(), 1);
    assert.equal(s.task.response, TaskResponse.OK);
    assert.equal(s.task.status, ScsiStatus.GOOD);
    assert.equal(s.data[0], 0x00);
    assert.equal(Buffer.from(s.data.subarray(16, 27)).toString(), 'Malloc disk');
  });

  it('no target: BAD_TARGET response, completion called once', () => {
    const set = new ScsiTargetSet();
    set.attach(0, makeLun().lun);
    for (const a of [addr(1), addr(0, 0, 0), addr(0, 0, 2), Uint8Array.from([1, 8, 0, 0, 0, 0, 0, 0]), Uint8Array.from([1, 255, 0, 0, 0, 0, 0, 0])]) {
      const s = submit(set, a, TUR, { inLen: 16 });
      assert.equal(s.calls(), 1);
      assert.equal(s.task.response, TaskResponse.BAD_TARGET);
      assert.equal(s.task.dataTransferred, 0);
    }
  });

  it('attach validates the slot', () => {
    const set = new ScsiTargetSet();
    set.attach(0, makeLun().lun);
    assert.throws(() => set.attach(0, makeLun().lun), (e: VhostdError) => e.code === -17);
    assert.throws(() => set.attach(8, makeLun().lun), (e: VhostdError) => e.code === -22);
    assert.throws(() => set.attach(-1, makeLun().lun), (e: VhostdError) => e.code === -22);
    assert.equal(set.state(0), TargetState.PRESENT);
    assert.equal(set.state(1), TargetState.EMPTY);
  });
});

describe('absent LUN on a present target', () => {
  const set = new ScsiTargetSet();
  set.attach(2, makeLun().lun);

  it('commands get ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED', () => {
    for (const cdb of [TUR, READ1(0), WRITE1(0), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0xff]]) {
      const s = submit(set, addr(2, 1), cdb, { inLen: 512, out: new Uint8Array(512) });
      assert.equal(s.calls(), 1);
      assert.equal(s.task.response, TaskResponse.OK);
      assert.equal(s.task.status, ScsiStatus.CHECK_CONDITION);
      assert.deepEqual(sense(s.task), [SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, 0]);
      assert.equal(s.task.dataTransferred, 0);
    }
  });

  it('INQUIRY answers peripheral qualifier 011b / device type 1Fh', () => {
    const s = submit(set, addr(2, 7), INQUIRY, { inLen: 255 });
    assert.equal(s.task.status, ScsiStatus.GOOD);
    assert.equal(s.task.dataTransferred, 36);
    assert.equal(s.data[0], 0x7f);
    assert.equal(s.data[4], 31);
    assert.equal(s.task.residual, 255 - 36);
    const short = submit(set, addr(2, 7), [0x12, 0, 0, 0, 4, 0], { inLen: 255 });
    assert.equal(short.task.dataTransferred, 4);
  });

  it('REPORT LUNS works and lists LUN 0', () => {
    const s = submit(set, addr(2, 300), REPORT_LUNS, { inLen: 256 });
    assert.equal(s.task.status, ScsiStatus.GOOD);
    assert.equal(s.task.dataTransferred, 16);
    assert.deepEqual([...s.data.subarray(0, 16)], [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const bad = submit(set, addr(2, 1), [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], { inLen: 256 });
    assert.deepEqual(sense(bad.task), [SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, 0]);
  });

  it('REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as data with GOOD status', () => {
    const s = submit(set, addr(2, 1), [0x03, 0, 0, 0, 252, 0], { inLen: 252 });
    assert.equal(s.task.status, ScsiStatus.GOOD);
    assert.equal(s.task.dataTransferred, 18);
    const d = decodeFixedSense(s.data);
    assert.ok(d);
    assert.deepEqual([d.senseKey, d.asc], [SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED]);
  });
});

describe('task management', () => {
  it('LOGICAL UNIT RESET completes only after the in-flight tasks, which complete first', async () => {
    const set = new ScsiTargetSet();
    const { lun, ch } = makeLun();
    set.attach(0, lun);
    ch.hold = true;
    const a = submit(set, addr(0), READ1(0), { inLen: BS });
    const b = submit(set, addr(0), READ1(1), { inLen: BS });
    assert.equal(lun.inFlight, 2);
    const order: string[] = [];
    void a.done.then(() => order.push('a'));
    void b.done.then(() => order.push('b'));
    let resp: number | undefined;
    const reset = set.taskManagement(TmfFunction.LOGICAL_UNIT_RESET, addr(0)).then((r) => {
      order.push('reset');
      resp = r;
    });
    await tick();
    assert.equal(resp, undefined, 'still waiting');
    // a task started after the reset does not hold it up
    ch.hold = false;
    const c = submit(set, addr(0), READ1(2), { inLen: BS });
    assert.equal(c.calls(), 1);
    ch.releaseOne();
    await tick();
    assert.equal(resp, undefined);
    ch.releaseOne();
    await reset;
    assert.equal(resp, TmfResponse.FUNCTION_COMPLETE);
    assert.deepEqual(order, ['a', 'b', 'reset']);
    assert.equal(a.task.status, ScsiStatus.GOOD, 'I/O already at the bdev completes normally');
  });

  it('ABORT TASK of a task whose I/O waits in the bdev layer for a NOMEM retry completes it as aborted at once', async () => {
    const set = new ScsiTargetSet();
    const { lun, ch, layer, statuses, bdev } = makeLun({ layer: true });
    assert.ok(layer);
    set.attach(1, lun);
    ch.nomem = 1;
    const s = submit(set, addr(1), WRITE1(3), { out: new Uint8Array(BS).fill(1), tag: 77 });
    assert.equal(s.calls(), 0);
    assert.equal(layer.waiting, 1, 'refused: its I/O waits in the layer');
    // A task started meanwhile queues behind the waiting one (SPDK's bdev layer keeps the order).
    const other = submit(set, addr(1), READ1(0), { inLen: BS, tag: 78 });
    assert.equal(other.calls(), 0);
    assert.equal(ch.submitted, 1);
    assert.equal(layer.waiting, 2);
    const resp = await set.taskManagement(TmfFunction.ABORT_TASK, addr(1), 0, 77, 0);
    assert.equal(resp, TmfResponse.FUNCTION_COMPLETE);
    assert.equal(s.calls(), 1);
    assert.equal(s.task.response, TaskResponse.ABORTED);
    assert.deepEqual(sense(s.task), [SenseKey.ABORTED_COMMAND, 0, 0]);
    assert.equal(layer.waiting, 1, 'the layer gave the aborted I/O back');
    await tick(); // the layer's retry must not resubmit the aborted task, only the one behind it
    assert.equal(ch.submitted, 2);
    assert.equal(s.calls(), 1);
    assert.equal(other.calls(), 1);
    assert.equal(other.task.status, ScsiStatus.GOOD);
    assert.equal(lun.inFlight, 0);
    assert.equal(layer.waiting, 0);
    assert.deepEqual(statuses, [IoStatus.SUCCESS], 'the LUN never saw NOMEM');
    const disk = new Uint8Array(bdev.buffer);
    assert.equal(disk[3 * BS], 0, 'the aborted write never reached the bdev');
  });

  it('ABORT TASK for an unknown tag completes at once; tags are 64-bit', async () => {
    const set = new ScsiTargetSet();
    const { lun, ch } = makeLun();
    set.attach(0, lun);
    ch.hold = true;
    const s = submit(set, addr(0), READ1(0), { inLen: BS, tag: 5 });
    s.task.tagHi = 1;
    assert.equal(await set.taskManagement(TmfFunction.ABORT_TASK, addr(0), 0, 5, 0), TmfResponse.FUNCTION_COMPLETE);
    assert.equal(s.calls(), 0);
    assert.equal(await set.taskManagement(TmfFunction.QUERY_TASK, addr(0), 0, 5, 1), TmfResponse.FUNCTION_SUCCEEDED);
    const abort = set.taskManagement(TmfFunction.ABORT_TASK, addr(0), 0, 5, 1);
    ch.releaseAll();
    assert.equal(await abort, TmfResponse.FUNCTION_COMPLETE);
    assert.equal(s.calls(), 1);
    assert.equal(await set.taskManagement(TmfFunction.QUERY_TASK, addr(0), 0, 5, 1), TmfResponse.FUNCTION_COMPLETE);
  });

  it('ABORT TASK stops a multi-step WRITE SAME at its next step', async () => {
    const set = new ScsiTargetSet();
    const { lun, ch, bdev } = makeLun();
    set.attach(0, lun);
    ch.hold = true;
    const block = new Uint8Array(BS).fill(9);
    // a block split in 100 segments: the 256-entry helper list holds 2 repeats, so 40 blocks
    // take 20 writes
    const task = new ScsiTask();
    let calls = 0;
    task.onComplete = () => calls++;
    task.setCdb([0x41, 0, 0, 0, 0, 0, 0, 0, 40, 0]);
    task.tagLo = 9;
    for (let i = 0; i < 100; i++) task.dataOut.push(block, i * 5, i === 99 ? BS - 495 : 5);
    set.submit(addr(0), 0, task);
    assert.equal(ch.held.length, 1);
    const abort = set.taskManagement(TmfFunction.ABORT_TASK, addr(0), 0, 9);
    ch.releaseOne();
    assert.equal(await abort, TmfResponse.FUNCTION_COMPLETE);
    assert.equal(calls, 1);
    assert.equal(task.response, TaskResponse.ABORTED);
    assert.equal(ch.submitted, 1, 'no further writes after the abort');
    const disk = new Uint8Array(bdev.buffer);
    assert.equal(disk[0], 9);
    assert.equal(disk[2 * BS], 0);
  });

  it('QUERY TASK SET, ABORT TASK SET, CLEAR TASK SET, I_T NEXUS RESET', async () => {
    const set = new ScsiTargetSet();
    const { lun, ch } = makeLun();
    set.attach(4, lun);
    assert.equal(await set.taskManagement(TmfFunction.QUERY_TASK_SET, addr(4)), TmfResponse.FUNCTION_COMPLETE);
    ch.hold = true;
    const s = submit(set, addr(4), READ1(0), { inLen: BS });
    assert.equal(await set.taskManagement(TmfFunction.QUERY_TASK_SET, addr(4)), TmfResponse.FUNCTION_SUCCEEDED);
    for (const fn of [TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET, TmfFunction.I_T_NEXUS_RESET]) {
      let done = false;
      const p = set.taskManagement(fn, addr(4, fn === TmfFunction.I_T_NEXUS_RESET ? 3 : 0)).then((r) => {
        done = true;
        return r;
      });
      if (fn === TmfFunction.ABORT_TASK_SET) {
        await tick();
        assert.equal(done, false);
        ch.releaseAll();
      }
      assert.equal(await p, TmfResponse.FUNCTION_COMPLETE);
    }
    assert.equal(s.calls(), 1);
  });

  it('addressing and unsupported functions', async () => {
    const set = new ScsiTargetSet();
    set.attach(0, makeLun().lun);
    assert.equal(await set.taskManagement(TmfFunction.LOGICAL_UNIT_RESET, addr(1)), TmfResponse.BAD_TARGET);
    assert.equal(await set.taskManagement(TmfFunction.LOGICAL_UNIT_RESET, addr(0, 0, 0)), TmfResponse.BAD_TARGET);
    assert.equal(await set.taskManagement(TmfFunction.LOGICAL_UNIT_RESET, addr(0, 1)), TmfResponse.INCORRECT_LUN);
    assert.equal(await set.taskManagement(TmfFunction.ABORT_TASK, addr(0, 2), 0, 1), TmfResponse.INCORRECT_LUN);
    assert.equal(await set.taskManagement(TmfFunction.CLEAR_ACA, addr(0)), TmfResponse.FUNCTION_REJECTED);
    assert.equal(await set.taskManagement(99, addr(0)), TmfResponse.FUNCTION_REJECTED);
  });
});

describe('hot-detach', () => {
  it('refuses new tasks, waits for in-flight ones, then closes the channel', async () => {
    const set = new ScsiTargetSet();
    const { lun, ch } = makeLun();
    set.attach(3, lun);
    ch.hold = true;
    const inflight = submit(set, addr(3), WRITE1(0), { out: new Uint8Array(BS).fill(4) });
    let detached = false;
    const detach = set.detach(3).then(() => {
      detached = true;
    });
    assert.equal(set.detach(3), set.detach(3), 'same removal promise while it runs');
    assert.equal(set.state(3), TargetState.REMOVING);
    assert.equal(lun.removing, true);

    const late = submit(set, addr(3), READ1(0), { inLen: BS });
    assert.equal(late.calls(), 1);
    assert.equal(late.task.response, TaskResponse.OK);
    assert.deepEqual(sense(late.task), [SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, 0]);
    const inq = submit(set, addr(3), INQUIRY, { inLen: 96 });
    assert.equal(inq.data[0], 0x7f, 'INQUIRY sees no logical unit');
    const rl = submit(set, addr(3), REPORT_LUNS, { inLen: 64 });
    assert.equal(rl.task.dataTransferred, 8, 'REPORT LUNS lists nothing while removing');
    assert.equal(await set.taskManagement(TmfFunction.LOGICAL_UNIT_RESET, addr(3)), TmfResponse.INCORRECT_LUN);
    // executing straight on the LUN is refused the same way
    const direct = new ScsiTask();
    let directCalls = 0;
    direct.onComplete = () => directCalls++;
    direct.setCdb(TUR);
    lun.execute(direct);
    assert.equal(directCalls, 1);
    assert.deepEqual(sense(direct), [SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, 0]);

    await tick();
    assert.equal(detached, false, 'waits for the in-flight write');
    assert.equal(ch.closed, false);
    assert.equal(set.hasPendingTasks(3), true);
    ch.releaseAll();
    await detach;
    assert.equal(inflight.calls(), 1);
    assert.equal(inflight.task.status, ScsiStatus.GOOD);
    assert.equal(ch.closed, true);
    assert.equal(set.state(3), TargetState.REMOVED);
    assert.equal(set.lun(3), null);

    // REMOVED: commands still see an absent LUN, TMFs a bad target; release() empties the slot
    const after = submit(set, addr(3), TUR);
    assert.equal(after.task.response, TaskResponse.OK);
    assert.deepEqual(sense(after.task), [SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, 0]);
    assert.equal(await set.taskManagement(TmfFunction.LOGICAL_UNIT_RESET, addr(3)), TmfResponse.BAD_TARGET);
    set.release(3);
    assert.equal(submit(set, addr(3), TUR).task.response, TaskResponse.BAD_TARGET);
    // the slot can be reused
    set.attach(3, makeLun().lun);
    assert.equal(submit(set, addr(3), TUR).task.status, ScsiStatus.GOOD);
  });

  it('detach of an idle target completes at once; of an empty one fails with ENODEV', async () => {
    const set = new ScsiTargetSet();
    const { lun, ch } = makeLun();
    set.attach(0, lun);
    await set.detach(0);
    assert.equal(ch.closed, true);
    await assert.rejects(set.detach(0), (e: VhostdError) => e.code === -19);
    await assert.rejects(set.detach(5), (e: VhostdError) => e.code === -19);
  });

  it('remove() aborts tasks whose I/O waits in the bdev layer for a NOMEM retry; drain() resolves after the rest', async () => {
    const { lun, ch, layer, statuses } = makeLun({ layer: true });
    assert.ok(layer);
    const set = new ScsiTargetSet();
    set.attach(0, lun);
    ch.hold = true;
    const held = submit(set, addr(0), READ1(1), { inLen: BS });
    ch.nomem = 1;
    const queued = submit(set, addr(0), READ1(0), { inLen: BS });
    assert.equal(queued.calls(), 0);
    assert.equal(layer.waiting, 1);
    lun.remove();
    assert.equal(queued.calls(), 1);
    assert.equal(queued.task.response, TaskResponse.ABORTED);
    assert.equal(layer.waiting, 0);
    let drained = false;
    const d = lun.drain().then(() => {
      drained = true;
    });
    await tick();
    assert.equal(drained, false);
    ch.releaseAll();
    await d;
    assert.equal(held.calls(), 1);
    assert.equal(held.task.status, ScsiStatus.GOOD);
    assert.equal(lun.inFlight, 0);
    assert.equal(ch.submitted, 2, 'the aborted I/O was not retried');
    assert.deepEqual(statuses, [IoStatus.SUCCESS]);
  });

  it('ScsiTargetSet.drain waits for every target', async () => {
    const set = new ScsiTargetSet();
    const a = makeLun();
    const b = makeLun();
    set.attach(0, a.lun);
    set.attach(7, b.lun);
    a.ch.hold = true;
    b.ch.hold = true;
    submit(set, addr(0), READ1(0), { inLen: BS });
    const last = submit(set, addr(7), READ1(0), { inLen: BS });
    let drained = false;
    const d = set.drain().then(() => {
      drained = true;
    });
    a.ch.releaseAll();
    await tick();
    assert.equal(drained, false);
    b.ch.releaseAll();
    await d;
    assert.equal(last.calls(), 1);
  });
});
