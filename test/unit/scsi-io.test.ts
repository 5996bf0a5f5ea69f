// I/O commands of ScsiLun over a real malloc bdev (and the null bdev): READ/WRITE 6/10/12/16,
// VERIFY, SYNCHRONIZE CACHE, UNMAP, WRITE SAME; data-length mismatches and residuals; read-only
// LUNs; synchronous and asynchronous channels, NOMEM resubmission (by the bdev layer channel
// under the LUN) and bdev failures.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { type BdevIo, IoStatus, IoType } from '../../src/bdev/io.js';
import { LayerChannel } from '../../src/bdev/layer-channel.js';
import { MallocBdev, MallocChannel } from '../../src/bdev/modules/malloc/malloc.js';
import { NullBdev, NullChannel } from '../../src/bdev/modules/null/null.js';
import { Asc, decodeFixedSense, ScsiLun, type ScsiLunOptions, scsiLunInfoFromBdev, ScsiStatus, ScsiTask, SenseKey, TaskResponse } from '../../src/scsi/index.js';
import { layerOf } from './helpers/open-spec.js';

const BS = 512;
const BLOCKS = 256;

interface Record {
  type: IoType;
  offset: number;
  length: number;
  iovCount: number;
  iovTotal: number;
  sameIov: boolean;
}

/** Wraps a channel: records every I/O, optionally completes later, fails or refuses some. */
class TestChannel implements BdevChannel {
  readonly ios: Record[] = [];
  readonly held: Array<() => void> = [];
  mode: 'sync' | 'async' | 'hold' = 'sync';
  /** Per submission index (0-based): what to do instead of passing it on. */
  script = new Map<number, 'nomem' | 'fail' | 'throw'>();
  closed = false;
  lastIo: BdevIo | null = null;

  constructor(private readonly inner: BdevChannel) {}

  submit(io: BdevIo): void {
    const n = this.ios.length;
    this.lastIo = io;
    this.ios.push({ type: io.type, offset: io.offset, length: io.length, iovCount: io.iov.count, iovTotal: io.iov.totalLen, sameIov: false });
    const action = this.script.get(n);
    if (action === 'throw') throw new Error('backend exploded');
    const go = () => {
      if (action === 'nomem') io.complete(IoStatus.NOMEM);
      else if (action === 'fail') io.complete(IoStatus.FAILED);
      else this.inner.submit(io);
    };
    if (this.mode === 'sync') go();
    else if (this.mode === 'async') setImmediate(go);
    else this.held.push(go);
  }

  release(): void {
    for (const go of this.held.splice(0)) go();
  }

  close(): void {
    this.closed = true;
  }
}

interface Setup {
  readonly?: boolean;
  nullBdev?: boolean;
  opts?: ScsiLunOptions;
  /** Open the TestChannel under a bdev layer channel, as a ScsiDevice opens its LUNs' bdevs. */
  layer?: boolean;
}

function setup(s: Setup = {}) {
  const bdev = s.nullBdev ? new NullBdev('Null0', BS, BLOCKS) : new MallocBdev('Malloc0', BS, BLOCKS * BS);
  const inner = bdev instanceof MallocBdev ? new MallocChannel(bdev.channelSpec()) : new NullChannel();
  const ch = new TestChannel(inner);
  const layer = s.layer ? new LayerChannel(ch, layerOf(bdev).share) : undefined;
  const lun = new ScsiLun(scsiLunInfoFromBdev(bdev, { readonly: s.readonly }), layer ?? ch, s.opts);
  // Every I/O status the LUN is handed (the task's I/O completion).
  const statuses: IoStatus[] = [];
  const ioDone = lun.ioDone.bind(lun);
  lun.ioDone = (task, status) => {
    statuses.push(status);
    ioDone(task, status);
  };
  const disk = bdev instanceof MallocBdev ? new Uint8Array(bdev.buffer) : new Uint8Array(0);
  return { bdev, ch, layer, lun, disk, statuses };
}

interface Exec {
  task: ScsiTask;
  calls: () => number;
  done: Promise<void>;
}

function exec(lun: ScsiLun, cdb: number[], opts: { inBufs?: Uint8Array[]; outBufs?: Uint8Array[]; tag?: number } = {}): Exec {
  const task = new ScsiTask();
  let calls = 0;
  let resolve!: () => void;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  task.onComplete = () => {
    calls++;
    resolve();
  };
  task.setCdb(cdb);
  task.tagLo = opts.tag ?? 0;
  for (const b of opts.inBufs ?? []) task.dataIn.push(b, 0, b.length);
  for (const b of opts.outBufs ?? []) task.dataOut.push(b, 0, b.length);
  lun.execute(task);
  return { task, calls: () => calls, done };
}

