// Property tests: random CDBs (random and supported opcodes, lengths 0..32, biased field values),
// random data buffers, random LUN addresses, over synchronous, asynchronous, read-only and failing
// bdev channels. The target never throws, completes each task exactly once, and answers GOOD or
// CHECK CONDITION with well-formed fixed-format sense. A second property interleaves commands with
// task management functions and hot removal.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { type BdevIo, IoStatus } from '../../src/bdev/io.js';
import { MallocBdev, MallocChannel } from '../../src/bdev/modules/malloc/malloc.js';
import { NullBdev, NullChannel } from '../../src/bdev/modules/null/null.js';
import { Opcode, ScsiLun, type ScsiLunOptions, scsiLunInfoFromBdev, ScsiStatus, ScsiTargetSet, ScsiTask, SenseKey, TaskResponse, TmfFunction, TmfResponse } from '../../src/scsi/index.js';

const SUPPORTED_OPS = Object.values(Opcode);

/**
 * Passes I/O on synchronously, asynchronously, or fails / refuses it, as a seeded script says.
 * NOMEM is never answered twice in a row (a bdev that refuses forever never completes anything).
 */
class ChaosChannel implements BdevChannel {
  private n = 0;
  private refused = false;
  constructor(
    private readonly inner: BdevChannel,
    private readonly script: number[],
  ) {}

  submit(io: BdevIo): void {
    let action = this.script.length ? this.script[this.n++ % this.script.length] : 0;
    if (action === 3 && this.refused) action = 0;
    this.refused = action === 3;
    switch (action) {
      case 1:
        setImmediate(() => this.inner.submit(io));
        return;
      case 2:
        io.complete(IoStatus.FAILED);
        return;
      case 3:
        io.complete(IoStatus.NOMEM);
        return;
      case 4:
        queueMicrotask(() => io.complete(IoStatus.FAILED));
        return;
      default:
        this.inner.submit(io);
    }
  }

  close(): void {}
}

type Kind = 'malloc' | 'malloc-ro' | 'null' | 'huge-null' | 'medium-errors';

function makeSet(kind: Kind, script: number[]): { set: ScsiTargetSet; lun: ScsiLun } {
  let bdev: MallocBdev | NullBdev;
  let inner: BdevChannel;
  if (kind === 'null' || kind === 'huge-null') {
    bdev = new NullBdev('Null0', kind === 'null' ? 512 : 4096, kind === 'null' ? 64 : 2 ** 40);
    inner = new NullChannel();
  } else {
    bdev = new MallocBdev('Malloc0', 512, 64 * 512);
    inner = new MallocChannel(bdev.channelSpec());
  }
  const opts: ScsiLunOptions = { ioErrorSense: kind === 'medium-errors' ? 'medium-error' : 'aborted-command' };
  const lun = new ScsiLun(scsiLunInfoFromBdev(bdev, { readonly: kind === 'malloc-ro' }), new ChaosChannel(inner, script), opts);
  const set = new ScsiTargetSet();
  set.attach(0, lun);
  return { set, lun };
}

const byte = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 255 }) },
  { weight: 3, arbitrary: fc.constant(0) },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 8 }) },
  { weight: 1, arbitrary: fc.constant(0xff) },
);

/** Any opcode, bytes biased towards small values: mostly exercises CDB validation. */
const randomCdbArb = fc.record({
  op: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...SUPPORTED_OPS) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
  rest: fc.array(byte, { minLength: 31, maxLength: 31 }),
});

/** Block commands with plausible LBA / length fields and a clean control byte: reaches the bdev. */
const IO_OPS = [0x08, 0x0a, 0x28, 0x2a, 0x2f, 0x35, 0x41, 0x42, 0x88, 0x8a, 0x8f, 0x91, 0x93, 0xa8, 0xaa, 0xaf];
const ioCdbArb = fc
  .record({
    op: fc.constantFrom(...IO_OPS),
    flags: fc.oneof(fc.constant(0), fc.constantFrom(0x01, 0x02, 0x08, 0x09, 0x20), byte),
    lba: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 70 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) }),
    n: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 9 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
  })
  .map(({ op, flags, lba, n }) => {
    const c = new Array<number>(32).fill(0);
    c[0] = op;
    c[1] = flags;
    const put = (off: number, v: number, bytes: number) => {
      for (let i = 0; i < bytes; i++) c[off + i] = Math.floor(v / 2 ** (8 * (bytes - 1 - i))) & 0xff;
    };
    if (op < 0x20) {
      put(1, lba & 0x1fffff, 3);
      c[1] |= flags & 0xe0;
      c[4] = n & 0xff;
    } else if (op >= 0x80 && op < 0xa0) {
      put(6, lba, 4);
      put(10, n, 4);
    } else if (op >= 0xa0) {
      put(2, lba, 4);
      put(6, n, 4);
    } else if (op === 0x42) {
      put(7, n * 8, 2); // UNMAP parameter list length
    } else {
      put(2, lba, 4);
      put(7, n, 2);
    }
    return { op, rest: c.slice(1) };
  });

