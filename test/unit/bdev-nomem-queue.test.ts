// NomemQueue (src/bdev/nomem-queue.ts): the per-channel FIFO of I/O a backend refused with NOMEM,
// owned by the bdev layer channel (src/bdev/layer-channel.ts). Driven here by a model device over
// a scripted bdev: order, the SPDK retry threshold, the event-loop fallback when nothing is
// outstanding, admission behind waiting I/O, re-entrancy, removal; and, end to end through the
// real BlkHandler over a LayerChannel, a virtio-blk queue deeper than the bdev's that completes
// every request OK, in order (the device never sees NOMEM).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { type BdevIo, IoStatus } from '../../src/bdev/io.js';
import { LayerChannel } from '../../src/bdev/layer-channel.js';
import { MallocBdev, MallocChannel } from '../../src/bdev/modules/malloc/malloc.js';
import { NOMEM_THRESHOLD_COUNT, NomemQueue, type NomemWaiter } from '../../src/bdev/nomem-queue.js';
import { BlkHandler } from '../../src/devices/blk/blk-handler.js';
import { type BlkDeviceSpec, BlkReqType, BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Chain, ChainError, ChainWalker } from '../../src/virtio/desc-chain.js';
import type { QueueRunner } from '../../src/virtio/queue-runner.js';
import { layerOf, openSpecOf } from './helpers/open-spec.js';

class Io implements NomemWaiter<Io> {
  nextRetry: Io | null = null;
  retryQueued = false;
  constructor(readonly id: number) {}
}

/**
 * A device over a bdev that takes `room` I/O at a time: beyond that it answers NOMEM inside
 * submit (as the uring bdev's full wait ring, or the error bdev's injection); `sync` completes the
 * accepted ones inside submit too, else they stay at the bdev until release().
 */
class Model {
  readonly q: NomemQueue<Io>;
  readonly scheduled: Array<() => void> = [];
  /** Every submission the bdev saw, in order (refused ones included). */
  readonly seen: number[] = [];
  readonly atBdev: Io[] = [];
  readonly done: number[] = [];
  room: number;
  sync = false;
  /** Makes the next N submissions NOMEM whatever the room. */
  refuseNext = 0;

  constructor(room: number) {
    this.room = room;
    this.q = new NomemQueue<Io>(
      (io) => this.submit(io),
      (fn) => this.scheduled.push(fn),
    );
  }

  submit(io: Io): void {
    if (!this.q.admit(io)) return;
    this.seen.push(io.id);
    if (this.refuseNext > 0 || this.atBdev.length >= this.room) {
      if (this.refuseNext > 0) this.refuseNext--;
      this.complete(io, IoStatus.NOMEM);
      return;
    }
    if (this.sync) this.complete(io, IoStatus.SUCCESS);
    else this.atBdev.push(io);
  }

  complete(io: Io, status: IoStatus): void {
    if (this.q.finished(io, status)) return;
    this.done.push(io.id);
    this.q.kick();
  }

  /** Completes the oldest I/O at the bdev. */
  release(status: IoStatus = IoStatus.SUCCESS): void {
    const io = this.atBdev.shift();
    assert.ok(io, 'an I/O is at the bdev');
    this.complete(io, status);
  }

  runScheduled(): void {
    for (const fn of this.scheduled.splice(0)) fn();
  }
}

const ios = (n: number) => Array.from({ length: n }, (_, i) => new Io(i));