function expectGood(t: ScsiTask): void {
  assert.equal(t.response, TaskResponse.OK);
  assert.equal(t.status, ScsiStatus.GOOD, `sense ${Buffer.from(t.sense.subarray(0, t.senseLength)).toString('hex')}`);
}

function expectSense(t: ScsiTask, key: number, asc: number, ascq = 0): void {
  assert.equal(t.status, ScsiStatus.CHECK_CONDITION);
  const s = decodeFixedSense(t.sense, t.senseLength);
  assert.ok(s);
  assert.deepEqual([s.senseKey, s.asc, s.ascq], [key, asc, ascq]);
  assert.equal(t.dataTransferred, 0);
}

const rw10 = (op: number, lba: number, blocks: number, b1 = 0) => [op, b1, (lba >>> 24) & 0xff, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff, 0, blocks >> 8, blocks & 0xff, 0];
const READ10 = 0x28;
const WRITE10 = 0x2a;
function cdb16(op: number, lbaHi: number, lbaLo: number, blocks: number, b1 = 0): number[] {
  const c = new Array<number>(16).fill(0);
  c[0] = op;
  c[1] = b1;
  for (let i = 0; i < 4; i++) {
    c[2 + i] = (lbaHi >>> (24 - 8 * i)) & 0xff;
    c[6 + i] = (lbaLo >>> (24 - 8 * i)) & 0xff;
    c[10 + i] = (blocks >>> (24 - 8 * i)) & 0xff;
  }
  return c;
}
const pattern = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);