const cdbArb = fc.record({
  cdb: fc.oneof(randomCdbArb, ioCdbArb),
  len: fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 32 }) }),
});

const inSegsArb = fc.array(fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 1100 }), fc.constantFrom(512, 1024, 4096)), { maxLength: 5 });
const unmapListArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 80 }), fc.integer({ min: 0, max: 20 })), { maxLength: 6 }).map((descs) => {
  const b = new Uint8Array(8 + descs.length * 16);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, 6 + descs.length * 16);
  dv.setUint16(2, descs.length * 16);
  descs.forEach(([lba, n], i) => {
    dv.setUint32(12 + i * 16, lba);
    dv.setUint32(16 + i * 16, n);
  });
  return [...b];
});
const blocksArb = fc.tuple(fc.integer({ min: 1, max: 6 }), fc.constantFrom(0, 0x5a)).map(([k, fill]) => new Array<number>(512 * k).fill(fill));
const outBufsArb = fc.oneof(fc.array(fc.array(byte, { maxLength: 700 }), { maxLength: 4 }), fc.array(blocksArb, { maxLength: 2 }), unmapListArb.map((l) => [l]));
const addrArb = fc.oneof(
  { weight: 8, arbitrary: fc.constant([1, 0, 0, 0]) },
  { weight: 1, arbitrary: fc.constant([1, 0, 0x40, 1]) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 9 }), byte, byte) },
);
const kindArb = fc.constantFrom<Kind>('malloc', 'malloc-ro', 'null', 'huge-null', 'medium-errors');
const scriptArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant<number[]>([]) },
  { weight: 2, arbitrary: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 6 }) },
);

const ILLEGAL_REQUEST_ASCS = new Set([0x1a, 0x20, 0x21, 0x24, 0x25, 0x26, 0x39]);

/** Asserts the invariants every completed task satisfies. */
function checkResult(task: ScsiTask, addressValid: boolean, kind: Kind, mayBeAborted = false): void {
  if (!addressValid) {
    assert.equal(task.response, TaskResponse.BAD_TARGET);
    return;
  }
  if (task.response === TaskResponse.ABORTED) {
    assert.ok(mayBeAborted, 'ABORTED only after a TMF or hot removal');
    assert.equal(task.status, ScsiStatus.CHECK_CONDITION);
    assert.equal(task.sense[2], SenseKey.ABORTED_COMMAND);
  } else {
    assert.equal(task.response, TaskResponse.OK);
  }
  assert.ok(task.status === ScsiStatus.GOOD || task.status === ScsiStatus.CHECK_CONDITION, `status ${task.status}`);
  assert.ok(task.dataTransferred >= 0);
  assert.ok(task.residual >= 0, `residual ${task.residual}`);
  assert.ok(task.dataTransferred <= task.dataIn.totalLen + task.dataOut.totalLen);
  if (task.status === ScsiStatus.GOOD) {
    assert.equal(task.senseLength, 0);
    return;
  }
  assert.equal(task.senseLength, 18);
  assert.equal(task.dataTransferred, 0);
  const s = task.sense;
  assert.equal(s[0], 0x70, 'current error, fixed format');
  assert.equal(s[7], 10, 'additional sense length');
  assert.equal(s[2] & 0xf0, 0);
  const key = s[2];
  const asc = s[12];
  assert.equal(s[13], 0, 'ASCQ');
  if (key === SenseKey.ILLEGAL_REQUEST) assert.ok(ILLEGAL_REQUEST_ASCS.has(asc), `asc ${asc.toString(16)}`);
  else if (key === SenseKey.DATA_PROTECT) {
    assert.equal(asc, 0x27);
    assert.equal(kind, 'malloc-ro');
  } else if (key === SenseKey.ABORTED_COMMAND) assert.equal(asc, 0);
  else if (key === SenseKey.MEDIUM_ERROR) {
    assert.ok(asc === 0x11 || asc === 0x0c);
    assert.equal(kind, 'medium-errors');
  } else assert.fail(`unexpected sense key ${key}`);
}

const settle = () => new Promise((r) => setImmediate(r));

