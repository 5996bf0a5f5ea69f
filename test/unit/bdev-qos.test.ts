// QoS rate limits (src/bdev/qos.ts) and the layer channel that holds and releases I/O
// (src/bdev/layer-channel.ts): SPDK's per-1 ms budget with carried overruns, one budget shared by
// every channel of a bdev, minimum quotas, which I/O types count, and holding without failing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { BdevLayer } from '../../src/bdev/bdev-layer.js';
import { type BdevIo, IoStatus, IoType, IoVecs } from '../../src/bdev/io.js';
import { LayerChannel, qosHeldOnThread } from '../../src/bdev/layer-channel.js';
import { BdevQos, QosGate } from '../../src/bdev/qos.js';
import { beginPass, clock, endPass, tick } from '../../src/native/clock.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function gates(n: number): { qos: BdevQos; gates: QosGate[] } {
  const control = new BdevLayer().share.control;
  return { qos: new BdevQos(control), gates: Array.from({ length: n }, () => new QosGate(control)) };
}

/** How many `len`-byte I/Os of `type` the gates admit at time `ms`, round robin, until all refuse. */
function drain(gs: QosGate[], type: IoType, len: number, ms: number): number {
  let n = 0;
  for (let progress = true; progress; ) {
    progress = false;
    for (const g of gs) {
      if (g.admit(type, len, ms)) {
        n++;
        progress = true;
      }
    }
  }
  return n;
}

describe('QoS budget', () => {
  it('rw_ios_per_sec: limit/1000 I/O per 1 ms slice, shared by every channel of the bdev', () => {
    const { qos, gates: gs } = gates(3);
    assert.equal(gs[0].active, false);
    qos.set({ rw_ios_per_sec: 5000 }, 1000);
    assert.equal(gs[0].active, true);
    let total = 0;
    for (let ms = 1000; ms < 2000; ms++) total += drain(gs, IoType.READ, 4096, ms + 0.5);
    assert.equal(total, 5000, 'one second of slices grants exactly the limit, whatever the number of channels');
  });

  it('unused budget expires with its slice; an overrun is carried into the next slices', () => {
    const { qos, gates: [g] } = gates(1);
    qos.set({ rw_mbytes_per_sec: 4 }, 100); // 4194 bytes per slice
    assert.ok(g.admit(IoType.WRITE, 64 * KiB, 100), 'an I/O larger than the slice goes while budget is left');
    // The 64 KiB overrun (-61342) takes ceil(61342 / 4194) = 15 slices to pay back.
    let next = 101;
    while (!g.admit(IoType.WRITE, 64 * KiB, next)) next++;
    assert.equal(next - 100, 15, `second I/O went ${next - 100} slices later`);
    // Idle for a long time: no burst, at most a few slices' worth (late timers keep their budget).
    assert.ok(drain([g], IoType.WRITE, 512, 1_000_000) <= (4 * 4194) / 512 + 1);
  });

  it('only reads and writes count; r_/w_ limits apply to their direction only', () => {
    const { qos, gates: [g] } = gates(1);
    qos.set({ r_mbytes_per_sec: 1 }, 10);
    assert.equal(drain([g], IoType.READ, 4096, 10), 1, 'one 4 KiB read overruns the 1048-byte slice');
    assert.ok(g.admit(IoType.WRITE, 1 * MiB, 10), 'writes are not limited by r_mbytes_per_sec');
    for (const t of [IoType.FLUSH, IoType.UNMAP, IoType.WRITE_ZEROES]) assert.ok(g.admit(t, 1 * MiB, 10));
  });

  it('every limit that applies must have budget; 0 removes a limit; the assigned values are reported', () => {
    const { qos, gates: [g] } = gates(1);
    qos.set({ rw_ios_per_sec: 1000, w_mbytes_per_sec: 10 }, 5);
    assert.deepEqual(qos.limits(), { rw_ios_per_sec: 1000, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 10 });
    assert.equal(drain([g], IoType.WRITE, 512, 5), 1, 'the IOPS limit (1 per slice) binds first');
    qos.set({ rw_ios_per_sec: 0 }, 6);
    assert.equal(drain([g], IoType.WRITE, 512, 6), Math.ceil((10 * MiB) / 1000 / 512), 'then the byte limit');
    qos.set({ w_mbytes_per_sec: 0 });
    assert.equal(g.active, false);
    assert.equal(qos.enabled, false);
  });
});

/** A backend that completes everything at once. */
class Instant implements BdevChannel {
  submitted = 0;
  submit(io: BdevIo): void {
    this.submitted++;
    io.complete(IoStatus.SUCCESS);
  }
  close(): void {}
}

function io(type: IoType, done: IoStatus[]): BdevIo {
  return { type, offset: 0, length: 4096, iov: new IoVecs(1), complete: (s) => done.push(s) };
}