describe('READ / WRITE', () => {
  it('WRITE(10) then READ(10) round-trips through the bdev, scattered over segments', () => {
    const { lun, disk, ch } = setup();
    const data = pattern(3 * BS, 1);
    const w = exec(lun, rw10(WRITE10, 5, 3), { outBufs: [data.subarray(0, 100), data.subarray(100, 1000), data.subarray(1000)] });
    expectGood(w.task);
    assert.equal(w.calls(), 1);
    assert.equal(w.task.dataTransferred, 3 * BS);
    assert.equal(w.task.residual, 0);
    assert.deepEqual(disk.subarray(5 * BS, 8 * BS), data);
    assert.deepEqual(ch.ios[0], { type: IoType.WRITE, offset: 5 * BS, length: 3 * BS, iovCount: 3, iovTotal: 3 * BS, sameIov: false });
    assert.equal(ch.lastIo?.iov, w.task.dataOut, 'exact-size buffers are passed straight through');

    const a = new Uint8Array(700);
    const b = new Uint8Array(3 * BS - 700);
    const r = exec(lun, rw10(READ10, 5, 3), { inBufs: [a, b] });
    expectGood(r.task);
    assert.equal(r.task.dataTransferred, 3 * BS);
    assert.deepEqual(Buffer.concat([a, b]), Buffer.from(data));
    assert.equal(ch.lastIo?.iov, r.task.dataIn);
  });

  it('READ(6) / WRITE(6): 21-bit LBA, transfer length 0 means 256 blocks', () => {
    const { lun, ch } = setup();
    const r = exec(lun, [0x08, 0x00, 0x00, 0x00, 0x00, 0x00], { inBufs: [new Uint8Array(256 * BS)] });
    expectGood(r.task);
    assert.equal(ch.ios[0].length, 256 * BS);
    const w = exec(lun, [0x0a, 0xe0, 0x00, 0x02, 0x01, 0x00], { outBufs: [pattern(BS, 9)] });
    expectGood(w.task); // top 3 bits of byte 1 are not part of the LBA
    assert.equal(ch.ios[1].offset, 2 * BS);
  });

  it('READ(12) / WRITE(16) decode their fields', () => {
    const { lun, ch, disk } = setup();
    const data = pattern(2 * BS, 3);
    expectGood(exec(lun, cdb16(0x8a, 0, 200, 2), { outBufs: [data] }).task);
    assert.deepEqual(disk.subarray(200 * BS, 202 * BS), data);
    const buf = new Uint8Array(2 * BS);
    expectGood(exec(lun, [0xa8, 0, 0, 0, 0, 200, 0, 0, 0, 2, 0, 0], { inBufs: [buf] }).task);
    assert.deepEqual(buf, data);
    assert.deepEqual(ch.ios.map((i) => [i.type, i.offset, i.length]), [
      [IoType.WRITE, 200 * BS, 2 * BS],
      [IoType.READ, 200 * BS, 2 * BS],
    ]);
  });

  it('LBA out of range (incl. the 64-bit extremes)', () => {
    const { lun, ch } = setup();
    for (const cdb of [rw10(READ10, BLOCKS, 1), rw10(READ10, BLOCKS - 1, 2), rw10(WRITE10, BLOCKS, 0), cdb16(0x88, 0xffffffff, 0xffffffff, 1), cdb16(0x88, 0x00200000, 0, 1), cdb16(0x88, 0, 10, 0xffffffff)]) {
      const e = exec(lun, cdb, { inBufs: [new Uint8Array(BS)], outBufs: [new Uint8Array(BS)] });
      expectSense(e.task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    }
    assert.equal(ch.ios.length, 0);
  });

  it('transfer length 0 succeeds without I/O', () => {
    const { lun, ch } = setup();
    const e = exec(lun, rw10(WRITE10, 3, 0), { outBufs: [new Uint8Array(BS)] });
    expectGood(e.task);
    assert.equal(e.task.dataTransferred, 0);
    assert.equal(e.task.residual, BS);
    assert.equal(ch.ios.length, 0);
  });

  it('more than the maximum transfer length (4 MiB) is refused', () => {
    // 8193 blocks on a 256-block disk is out of range first; a bigger disk shows the limit itself
    const { lun } = setup({ nullBdev: true });
    const e = exec(lun, [0xa8, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x01, 0, 0], { inBufs: [new Uint8Array(16)] });
    expectSense(e.task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    const large = new ScsiLun(scsiLunInfoFromBdev(new NullBdev('n', BS, 100000)), new NullChannel());
    const l = exec(large, [0xa8, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x01, 0, 0], { inBufs: [new Uint8Array(8193 * BS)] });
    expectSense(l.task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    expectGood(exec(large, [0xa8, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x00, 0, 0], { inBufs: [new Uint8Array(8192 * BS)] }).task);
  });

  it('more data-in buffer than the CDB asks: the CDB wins, the rest is residual and untouched', () => {
    const { lun, disk, ch } = setup();
    disk.set(pattern(2 * BS, 5), 10 * BS);
    const a = new Uint8Array(BS + 10);
    const b = new Uint8Array(BS * 2).fill(0xee);
    const r = exec(lun, rw10(READ10, 10, 2), { inBufs: [a, b] });
    expectGood(r.task);
    assert.equal(r.task.dataTransferred, 2 * BS);
    assert.equal(r.task.residual, 3 * BS + 10 - 2 * BS);
    assert.deepEqual(Buffer.concat([a, b.subarray(0, BS - 10)]), Buffer.from(pattern(2 * BS, 5)));
    assert.ok(b.subarray(BS - 10).every((x) => x === 0xee), 'bytes past the transfer untouched');
    assert.equal(ch.ios[0].length, 2 * BS);
    assert.equal(ch.ios[0].iovCount, 2);
    assert.notEqual(ch.lastIo?.iov, r.task.dataIn, 'a prefix view is used');
    assert.equal(ch.lastIo?.iov.bufs[1], b, 'the view points into the original buffer');
  });

  it('more data-out than the CDB asks: only the CDB blocks are written', () => {
    const { lun, disk } = setup();
    const data = pattern(3 * BS, 2);
    const w = exec(lun, rw10(WRITE10, 0, 2), { outBufs: [data] });
    expectGood(w.task);
    assert.equal(w.task.dataTransferred, 2 * BS);
    assert.equal(w.task.residual, BS);
    assert.deepEqual(disk.subarray(0, 2 * BS), data.subarray(0, 2 * BS));
    assert.ok(disk.subarray(2 * BS, 3 * BS).every((x) => x === 0));
  });

  it('less buffer than the CDB asks: INVALID FIELD IN CDB, no I/O', () => {
    const { lun, disk, ch } = setup();
    const w = exec(lun, rw10(WRITE10, 0, 2), { outBufs: [pattern(BS, 1)] });
    expectSense(w.task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    assert.equal(w.task.residual, BS);
    assert.ok(disk.subarray(0, BS).every((x) => x === 0));
    const r = exec(lun, rw10(READ10, 0, 2), { inBufs: [new Uint8Array(BS)] });
    expectSense(r.task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    // a READ whose buffers came as data-out (wrong direction) has no data-in at all
    const wrong = exec(lun, rw10(READ10, 0, 1), { outBufs: [new Uint8Array(BS)] });
    expectSense(wrong.task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    assert.equal(ch.ios.length, 0);
  });

  it('RDPROTECT / WRPROTECT are refused (no protection information)', () => {
    const { lun } = setup();
    expectSense(exec(lun, rw10(READ10, 0, 1, 0x20), { inBufs: [new Uint8Array(BS)] }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  it('read-only LUN: writes get DATA PROTECT / WRITE PROTECTED, reads work', () => {
    const { lun, ch, disk } = setup({ readonly: true });
    const writes = [
      exec(lun, rw10(WRITE10, 0, 1), { outBufs: [pattern(BS, 1)] }),
      exec(lun, [0x0a, 0, 0, 0, 1, 0], { outBufs: [pattern(BS, 1)] }),
      exec(lun, cdb16(0x8a, 0, 0, 1), { outBufs: [pattern(BS, 1)] }),
      exec(lun, [0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], { outBufs: [pattern(BS, 1)] }),
      exec(lun, [0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0], { outBufs: [pattern(BS, 1)] }),
      exec(lun, cdb16(0x93, 0, 0, 1, 0x08), { outBufs: [new Uint8Array(BS)] }),
      exec(lun, [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { outBufs: [new Uint8Array(24)] }),
    ];
    for (const w of writes) expectSense(w.task, SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
    assert.ok(disk.every((x) => x === 0));
    expectGood(exec(lun, rw10(READ10, 0, 1), { inBufs: [new Uint8Array(BS)] }).task);
    expectGood(exec(lun, [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).task);
    assert.deepEqual(ch.ios.map((i) => i.type), [IoType.READ, IoType.FLUSH]);
  });
});

describe('VERIFY and SYNCHRONIZE CACHE', () => {
  it('VERIFY with BYTCHK=0 checks the range only', () => {
    const { lun, ch } = setup();
    expectGood(exec(lun, [0x2f, 0, 0, 0, 0, 10, 0, 0, 5, 0]).task);
    expectGood(exec(lun, cdb16(0x8f, 0, BLOCKS - 1, 1)).task);
    expectGood(exec(lun, [0xaf, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]).task);
    expectSense(exec(lun, [0x2f, 0, 0, 0, 0, 0xff, 0, 0, 2, 0]).task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    expectSense(exec(lun, [0x2f, 0x02, 0, 0, 0, 0, 0, 0, 1, 0]).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    assert.equal(ch.ios.length, 0);
  });

  it('SYNCHRONIZE CACHE flushes the range; 0 blocks means to the end', () => {
    const { lun, ch } = setup();
    expectGood(exec(lun, [0x35, 0, 0, 0, 0, 16, 0, 0, 4, 0]).task);
    expectGood(exec(lun, [0x35, 0, 0, 0, 0, 16, 0, 0, 0, 0]).task);
    expectGood(exec(lun, cdb16(0x91, 0, 0, 0)).task);
    assert.deepEqual(ch.ios.map((i) => [i.type, i.offset, i.length]), [
      [IoType.FLUSH, 16 * BS, 4 * BS],
      [IoType.FLUSH, 16 * BS, (BLOCKS - 16) * BS],
      [IoType.FLUSH, 0, BLOCKS * BS],
    ]);
    expectSense(exec(lun, [0x35, 0, 0, 0, 1, 0, 0, 0, 0, 0]).task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    expectSense(exec(lun, [0x35, 0, 0, 0, 0, 0xff, 0, 0, 2, 0]).task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
  });
});

function unmapList(descs: Array<[number, number]>, opts: { bddl?: number } = {}): Uint8Array {
  const buf = new Uint8Array(8 + descs.length * 16);
  const dv = new DataView(buf.buffer);
  dv.setUint16(0, 6 + descs.length * 16);
  dv.setUint16(2, opts.bddl ?? descs.length * 16);
  descs.forEach(([lba, n], i) => {
    dv.setBigUint64(8 + i * 16, BigInt(lba));
    dv.setUint32(16 + i * 16, n);
  });
  return buf;
}
const unmapCdb = (pllen: number, anchor = 0) => [0x42, anchor, 0, 0, 0, 0, 0, pllen >> 8, pllen & 0xff, 0];

describe('UNMAP', () => {
  it('zeroes exactly the described ranges of the malloc bdev', () => {
    const { lun, disk, ch } = setup();
    disk.fill(0xab);
    const list = unmapList([
      [4, 2],
      [100, 0],
      [20, 3],
    ]);
    const e = exec(lun, unmapCdb(list.length), { outBufs: [list.subarray(0, 11), list.subarray(11)] });
    expectGood(e.task);
    assert.equal(e.task.dataTransferred, list.length);
    assert.equal(e.task.residual, 0);
    const zeroed = (lba: number) => disk.subarray(lba * BS, (lba + 1) * BS).every((x) => x === 0);
    assert.deepEqual(
      Array.from({ length: 30 }, (_, i) => zeroed(i)),
      Array.from({ length: 30 }, (_, i) => (i >= 4 && i < 6) || (i >= 20 && i < 23)),
    );
    assert.deepEqual(ch.ios.map((i) => [i.type, i.offset, i.length]), [
      [IoType.UNMAP, 4 * BS, 2 * BS],
      [IoType.UNMAP, 20 * BS, 3 * BS],
    ]);
  });

  it('a descriptor out of range fails the command before anything is unmapped', () => {
    const { lun, disk, ch } = setup();
    disk.fill(0xab);
    const list = unmapList([
      [0, 1],
      [BLOCKS - 1, 2],
    ]);
    expectSense(exec(lun, unmapCdb(list.length), { outBufs: [list] }).task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    assert.equal(ch.ios.length, 0);
    assert.ok(disk.every((x) => x === 0xab));
  });

  it('parameter list checks', () => {
    const { lun, ch } = setup();
    // 0 < PARAMETER LIST LENGTH < 8
    expectSense(exec(lun, unmapCdb(4), { outBufs: [new Uint8Array(4)] }).task, SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
    // data-out shorter than the parameter list length
    const list = unmapList([[0, 1]]);
    expectSense(exec(lun, unmapCdb(list.length), { outBufs: [list.subarray(0, 20)] }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    // too many descriptors
    const many = unmapList(Array.from({ length: 257 }, (_, i) => [i % BLOCKS, 0] as [number, number]));
    expectSense(exec(lun, unmapCdb(many.length), { outBufs: [many] }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    // ANCHOR
    expectSense(exec(lun, unmapCdb(list.length, 1), { outBufs: [list] }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    assert.equal(ch.ios.length, 0);
    // too many LBAs in total
    const lbas = unmapList([
      [0, 4194304],
      [0, 1],
    ]);
    const huge = new ScsiLun({ ...scsiLunInfoFromBdev(new NullBdev('n', BS, 2 ** 24)), supportsUnmap: true }, new NullChannel());
    expectSense(exec(huge, unmapCdb(lbas.length), { outBufs: [lbas] }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
  });

  it('a descriptor data length beyond the list is clamped; a length of 0 does nothing', () => {
    const { lun, ch } = setup();
    const list = unmapList([[3, 1]], { bddl: 64 });
    expectGood(exec(lun, unmapCdb(list.length), { outBufs: [list] }).task);
    assert.equal(ch.ios.length, 1);
    expectGood(exec(lun, unmapCdb(0)).task);
    assert.equal(ch.ios.length, 1);
  });

  it('without bdev unmap support UNMAP is not a supported command', () => {
    const { lun } = setup({ nullBdev: true });
    const list = unmapList([[0, 1]]);
    expectSense(exec(lun, unmapCdb(list.length), { outBufs: [list] }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
  });
});

const ws10 = (lba: number, blocks: number, flags = 0) => [0x41, flags, (lba >>> 24) & 0xff, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff, 0, blocks >> 8, blocks & 0xff, 0];

describe('WRITE SAME', () => {
  it('writes a non-zero block repeatedly (block split over segments, several bdev writes)', () => {
    const { lun, disk, ch } = setup();
    const block = pattern(BS, 11);
    const blocks = 200;
    const e = exec(lun, ws10(10, blocks), { outBufs: [block.subarray(0, 100), block.subarray(100, 300), block.subarray(300)] });
    expectGood(e.task);
    assert.equal(e.task.dataTransferred, BS);
    assert.equal(e.task.residual, 0);
    for (let i = 0; i < blocks; i++) assert.deepEqual(disk.subarray((10 + i) * BS, (11 + i) * BS), block, `block ${i}`);
    assert.ok(disk.subarray(0, 10 * BS).every((x) => x === 0));
    assert.ok(disk.subarray(210 * BS).every((x) => x === 0));
    // 3 segments per block, 256-entry helper list: 85 blocks per write
    assert.deepEqual(ch.ios.map((i) => [i.type, i.offset / BS, i.length / BS, i.iovCount]), [
      [IoType.WRITE, 10, 85, 255],
      [IoType.WRITE, 95, 85, 255],
      [IoType.WRITE, 180, 30, 90],
    ]);
  });

  it('data-out longer than one block: only the first block is repeated, the rest is residual', () => {
    const { lun, disk } = setup();
    const block = pattern(BS, 21);
    const trailing = new Uint8Array(300).fill(0x77);
    const e = exec(lun, ws10(2, 3), { outBufs: [block.subarray(0, 400), block.subarray(400), trailing] });
    expectGood(e.task);
    assert.equal(e.task.dataTransferred, BS);
    assert.equal(e.task.residual, 300);
    for (let i = 2; i < 5; i++) assert.deepEqual(disk.subarray(i * BS, (i + 1) * BS), block, `block ${i}`);
    assert.ok(disk.subarray(5 * BS).every((x) => x === 0));
  });

  it('an all-zero block becomes one WRITE ZEROES', () => {
    const { lun, disk, ch } = setup();
    disk.fill(0xab);
    expectGood(exec(lun, ws10(3, 5), { outBufs: [new Uint8Array(BS)] }).task);
    assert.deepEqual(ch.ios.map((i) => [i.type, i.offset, i.length]), [[IoType.WRITE_ZEROES, 3 * BS, 5 * BS]]);
    assert.ok(disk.subarray(3 * BS, 8 * BS).every((x) => x === 0));
    assert.equal(disk[8 * BS], 0xab);
  });

  it('without bdev WRITE ZEROES, zero blocks (and NDOB) are written as repeated writes', () => {
    const bdev = new MallocBdev('m', BS, 64 * BS);
    const ch = new TestChannel(new MallocChannel(bdev.channelSpec()));
    const info = { ...scsiLunInfoFromBdev(bdev), supportsWriteZeroes: false, supportsUnmap: false };
    const lun = new ScsiLun(info, ch);
    const disk = new Uint8Array(bdev.buffer).fill(0xab);
    expectGood(exec(lun, ws10(1, 3, 0x08), { outBufs: [new Uint8Array(BS)] }).task);
    const ndob = exec(lun, cdb16(0x93, 0, 10, 4, 0x01));
    expectGood(ndob.task);
    assert.equal(ndob.task.dataTransferred, 0);
    assert.deepEqual(ch.ios.map((i) => [i.type, i.offset / BS, i.length / BS]), [
      [IoType.WRITE, 1, 3],
      [IoType.WRITE, 10, 4],
    ]);
    assert.ok(disk.subarray(BS, 4 * BS).every((x) => x === 0));
    assert.ok(disk.subarray(10 * BS, 14 * BS).every((x) => x === 0));
    assert.equal(disk[4 * BS], 0xab);
    assert.equal(disk[14 * BS], 0xab);
  });

  it('the UNMAP bit unmaps the range (WRITE SAME 16)', () => {
    const { lun, disk, ch } = setup();
    disk.fill(0xab);
    const e = exec(lun, cdb16(0x93, 0, 7, 9, 0x08), { outBufs: [new Uint8Array(BS)] });
    expectGood(e.task);
    assert.equal(e.task.dataTransferred, BS);
    assert.deepEqual(ch.ios.map((i) => [i.type, i.offset, i.length]), [[IoType.UNMAP, 7 * BS, 9 * BS]]);
    assert.ok(disk.subarray(7 * BS, 16 * BS).every((x) => x === 0));
    assert.equal(disk[16 * BS], 0xab);
    assert.equal(disk[7 * BS - 1], 0xab);
  });

  it('without bdev unmap the UNMAP bit falls back to writing (null bdev: WRITE ZEROES)', () => {
    const { lun, ch } = setup({ nullBdev: true });
    expectGood(exec(lun, ws10(0, 4, 0x08), { outBufs: [new Uint8Array(BS)] }).task);
    assert.deepEqual(ch.ios.map((i) => i.type), [IoType.WRITE_ZEROES]);
  });

  it('NDOB writes zeros without data-out', () => {
    const { lun, disk, ch } = setup();
    disk.fill(0xab);
    const e = exec(lun, cdb16(0x93, 0, 1, 2, 0x01));
    expectGood(e.task);
    assert.equal(e.task.dataTransferred, 0);
    assert.deepEqual(ch.ios.map((i) => i.type), [IoType.WRITE_ZEROES]);
    assert.ok(disk.subarray(BS, 3 * BS).every((x) => x === 0));
    // NDOB does not exist in WRITE SAME (10): bit 0 is ignored there, so data-out is required
    expectSense(exec(lun, ws10(1, 2, 0x01)).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  it('errors: zero blocks (WSNZ), missing data-out, out of range, unsupported flags', () => {
    const { lun, ch } = setup();
    const blk = [pattern(BS, 1)];
    expectSense(exec(lun, ws10(0, 0), { outBufs: blk }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    expectSense(exec(lun, ws10(0, 1), { outBufs: [new Uint8Array(BS - 1)] }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    expectSense(exec(lun, ws10(BLOCKS - 1, 2), { outBufs: blk }).task, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
    for (const flags of [0x10, 0x04, 0x02, 0x20]) expectSense(exec(lun, ws10(0, 1, flags), { outBufs: blk }).task, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    assert.equal(ch.ios.length, 0);
  });

  it('a failing write stops the remaining writes', () => {
    const { lun, ch } = setup();
    ch.script.set(1, 'fail');
    const e = exec(lun, ws10(0, 200), { outBufs: [pattern(BS, 1).subarray(0, 256), pattern(BS, 1).subarray(256)] });
    expectSense(e.task, SenseKey.ABORTED_COMMAND, Asc.NO_ADDITIONAL_SENSE);
    assert.equal(ch.ios.length, 2);
  });
});

describe('channel completion modes', () => {
  it('asynchronous completion: onComplete once, after submit returned', async () => {
    const { lun, ch, disk } = setup();
    ch.mode = 'async';
    const data = pattern(2 * BS, 4);
    const w = exec(lun, rw10(WRITE10, 1, 2), { outBufs: [data] });
    assert.equal(w.calls(), 0);
    await w.done;
    expectGood(w.task);
    assert.deepEqual(disk.subarray(BS, 3 * BS), data);
    const ws = exec(lun, ws10(50, 200), { outBufs: [data.subarray(0, 300), data.subarray(300, BS)] });
    assert.equal(ws.calls(), 0);
    await ws.done;
    expectGood(ws.task);
    assert.equal(ws.calls(), 1);
    assert.deepEqual(disk.subarray(249 * BS, 250 * BS), data.subarray(0, BS));
    await new Promise((r) => setImmediate(r));
    assert.equal(w.calls(), 1);
    assert.equal(lun.inFlight, 0);
  });

  it('a task can be resubmitted from inside its own synchronous completion', () => {
    const { lun } = setup();
    const task = new ScsiTask();
    const buf = new Uint8Array(BS);
    let rounds = 0;
    const statuses: number[] = [];
    task.onComplete = (t) => {
      statuses.push(t.status);
      if (++rounds < 1000) lun.execute(t);
    };
    task.setCdb(rw10(READ10, 0, 1));
    task.dataIn.push(buf, 0, BS);
    lun.execute(task);
    assert.equal(rounds, 1000);
    assert.ok(statuses.every((s) => s === ScsiStatus.GOOD));
    assert.equal(lun.inFlight, 0);
  });

  it('NOMEM: the bdev layer resubmits the request on a later event-loop turn; the LUN only sees success', async () => {
    const { lun, ch, layer, disk, statuses, bdev } = setup({ layer: true });
    assert.ok(layer);
    const turn = () => new Promise<void>((r) => setImmediate(r));
    ch.script.set(0, 'nomem');
    ch.script.set(1, 'nomem');
    const data = pattern(BS, 8);
    const w = exec(lun, rw10(WRITE10, 9, 1), { outBufs: [data] });
    assert.equal(w.calls(), 0);
    assert.equal(layer.waiting, 1, 'refused: waits in the layer');
    assert.equal(ch.ios.length, 1);
    await turn();
    assert.equal(w.calls(), 0);
    assert.equal(ch.ios.length, 2, 'retried once, refused again');
    assert.equal(layer.waiting, 1);
    await turn();
    assert.equal(w.calls(), 1);
    expectGood(w.task);
    assert.deepEqual(disk.subarray(9 * BS, 10 * BS), data);
    assert.equal(ch.ios.length, 3);
    assert.equal(layer.waiting, 0);
    assert.deepEqual(statuses, [IoStatus.SUCCESS], 'the LUN never saw NOMEM');
    assert.equal(layerOf(bdev).iostat.device().num_write_ops, 1);
    assert.equal(lun.inFlight, 0);
  });

  it('NOMEM through the bdev layer (setImmediate retry), asynchronous channel', async () => {
    const { lun, ch, statuses } = setup({ layer: true });
    ch.mode = 'async';
    ch.script.set(0, 'nomem');
    const r = exec(lun, rw10(READ10, 0, 1), { inBufs: [new Uint8Array(BS)] });
    await r.done;
    expectGood(r.task);
    assert.equal(ch.ios.length, 2);
    assert.deepEqual(statuses, [IoStatus.SUCCESS]);
  });

  it('NOMEM: tasks started while one waits queue behind it in the layer and complete in order', async () => {
    const { lun, ch, layer, disk, statuses } = setup({ layer: true });
    assert.ok(layer);
    ch.script.set(0, 'nomem');
    const order: number[] = [];
    const tasks = [0, 1, 2].map((i) => {
      const e = exec(lun, rw10(WRITE10, 20 + i, 1), { outBufs: [pattern(BS, 20 + i)] });
      void e.done.then(() => order.push(i));
      return e;
    });
    assert.equal(ch.ios.length, 1, 'the later tasks did not overtake the refused one');
    assert.equal(layer.waiting, 3);
    await Promise.all(tasks.map((t) => t.done));
    assert.deepEqual(order, [0, 1, 2]);
    for (const t of tasks) expectGood(t.task);
    assert.deepEqual(
      ch.ios.map((io) => io.offset),
      [20, 20, 21, 22].map((lba) => lba * BS),
    );
    for (let i = 0; i < 3; i++) assert.deepEqual(disk.subarray((20 + i) * BS, (21 + i) * BS), pattern(BS, 20 + i));
    assert.deepEqual(statuses, [IoStatus.SUCCESS, IoStatus.SUCCESS, IoStatus.SUCCESS]);
  });

  it('bdev failure: ABORTED COMMAND as SPDK reports it by default', () => {
    const { lun, ch } = setup();
    ch.script.set(0, 'fail');
    const r = exec(lun, rw10(READ10, 0, 1), { inBufs: [new Uint8Array(BS)] });
    expectSense(r.task, SenseKey.ABORTED_COMMAND, Asc.NO_ADDITIONAL_SENSE);
    assert.equal(r.task.residual, BS);
  });

  it("bdev failure with ioErrorSense 'medium-error': unrecovered read error / write error", () => {
    const { lun, ch } = setup({ opts: { ioErrorSense: 'medium-error' } });
    ch.script.set(0, 'fail');
    ch.script.set(1, 'fail');
    ch.script.set(2, 'fail');
    expectSense(exec(lun, rw10(READ10, 0, 1), { inBufs: [new Uint8Array(BS)] }).task, SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR);
    expectSense(exec(lun, rw10(WRITE10, 0, 1), { outBufs: [new Uint8Array(BS)] }).task, SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR);
    expectSense(exec(lun, [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).task, SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR);
  });

  it('a channel that throws in submit yields CHECK CONDITION, not an exception', () => {
    const { lun, ch } = setup();
    ch.script.set(0, 'throw');
    const r = exec(lun, rw10(READ10, 0, 1), { inBufs: [new Uint8Array(BS)] });
    assert.equal(r.calls(), 1);
    expectSense(r.task, SenseKey.ABORTED_COMMAND, Asc.NO_ADDITIONAL_SENSE);
    assert.equal(lun.inFlight, 0);
  });

  it('a channel completing twice does not complete the task twice', () => {
    const inner = new MallocChannel(new MallocBdev('m', BS, 8 * BS).channelSpec());
    const twice: BdevChannel = {
      submit(io) {
        inner.submit(io);
        io.complete(IoStatus.FAILED);
      },
      close() {},
    };
    const lun = new ScsiLun(scsiLunInfoFromBdev(new MallocBdev('m', BS, 8 * BS)), twice);
    const r = exec(lun, rw10(READ10, 0, 1), { inBufs: [new Uint8Array(BS)] });
    assert.equal(r.calls(), 1);
    expectGood(r.task);
  });

  it('executing a task that is still in flight is a programming error', () => {
    const { lun, ch } = setup();
    ch.mode = 'hold';
    const r = exec(lun, rw10(READ10, 0, 1), { inBufs: [new Uint8Array(BS)] });
    assert.throws(() => lun.execute(r.task), /already executing/);
    ch.release();
    assert.equal(r.calls(), 1);
  });
});