describe('SCSI CDB fuzzing', () => {
  it('random CDBs: no throw, one completion, GOOD or CHECK CONDITION with valid sense', async () => {
    await fc.assert(
      fc.asyncProperty(cdbArb, inSegsArb, outBufsArb, addrArb, kindArb, scriptArb, async (c, inSegs, outBufs, a, kind, script) => {
        const { set, lun } = makeSet(kind, script);
        const task = new ScsiTask({ maxSegments: 8 });
        let calls = 0;
        let resolve!: () => void;
        const done = new Promise<void>((r) => {
          resolve = r;
        });
        task.onComplete = () => {
          calls++;
          resolve();
        };
        task.setCdb([c.cdb.op, ...c.cdb.rest]);
        if (c.len >= 0) task.cdbLength = c.len;
        for (const n of inSegs) task.dataIn.push(new Uint8Array(n).fill(0xee), 0, n);
        for (const b of outBufs) task.dataOut.push(Uint8Array.from(b), 0, b.length);
        const addr = new Uint8Array(8);
        addr.set(a);
        set.submit(addr, 0, task);
        if (calls === 0) {
          const timeout = setTimeout(() => resolve(), 2000);
          await done;
          clearTimeout(timeout);
        }
        await settle();
        await settle();
        assert.equal(calls, 1, 'completed exactly once');
        assert.equal(lun.inFlight, 0);
        checkResult(task, a[0] === 1 && a[1] === 0, kind);
      }),
      { numRuns: 4000, interruptAfterTimeLimit: 2500 },
    );
  });

  it('commands interleaved with TMFs and hot removal: every task and TMF completes once', async () => {
    const step = fc.oneof(
      { weight: 6, arbitrary: fc.record({ t: fc.constant('cmd' as const), op: fc.constantFrom(0x28, 0x2a, 0x41, 0x42, 0x35, 0x00, 0x12), lba: fc.integer({ min: 0, max: 70 }), n: fc.integer({ min: 0, max: 8 }) }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant('tmf' as const), fn: fc.integer({ min: 0, max: 8 }), tag: fc.integer({ min: 0, max: 12 }) }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant('tick' as const) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant('detach' as const) }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 25 }), scriptArb, kindArb, async (steps, script, kind) => {
        const { set, lun } = makeSet(kind === 'huge-null' ? 'malloc' : kind, script.length ? script : [1]);
        const tasks: Array<{ task: ScsiTask; calls: number }> = [];
        const tmfs: Array<Promise<TmfResponse>> = [];
        let detach: Promise<void> | null = null;
        const addr = Uint8Array.from([1, 0, 0, 0, 0, 0, 0, 0]);
        for (const s of steps) {
          if (s.t === 'cmd') {
            const rec = { task: new ScsiTask({ maxSegments: 4 }), calls: 0 };
            rec.task.onComplete = () => rec.calls++;
            const cdb = new Array<number>(10).fill(0);
            cdb[0] = s.op;
            cdb[5] = s.lba;
            cdb[8] = s.op === 0x42 ? 24 : s.n;
            if (s.op === 0x12) cdb[4] = 96;
            rec.task.setCdb(cdb);
            rec.task.tagLo = tasks.length;
            const buf = new Uint8Array(8 * 512).fill(s.lba);
            if (s.op === 0x42) new DataView(buf.buffer).setUint16(2, 16);
            if (s.op === 0x28 || s.op === 0x12) rec.task.dataIn.push(buf, 0, buf.length);
            else rec.task.dataOut.push(buf, 0, s.op === 0x42 ? 24 : buf.length);
            tasks.push(rec);
            set.submit(addr, 0, rec.task);
          } else if (s.t === 'tmf') {
            tmfs.push(set.taskManagement(s.fn, addr, 0, s.tag, 0));
          } else if (s.t === 'tick') {
            await settle();
          } else if (!detach && set.state(0) === 1) {
            detach = set.detach(0);
          }
        }
        const all = Promise.all([...tmfs, detach ?? Promise.resolve()]);
        const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('TMF or detach never completed')), 3000));
        const responses = (await Promise.race([all, timeout])) as unknown[];
        for (let i = 0; i < 20; i++) await settle();
        for (const r of responses.slice(0, tmfs.length)) assert.ok(Object.values(TmfResponse).includes(r as TmfResponse));
        for (const { task, calls } of tasks) {
          assert.equal(calls, 1, 'task completed exactly once');
          checkResult(task, true, kind === 'huge-null' ? 'malloc' : kind, true);
        }
        assert.equal(lun.inFlight, 0);
        if (detach) assert.equal(set.state(0), 3);
      }),
      { numRuns: 400, interruptAfterTimeLimit: 2500 },
    );
  });
});
