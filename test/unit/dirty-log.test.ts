// Live migration's dirty log, on a real QueueRunner over rings in shared memory (the load
// generator's split and packed rings, direct and indirect chains): which pages get marked, when,
// and what happens to a log that is replaced, absent, or too small.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DriverMemory } from '../../src/initiator/driver-memory.js';
import { type LoadRing, PACKED_INITIAL_BASE, type RingKind, createLoadRing } from '../../src/initiator/load-ring.js';
import { DirtyLog, LOG_PAGE_SIZE } from '../../src/memory/dirty-log.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { QueueRunner } from '../../src/virtio/queue-runner.js';
import type { Chain } from '../../src/virtio/desc-chain.js';

const MEM_BYTES = 1 << 20;
/** Crosses a page boundary: each data buffer covers two pages (4 KiB-aligned starts). */
const IO_BYTES = LOG_PAGE_SIZE + 512;
const page = (gpa: number) => Math.floor(gpa / LOG_PAGE_SIZE);

function newLog(pages: number): DirtyLog {
  const bytes = Math.ceil(pages / 8);
  return new DirtyLog({ buffer: new SharedArrayBuffer(bytes + 8), base: 8, size: bytes });
}

function marked(log: DirtyLog): number[] {
  const out: number[] = [];
  for (let p = 0; p < log.pages; p++) if (log.isMarked(p)) out.push(p);
  return out;
}

interface Rig {
  ring: LoadRing;
  runner: QueueRunner;
  failures: string[];
  /** Heads taken and not completed yet (when the handler holds requests). */
  held: number[];
  hold: boolean;
  mem: DriverMemory;
}

function rig(kind: RingKind, opts: { indirect?: boolean } = {}): Rig {
  const mem = new DriverMemory(MEM_BYTES);
  const ring = createLoadRing(kind, mem, { size: 16, slots: 4, ioBytes: IO_BYTES, eventIdx: false, indirect: opts.indirect ?? false });
  const guest = new GuestMemory([{ gpa: 0, size: MEM_BYTES, uva: mem.uvaBase, base: 0, buffer: mem.u8.buffer as SharedArrayBuffer }]);
  const failures: string[] = [];
  const addrs = { descGpa: ring.descGpa, availGpa: ring.availGpa, usedGpa: ring.usedGpa };
  const runner = new QueueRunner(
    guest,
    { qid: 0, size: 16, eventIdx: false, indirect: true, packed: kind === 'packed', lastAvail: kind === 'packed' ? PACKED_INITIAL_BASE : 0, addrs, callFd: -1, chainCapacity: 8 },
    addrs,
    {
      fail: (_r, reason) => failures.push(reason),
      deferSignal: () => undefined,
      scheduleFlush: (r) => r.flush(),
    },
  );
  const r: Rig = { ring, runner, failures, held: [], hold: false, mem };
  runner.handler = {
    handle(head: number, chain: Chain) {
      if (r.hold) r.held.push(head);
      else runner.complete(head, chain.writableLen);
    },
  };
  return r;
}

/** Makes `slots` available (reads: device-writable data) and lets the runner take them. */
function submit(r: Rig, slots: number[], deviceWrites = true): void {
  for (const s of slots) r.ring.enqueue(s, deviceWrites);
  r.ring.publish();
  r.runner.poll();
  const outSlots = new Int32Array(16);
  const outLens = new Uint32Array(16);
  if (!r.hold) r.ring.reap(outSlots, outLens);
}

function dataPages(r: Rig, slot: number): number[] {
  return [page(r.ring.dataOff[slot]), page(r.ring.dataOff[slot] + IO_BYTES - 1)];
}

function ringPages(r: Rig, kind: RingKind): number[] {
  const pages = new Set<number>();
  const add = (gpa: number, len: number) => {
    for (let p = page(gpa); p <= page(gpa + len - 1); p++) pages.add(p);
  };
  if (kind === 'split') add(r.ring.usedGpa, 6 + 8 * 16 + 2);
  else {
    add(r.ring.descGpa, 16 * 16);
    add(r.ring.usedGpa, 4);
  }
  return [...pages];
}