describe('NomemQueue', () => {
  it('refused I/O waits and goes again, oldest first, as the bdev makes room; new I/O queues behind', () => {
    const m = new Model(2);
    const all = ios(6);
    for (const io of all) m.submit(io);
    // 0 and 1 at the bdev; 2 refused; 3, 4, 5 queued behind 2 without reaching the bdev.
    assert.deepEqual(m.seen, [0, 1, 2]);
    assert.equal(m.q.length, 4);
    assert.equal(m.q.inFlight, 2);
    assert.deepEqual(m.scheduled.length, 0, 'I/O outstanding: its completion retries, no fallback');
    assert.ok(all.slice(2).every((io) => io.retryQueued));
    m.release();
    // One slot free: 2 goes, 3 is refused and keeps its place at the head.
    assert.deepEqual(m.seen, [0, 1, 2, 2, 3]);
    assert.equal(m.q.length, 3);
    m.release();
    m.release();
    m.release();
    m.release();
    m.release();
    assert.equal(m.q.length, 0);
    assert.equal(m.atBdev.length, 0);
    assert.deepEqual(m.done, [0, 1, 2, 3, 4, 5], 'completed in submission order');
    // Every I/O reached the bdev in order; each refusal is retried before anything younger.
    const accepted = m.seen.filter((id, i) => m.seen.indexOf(id, i + 1) < 0);
    assert.deepEqual(accepted, [0, 1, 2, 3, 4, 5]);
    assert.equal(m.q.inFlight, 0);
    assert.ok(all.every((io) => !io.retryQueued && io.nextRetry === null));
  });

  it("waits for SPDK's threshold (half the outstanding I/O, or NOMEM_THRESHOLD_COUNT fewer) before retrying", () => {
    const m = new Model(20);
    for (const io of ios(21)) m.submit(io);
    // 20 outstanding at the NOMEM: retry once at most max(10, 20 - 8) = 12 are.
    assert.equal(m.q.inFlight, 20);
    assert.equal(m.q.length, 1);
    const before = m.seen.length;
    for (let i = 0; i < 20 - (20 - NOMEM_THRESHOLD_COUNT) - 1; i++) m.release();
    assert.equal(m.q.inFlight, 13);
    assert.equal(m.q.kick(), 0);
    assert.equal(m.seen.length, before, 'no retry above the threshold');
    m.release();
    assert.equal(m.q.length, 0, 'retried at the threshold');
    assert.equal(m.seen.at(-1), 20);

    // With few outstanding the threshold is half of them.
    const s = new Model(4);
    for (const io of ios(5)) s.submit(io);
    s.release();
    assert.equal(s.q.length, 1, '3 outstanding > 2');
    s.release();
    assert.equal(s.q.length, 0, '2 outstanding: retried');
  });

  it('with nothing outstanding at the NOMEM, the retry is scheduled once on the event loop', () => {
    const m = new Model(0);
    m.sync = true;
    m.refuseNext = 3;
    m.room = 1;
    for (const io of ios(3)) m.submit(io);
    assert.deepEqual(m.seen, [0], 'refused inside submit; the others queue behind it');
    assert.equal(m.scheduled.length, 1, 'one fallback for the whole queue');
    m.runScheduled();
    assert.deepEqual(m.seen, [0, 0], 'refused again: back at the head, the pass stops');
    assert.equal(m.scheduled.length, 1, 'and another turn is scheduled');
    m.runScheduled();
    m.runScheduled();
    assert.deepEqual(m.seen, [0, 0, 0, 0, 1, 2]);
    assert.deepEqual(m.done, [0, 1, 2]);
    assert.equal(m.scheduled.length, 0);
    m.runScheduled(); // a stale schedule finds nothing to do
    assert.equal(m.q.run(), 0);
  });

  it('kick() returns how many went to the bdev; a poll with nothing waiting costs nothing', () => {
    const m = new Model(1);
    for (const io of ios(3)) m.submit(io);
    assert.equal(m.q.kick(), 0, 'the bdev is still full');
    const first = m.atBdev.shift() as Io;
    assert.equal(m.q.finished(first, IoStatus.SUCCESS), false); // a completion, without its kick
    assert.equal(m.q.kick(), 1, 'one accepted, the next refused');
    assert.equal(m.q.length, 1);
    const empty = new Model(1);
    assert.equal(empty.q.kick(), 0);
    assert.equal(empty.q.run(), 0);
  });

  it('run() is not re-entered from completions its resubmissions cause', () => {
    const order: string[] = [];
    const q: NomemQueue<Io> = new NomemQueue<Io>(
      (io) => {
        order.push(`submit ${io.id}`);
        assert.ok(q.admit(io), 'the I/O being retried is admitted');
        // completes inside submit, and its completion kicks the queue
        assert.equal(q.finished(io, IoStatus.SUCCESS), false);
        assert.equal(q.kick(), 0, 'nested kick does nothing');
        assert.equal(q.run(), 0, 'nested run does nothing');
        order.push(`done ${io.id}`);
      },
      () => {},
    );
    const [a, b, c] = ios(3);
    assert.ok(q.admit(a));
    q.finished(a, IoStatus.NOMEM);
    assert.equal(q.admit(b), false);
    assert.equal(q.admit(c), false);
    assert.equal(q.run(), 3);
    assert.deepEqual(order, ['submit 0', 'done 0', 'submit 1', 'done 1', 'submit 2', 'done 2']);
    assert.equal(q.inFlight, 0);
  });

  it('an I/O refused later (asynchronously) joins the tail; failures and successes are not queued', () => {
    const q = new NomemQueue<Io>(
      () => {},
      () => {},
    );
    const [a, b, c, d] = ios(4);
    for (const io of [a, b, c, d]) assert.ok(q.admit(io));
    assert.equal(q.finished(a, IoStatus.FAILED), false);
    assert.equal(q.finished(b, IoStatus.SUCCESS), false);
    assert.equal(q.finished(d, IoStatus.NOMEM), true);
    assert.equal(q.finished(c, IoStatus.NOMEM), true);
    assert.equal(q.length, 2);
    assert.equal(q.inFlight, 0);
    // the same on a queue that records the retry order
    const got: number[] = [];
    const rec = new NomemQueue<Io>(
      (io) => got.push(io.id),
      () => {},
    );
    for (const io of [a, b, c, d]) assert.ok(rec.admit(io));
    rec.finished(d, IoStatus.NOMEM);
    rec.finished(c, IoStatus.NOMEM);
    rec.run();
    assert.deepEqual(got, [3, 2], 'in the order they were refused');
  });

  it('remove() takes a waiting I/O out from anywhere in the queue; clear() empties it', () => {
    const got: number[] = [];
    const q = new NomemQueue<Io>(
      (io) => got.push(io.id),
      () => {},
    );
    const all = ios(5);
    assert.ok(q.admit(all[0]));
    q.finished(all[0], IoStatus.NOMEM);
    for (const io of all.slice(1)) assert.equal(q.admit(io), false);
    assert.equal(q.remove(all[2]), true);
    assert.equal(q.remove(all[0]), true);
    assert.equal(q.remove(all[4]), true);
    assert.equal(q.remove(all[4]), false, 'not waiting any more');
    assert.equal(all[4].retryQueued, false);
    assert.equal(q.length, 2);
    q.run();
    assert.deepEqual(got, [1, 3]);
    // the tail was fixed up: new waiters link after the survivors
    for (const io of all) assert.equal(q.admit(io), true);
    q.finished(all[1], IoStatus.NOMEM);
    q.finished(all[3], IoStatus.NOMEM);
    assert.deepEqual(
      q.clear().map((io) => io.id),
      [1, 3],
    );
    assert.equal(q.length, 0);
    assert.ok(all.every((io) => !io.retryQueued && io.nextRetry === null));
  });

  it('keeps no per-I/O state outside the waiting objects: a long NOMEM storm neither leaks nor reorders', () => {
    const m = new Model(3);
    const all = ios(64);
    let next = 0;
    for (let round = 0; round < 2000; round++) {
      while (next < all.length && m.q.length + m.atBdev.length < all.length) m.submit(all[next++]);
      if (m.atBdev.length > 0) m.release();
      else m.runScheduled();
      if (next === all.length && m.q.length === 0 && m.atBdev.length === 0) {
        assert.deepEqual(m.done, all.map((io) => io.id));
        m.done.length = 0;
        m.seen.length = 0;
        next = 0;
      }
    }
    while (m.atBdev.length > 0 || m.q.length > 0) {
      if (m.atBdev.length > 0) m.release();
      else m.runScheduled();
    }
    assert.equal(m.q.inFlight, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// virtio-blk: the real handler and requests over a bdev with a tiny queue, through the bdev layer
// (the LayerChannel a BlkDevice opens) whose NomemQueue retries what the bdev refuses.

const QUEUE_SIZE = 64;
const REQUESTS = 32;
const MEM = 1 << 20;
const GPA = 0x100000;

/** A malloc channel that takes `depth` I/O at a time, completes them on a later tick, and says NOMEM beyond. */
class TinyQueueChannel implements BdevChannel {
  private readonly inner: MallocChannel;
  private inFlight = 0;
  nomems = 0;
  /** Offsets in the order the bdev accepted them. */
  readonly order: number[] = [];

  constructor(
    bdev: MallocBdev,
    private readonly depth: number,
  ) {
    this.inner = new MallocChannel(bdev.channelSpec());
  }

  submit(io: BdevIo): void {
    if (this.inFlight >= this.depth) {
      this.nomems++;
      io.complete(IoStatus.NOMEM);
      return;
    }
    this.inFlight++;
    this.order.push(io.offset);
    setImmediate(() => {
      this.inFlight--;
      this.inner.submit(io);
    });
  }

  close(): void {}
}

describe('NomemQueue in the bdev layer under virtio-blk (BlkHandler over a LayerChannel)', () => {
  it('a queue of 32 writes then 32 reads over a bdev of depth 2 completes all OK, in order, with the data', async () => {
    const buffer = new SharedArrayBuffer(MEM);
    const u8 = new Uint8Array(buffer);
    const view = new DataView(buffer);
    const mem = new GuestMemory([{ gpa: GPA, size: MEM, uva: 0x7f0000000000, base: 0, buffer }]);
    const bdev = new MallocBdev('M', 512, 256 * 1024);
    const channel = new TinyQueueChannel(bdev, 2);
    const spec: BlkDeviceSpec = {
      kind: 'blk',
      name: 'nomem',
      bdev: openSpecOf(bdev),
      readonly: false,
      blockSize: 512,
      capacityBytes: 256 * 1024,
      serial: 'nomem',
      segMax: 126,
      maxDiscardSectors: 0x400000,
      maxWriteZeroesSectors: 0x400000,
      unmap: false,
      writeZeroes: false,
    };
    const completions: Array<[number, number]> = [];
    const runner = { queue: { size: QUEUE_SIZE }, complete: (head: number, len: number) => completions.push([head, len]) } as unknown as QueueRunner;
    const layer = new LayerChannel(channel, layerOf(bdev).share);
    const handler = new BlkHandler(runner, layer, spec, () => {});
    const walker = new ChainWalker(mem, false);
    const table = new Uint32Array(3 * REQUESTS * 4);
    const tview = new DataView(table.buffer);

    // Request i: header at 4 KiB * i, 4 KiB data at 256 KiB + 4 KiB * i, status byte after the headers.
    const hdr = (i: number) => 4096 * i;
    const data = (i: number) => 256 * 1024 + 4096 * i;
    const status = (i: number) => 128 * 1024 + i;
    // a permutation of 32 distinct 4 KiB blocks
    const sectorOf = (i: number) => ((i * 5) % 32) * 8;
    const fill = (i: number, gen: number) => {
      for (let k = 0; k < 4096; k++) u8[data(i) + k] = (i * 31 + k * 7 + gen) & 0xff;
    };
    async function wave(type: number, gen: number): Promise<void> {
      completions.length = 0;
      const chains: Chain[] = [];
      for (let i = 0; i < REQUESTS; i++) {
        view.setUint32(hdr(i), type, true);
        view.setUint32(hdr(i) + 4, 0, true);
        view.setBigUint64(hdr(i) + 8, BigInt(sectorOf(i)), true);
        u8[status(i)] = 0xff;
        if (type === BlkReqType.OUT) fill(i, gen);
        else u8.fill(0, data(i), data(i) + 4096);
        const d = 3 * i;
        const desc = (n: number, addr: number, len: number, flags: number) => {
          tview.setBigUint64((d + n) * 16, BigInt(GPA + addr), true);
          tview.setUint32((d + n) * 16 + 8, len, true);
          tview.setUint16((d + n) * 16 + 12, flags, true);
          tview.setUint16((d + n) * 16 + 14, d + n + 1, true);
        };
        desc(0, hdr(i), 16, 1);
        desc(1, data(i), 4096, 1 | (type === BlkReqType.IN ? 2 : 0));
        desc(2, status(i), 1, 2);
        const chain = new Chain(134);
        assert.equal(walker.walk(table, 0, 3 * REQUESTS, d, chain), ChainError.OK);
        chains.push(chain);
      }
      for (let i = 0; i < REQUESTS; i++) handler.handle(i, chains[i]); // ring slot i, its chain at descriptor 3i
      for (let n = 0; n < 1000 && completions.length < REQUESTS; n++) await tick();
      assert.equal(completions.length, REQUESTS);
      // A NOMEM reaching the request would complete it IOERR: every one is OK.
      for (let i = 0; i < REQUESTS; i++) assert.equal(u8[status(i)], BlkStatus.OK, `request ${i}: status`);
      assert.equal(layer.waiting, 0, 'nothing left waiting in the layer');
    }

    await wave(BlkReqType.OUT, 1);
    const firstNomems = channel.nomems;
    assert.ok(firstNomems > 0, 'the bdev refused requests');
    assert.deepEqual(
      channel.order,
      Array.from({ length: REQUESTS }, (_, i) => sectorOf(i) * 512),
      'the bdev accepted the writes in the order the guest queued them',
    );
    assert.deepEqual(
      completions.map(([head]) => head),
      Array.from({ length: REQUESTS }, (_, i) => i),
      'and they completed in that order',
    );
    const expected = new Uint8Array(4096);
    await wave(BlkReqType.IN, 0);
    assert.ok(channel.nomems > firstNomems);
    assert.deepEqual(
      channel.order.slice(REQUESTS),
      Array.from({ length: REQUESTS }, (_, i) => sectorOf(i) * 512),
      'the reads too, in the order queued',
    );
    assert.deepEqual(
      completions.map(([head]) => head),
      Array.from({ length: REQUESTS }, (_, i) => i),
      'and completed in that order',
    );
    for (let i = 0; i < REQUESTS; i++) {
      for (let k = 0; k < 4096; k++) expected[k] = (i * 31 + k * 7 + 1) & 0xff;
      assert.ok(Buffer.from(u8.subarray(data(i), data(i) + 4096)).equals(Buffer.from(expected)), `read ${i}: data`);
      assert.deepEqual(
        completions.find(([h]) => h === i),
        [i, 4097],
      );
    }
    // Each request counted once in the bdev's statistics; the refusals not at all.
    const stats = layerOf(bdev).iostat.device();
    assert.deepEqual(
      [stats.num_write_ops, stats.bytes_written, stats.num_read_ops, stats.bytes_read, stats.io_error],
      [REQUESTS, REQUESTS * 4096, REQUESTS, REQUESTS * 4096, {}],
    );
    layer.close();
  });
});
