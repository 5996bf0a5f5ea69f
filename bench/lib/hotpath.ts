// The hot-path section (`--only hotpath`): what one request costs vhostd's data path on one
// thread, without a second core. The load generator's split ring and vhostd's QueueRunner,
// virtio-blk handler, bdev layer and null bdev run in this process, in turns as a reactor's poll
// pass drives them: the driver fills the ring, the runner takes it, the driver reaps. The ns per
// request (driver included) move only with the code, not with the placement of two vCPUs, so
// this is where a change to the data path shows, while the two-core I/O rows swing by 2x with
// the link between the cores. It is not a comparison with the peers: they are not in it.
import Table from 'cli-table3';
import { BdevLayer } from '../../src/bdev/bdev-layer.js';
import { NullBdev } from '../../src/bdev/modules/null/null.js';
import { blkKind } from '../../src/devices/blk/blk-device.js';
import { BlkModel } from '../../src/devices/blk/blk-model.js';
import { DriverMemory } from '../../src/initiator/driver-memory.js';
import { createLoadRing } from '../../src/initiator/load-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { beginPass, clock, endPass, tick } from '../../src/native/clock.js';
import { QueueRunner } from '../../src/virtio/queue-runner.js';

const RING = 128;
const MEM_BYTES = 8 << 20;
const IO_BYTES = 4096;
const BLOCK = 4096;
const BLOCKS = (1 << 30) / BLOCK;
/** Completions the runner publishes at once (the reactor's PUBLISH_CHUNK for a lone busy queue). */
const PUBLISH_EVERY = 8;
const WARMUP_MS = 300;

export interface HotPathParams {
  rws: Array<'randread' | 'randwrite'>;
  qds: number[];
  ms: number;
  repeat: number;
}

export interface HotPathRow {
  rw: 'randread' | 'randwrite';
  qd: number;
  /** ns per request of each run, sorted. */
  nsPerRequest: number[];
}

export interface HotPathReport {
  params: HotPathParams;
  rows: HotPathRow[];
}

/** One ring, queue and device on a null bdev; `run(ms)` returns the requests completed. */
function rig(qd: number, read: boolean): (ms: number) => number {
  const mem = new DriverMemory(MEM_BYTES);
  const ring = createLoadRing('split', mem, { size: RING, slots: qd, ioBytes: IO_BYTES, eventIdx: true, indirect: false });
  const guest = new GuestMemory([{ gpa: 0, size: MEM_BYTES, uva: mem.uvaBase, base: 0, buffer: mem.u8.buffer as SharedArrayBuffer }]);
  const bdev = new NullBdev('hotpath', BLOCK, BLOCKS);
  // The spec and chain capacity a blk controller's session gives its reactors.
  const model = new BlkModel('hotpath', bdev, { backend: bdev.channelSpec(), layer: new BdevLayer().share }, { readonly: false, packedRing: false });
  const spec = model.spec();
  const device = blkKind.create(spec, (m) => {
    throw new Error(m);
  });
  const addrs = { descGpa: ring.descGpa, availGpa: ring.availGpa, usedGpa: ring.usedGpa };
  const runner = new QueueRunner(
    guest,
    { qid: 0, size: RING, eventIdx: true, indirect: true, packed: false, lastAvail: 0, addrs, callFd: -1, chainCapacity: model.chainCapacity },
    addrs,
    {
      fail: (_r, reason) => {
        throw new Error(reason);
      },
      deferSignal: () => undefined,
      scheduleFlush: (r) => r.flush(),
    },
  );
  runner.handler = device.handlerFor(runner);
  ring.suppressCalls();
  const m32 = new Uint32Array(mem.u8.buffer);
  const slots = new Int32Array(qd);
  const lens = new Uint32Array(qd);
  let seed = 12345;
  const submit = (slot: number): void => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const h = ring.hdrIndex32[slot];
    m32[h] = read ? 0 : 1;
    m32[h + 1] = 0;
    m32[h + 2] = (seed % BLOCKS) * (BLOCK / 512);
    m32[h + 3] = 0;
    ring.enqueue(slot, read);
  };
  return (ms: number): number => {
    for (let s = 0; s < qd; s++) submit(s);
    ring.publish();
    tick();
    const end = clock[0] + ms;
    let done = 0;
    for (;;) {
      tick();
      beginPass();
      runner.poll(PUBLISH_EVERY);
      device.poll();
      endPass();
      const n = ring.reap(slots, lens);
      for (let i = 0; i < n; i++) {
        if (lens[i] !== (read ? IO_BYTES + 1 : 1)) throw new Error(`request completed with used length ${lens[i]}`);
        submit(slots[i]);
      }
      ring.publish();
      done += n;
      if ((done & 0x3ff) < n && clock[0] > end) break;
    }
    // Take back what is still out, so the next run starts with every slot free.
    for (;;) {
      runner.poll(PUBLISH_EVERY);
      if (ring.reap(slots, lens) === 0 && runner.inFlight === 0) break;
    }
    return done;
  };
}

export function runHotPath(params: HotPathParams, log: (m: string) => void): HotPathReport {
  const rows: HotPathRow[] = [];
  for (const rw of params.rws) {
    for (const qd of params.qds) {
      const run = rig(qd, rw === 'randread');
      run(WARMUP_MS);
      const ns: number[] = [];
      for (let r = 0; r < params.repeat; r++) {
        const t0 = performance.now();
        const n = run(params.ms);
        ns.push(((performance.now() - t0) * 1e6) / n);
      }
      ns.sort((a, b) => a - b);
      log(`hotpath ${rw} QD ${qd}: ${ns.map((x) => x.toFixed(1)).join(' ')} ns/request`);
      rows.push({ rw, qd, nsPerRequest: ns });
    }
  }
  return { params, rows };
}

export function formatHotPath(r: HotPathReport): string {
  const t = new Table({ head: ['rw', 'QD', 'ns/request (median)', 'min', 'max'], style: { head: [], border: [], compact: true } });
  for (const row of r.rows) {
    const ns = row.nsPerRequest;
    t.push([row.rw, row.qd, ns[ns.length >> 1].toFixed(1), ns[0].toFixed(1), ns[ns.length - 1].toFixed(1)]);
  }
  return (
    `vhostd's data path on one thread (null bdev, 4 KiB, split ring with EVENT_IDX, driver included; ${r.params.repeat} runs of ${r.params.ms} ms):\n` +
    `${t.toString()}\n` +
    'No second core and no peers: a change to the data path shows here without the two-core rows\' swings.'
  );
}