for (const kind of ['split', 'packed'] as const) {
  for (const indirect of [false, true]) {
    describe(`dirty log: ${kind} ring, ${indirect ? 'indirect' : 'direct'} chains`, () => {
      it('a read marks its data pages (across the page boundary), its status byte and the ring; a write leaves its data pages alone', () => {
        const r = rig(kind, { indirect });
        const log = newLog(MEM_BYTES / LOG_PAGE_SIZE);
        r.runner.setDirtyLog(log);
        submit(r, [0], true);
        submit(r, [1], false);
        const got = new Set(marked(log));
        for (const p of dataPages(r, 0)) assert.ok(got.has(p), `read data page ${p} not marked`);
        assert.equal(dataPages(r, 0)[1], dataPages(r, 0)[0] + 1, 'the data buffer spans two pages');
        for (const p of dataPages(r, 1)) assert.ok(!got.has(p), `page ${p} of a buffer the device only read was marked`);
        for (const s of [0, 1]) assert.ok(got.has(page(r.ring.statusOff[s])), `status byte page of slot ${s}`);
        for (const p of ringPages(r, kind)) assert.ok(got.has(p), `ring page ${p}`);
        assert.deepEqual(r.failures, []);
      });

      it('with LOG_ALL off nothing is written to any log', () => {
        const r = rig(kind, { indirect });
        const log = newLog(MEM_BYTES / LOG_PAGE_SIZE);
        submit(r, [0, 1, 2], true);
        assert.deepEqual(marked(log), []);
        // Logging on, then off again: later requests mark nothing.
        r.runner.setDirtyLog(log);
        submit(r, [3], true);
        const before = marked(log);
        assert.ok(before.length > 0);
        r.runner.setDirtyLog(undefined);
        submit(r, [0], true);
        assert.deepEqual(marked(log), before);
      });

      it('a log replaced mid-migration: later completions mark only the new log', () => {
        const r = rig(kind, { indirect });
        const a = newLog(MEM_BYTES / LOG_PAGE_SIZE);
        const b = newLog(MEM_BYTES / LOG_PAGE_SIZE);
        r.runner.setDirtyLog(a);
        submit(r, [0], true);
        const inA = marked(a);
        r.runner.setDirtyLog(b);
        submit(r, [1], true);
        assert.deepEqual(marked(a), inA, 'the old log was written after the switch');
        const inB = new Set(marked(b));
        for (const p of dataPages(r, 1)) assert.ok(inB.has(p));
        for (const p of dataPages(r, 0)) assert.ok(!inB.has(p) || dataPages(r, 1).includes(p));
      });

      it('a request in flight when logging starts still gets its pages marked at completion', () => {
        const r = rig(kind, { indirect });
        r.hold = true;
        submit(r, [2], true);
        assert.equal(r.held.length, 1);
        const log = newLog(MEM_BYTES / LOG_PAGE_SIZE);
        r.runner.setDirtyLog(log);
        const head = r.held.pop()!;
        r.runner.complete(head, IO_BYTES + 1);
        r.runner.flush();
        const got = new Set(marked(log));
        for (const p of dataPages(r, 2)) assert.ok(got.has(p), `page ${p} of the request in flight when logging began`);
        if (kind === 'packed') {
          // Its descriptors may be overwritten by then: all of guest memory is marked instead.
          assert.equal(got.size, MEM_BYTES / LOG_PAGE_SIZE);
        }
        assert.deepEqual(r.failures, []);
      });

      it('a log smaller than guest memory: a write beyond it stops the device with the reason', () => {
        const r = rig(kind, { indirect });
        const slot = 3;
        const needed = page(r.ring.dataOff[slot]);
        // Covers the rings and the status bytes, not slot 3's data buffer.
        const log = newLog(Math.floor(needed / 8) * 8);
        assert.ok(log.pages <= needed);
        r.runner.setDirtyLog(log);
        submit(r, [slot], true);
        assert.ok(r.failures.length >= 1);
        assert.match(r.failures[0], /the dirty log \(\d+ pages\) does not cover gpa 0x[0-9a-f]+/);
      });
    });
  }
}

describe('DirtyLog', () => {
  it('sets QEMU bit positions: page p is bit p % 8 of byte p / 8, across word and odd-offset boundaries', () => {
    for (const base of [0, 8, 3]) {
      const buffer = new SharedArrayBuffer(64);
      const log = new DirtyLog({ buffer, base, size: 32 });
      const bytes = new Uint8Array(buffer, base, 32);
      assert.equal(log.mark(31 * LOG_PAGE_SIZE + 100, 2 * LOG_PAGE_SIZE), true); // pages 31, 32, 33
      assert.equal(bytes[3], 0x80);
      assert.equal(bytes[4], 0x03);
      assert.equal(log.mark(255 * LOG_PAGE_SIZE, 1), true);
      assert.equal(bytes[31], 0x80);
      assert.equal(log.mark(256 * LOG_PAGE_SIZE, 1), false, 'page 256 is past a 32-byte log');
      assert.equal(log.mark(255 * LOG_PAGE_SIZE, LOG_PAGE_SIZE + 1), false, 'a range ending past the log marks nothing');
      assert.equal(new Uint8Array(buffer).filter((b, i) => (i < base || i >= base + 32) && b !== 0).length, 0, 'bytes outside the log untouched');
    }
  });
});