describe('layer channel under QoS', () => {
  it('holds I/O over the limit and releases it, in order, in later slices; never fails it', async () => {
    const layer = new BdevLayer();
    const inner = new Instant();
    const ch = new LayerChannel(inner, layer.share);
    const order: number[] = [];
    const statuses: IoStatus[] = [];
    const t0 = performance.now();
    // One reactor poll pass: the limit is set and the submissions made at the pass's one clock
    // read, however long the loop takes. (A clock read per step lets a slow machine's pauses
    // grant catch-up slices in between: CI once saw 8 go at once.)
    tick();
    layer.qos.set({ rw_ios_per_sec: 2000 }, clock[0]);
    beginPass();
    for (let i = 0; i < 40; i++) {
      ch.submit({ type: IoType.READ, offset: i * 4096, length: 4096, iov: new IoVecs(1), complete: (s) => (statuses.push(s), order.push(i)) });
    }
    endPass();
    const immediate = inner.submitted;
    assert.equal(immediate, 2, 'one slice of 2000 IO/s is 2 I/O');
    assert.equal(ch.waiting, 38, `${ch.waiting} held`);
    // Released by the channel's own 1 ms timer, nobody polling: 40 I/O at 2 per ms ≈ 20 ms.
    while (statuses.length < 40) await new Promise((r) => setTimeout(r, 2));
    const ms = performance.now() - t0;
    assert.ok(ms >= 15, `40 I/O at 2000 IO/s took only ${ms.toFixed(1)} ms`);
    assert.deepEqual(order, [...Array(40).keys()], 'held I/O keeps its order');
    assert.ok(statuses.every((s) => s === IoStatus.SUCCESS));
    assert.equal(layer.iostat.device().qos_held_ops, 40 - immediate, 'every I/O that waited is counted once');
    ch.close();
  });

  it('removing the limit releases everything held at the next poll', () => {
    const layer = new BdevLayer();
    const ch = new LayerChannel(new Instant(), layer.share);
    const done: IoStatus[] = [];
    tick();
    layer.qos.set({ rw_ios_per_sec: 1000 }, clock[0]);
    beginPass();
    for (let i = 0; i < 10; i++) ch.submit(io(IoType.WRITE, done));
    endPass();
    assert.equal(done.length, 1, 'one slice of 1000 IO/s is 1 I/O');
    layer.qos.set({ rw_ios_per_sec: 0 });
    ch.poll();
    assert.equal(done.length, 10);
    ch.close();
  });

  it('a reactor kept off its core while I/O is held gets every slice it missed, as SPDK\'s poller does', () => {
    const layer = new BdevLayer();
    const inner = new Instant();
    const ch = new LayerChannel(inner, layer.share);
    const done: IoStatus[] = [];
    tick();
    layer.qos.set({ rw_ios_per_sec: 2000 }, clock[0]);
    beginPass();
    for (let i = 0; i < 400; i++) ch.submit(io(IoType.READ, done));
    endPass();
    assert.equal(inner.submitted, 2, 'one slice of 2000 IO/s is 2 I/O');
    // The event loop is blocked (no timer runs): 30 ms later one poll releases 30 slices' worth.
    const from = clock[0];
    while ((tick(), clock[0]) - from < 30);
    // Polled inside a pass, as the reactor polls: the releases (and the completions they cause,
    // which read the clock) all run at the pass's time, the one the slices are counted to.
    const at = clock[0];
    beginPass();
    ch.poll();
    endPass();
    const slices = Math.floor(at) - Math.floor(from);
    assert.ok(slices >= 30);
    assert.equal(inner.submitted, 2 + 2 * slices, `${inner.submitted - 2} released after ${slices} slices`);
    // Without a backlog, an idle bdev still gets no burst.
    layer.qos.set({ rw_ios_per_sec: 0 });
    ch.poll();
    layer.qos.set({ rw_ios_per_sec: 2000 }, clock[0]);
    const idleFrom = clock[0];
    while ((tick(), clock[0]) - idleFrom < 30);
    beginPass();
    for (let i = 0; i < 100; i++) ch.submit(io(IoType.READ, done));
    endPass();
    assert.ok(inner.submitted - 400 <= 2 * 5, `${inner.submitted - 400} went at once after 30 idle ms`);
    ch.close();
  });

  it("the thread's count of QoS-held I/O (what the reactor leaves out of backend I/O) follows holds, releases, aborts and closes", () => {
    const base = qosHeldOnThread();
    const layer = new BdevLayer();
    const a = new LayerChannel(new Instant(), layer.share);
    const b = new LayerChannel(new Instant(), layer.share);
    const done: IoStatus[] = [];
    const ios = Array.from({ length: 6 }, () => io(IoType.READ, done));
    tick();
    layer.qos.set({ rw_ios_per_sec: 1000 }, clock[0]);
    beginPass();
    for (const x of ios.slice(0, 3)) a.submit(x);
    for (const x of ios.slice(3)) b.submit(x);
    endPass();
    assert.equal(qosHeldOnThread() - base, 5, 'one of six went, five are held across two channels');
    assert.equal(a.abort(ios[2]), true);
    assert.equal(qosHeldOnThread() - base, 4);
    b.close();
    assert.equal(qosHeldOnThread() - base, 1, "a closed channel's held I/O is dropped");
    layer.qos.set({ rw_ios_per_sec: 0 });
    a.poll();
    assert.equal(qosHeldOnThread(), base);
    a.close();
  });

  it('an I/O held by QoS can be aborted: it never reaches the backend nor completes', () => {
    const layer = new BdevLayer();
    const inner = new Instant();
    const ch = new LayerChannel(inner, layer.share);
    const done: IoStatus[] = [];
    const ios = Array.from({ length: 5 }, () => io(IoType.READ, done));
    tick();
    layer.qos.set({ rw_ios_per_sec: 1000 }, clock[0]);
    beginPass();
    for (const x of ios) ch.submit(x);
    endPass();
    assert.equal(inner.submitted, 1, 'the other four are held');
    assert.equal(ch.abort(ios[4]), true);
    assert.equal(ch.abort(ios[4]), false, 'only once');
    layer.qos.set({ rw_ios_per_sec: 0 });
    ch.poll();
    assert.equal(inner.submitted, 4, 'the aborted I/O never reached the backend');
    assert.equal(done.length, 4);
    ch.close();
  });
});
