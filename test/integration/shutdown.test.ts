// Graceful shutdown of a real vhostd: SIGTERM or SIGINT while an initiator keeps requests in flight
// on two queues. Every completion the guest sees is correct (status OK, right length, right data);
// requests not completed by then simply never complete (the connection closes); vhostd removes all
// its sockets and exits 0.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { type BlkResult, BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostdProcess } from '../lib/vhostd.js';

const QUEUES = 2;
const QUEUE_SIZE = 128;
/** Requests kept in flight per queue: a write takes 3 descriptors (header, data, status). */
const LANES = 32;
const IO_BYTES = 4096;
const pattern = (seed: number) => Uint8Array.from({ length: IO_BYTES }, (_, i) => (i * 29 + seed * 7 + (seed >> 8)) & 0xff);

interface Tally {
  submitted: number;
  completed: number;
  bad: string[];
}

/** One request stream on one queue slot: write a unique pattern, read it back, verify; repeat. */
async function stream(ini: BlkInitiator, q: number, lane: number, closed: Promise<void>, t: Tally): Promise<void> {
  const sector = (q * LANES + lane) * (IO_BYTES / 512);
  const never = closed.then(() => undefined);
  for (let round = 0; ; round++) {
    const data = pattern(round * 1000 + q * 100 + lane);
    for (const op of ['write', 'read'] as const) {
      let p: Promise<BlkResult>;
      try {
        p = op === 'write' ? ini.write(sector, data, q) : ini.read(sector, IO_BYTES, q);
      } catch {
        return;
      }
      t.submitted++;
      const check = (r: BlkResult) => {
        t.completed++;
        if (r.status !== BlkStatus.OK) t.bad.push(`q${q} lane ${lane} ${op}: status ${r.status}`);
        const expectLen = op === 'read' ? IO_BYTES + 1 : 1;
        if (r.usedLen !== expectLen) t.bad.push(`q${q} lane ${lane} ${op}: used len ${r.usedLen}, expected ${expectLen}`);
        if (op === 'read' && !Buffer.from(r.data).equals(Buffer.from(data))) t.bad.push(`q${q} lane ${lane}: read back wrong data`);
      };
      const r = await Promise.race([p, never]).catch((e: Error) => {
        t.bad.push(`q${q} lane ${lane} ${op}: ${e.message}`);
        return undefined;
      });
      if (r === undefined) {
        // The connection closed first. The daemon may still have published this completion
        // (the call and the hang-up race in this process): the test's final reap delivers it.
        p.then(check, () => undefined);
        return;
      }
      check(r);
    }
  }
}

describe('graceful shutdown', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} with requests in flight: no lost or corrupt completion, sockets removed, exit 0`, async (t) => {
      const d = await VhostdProcess.start(['-m', '0x1']);
      let ini: BlkInitiator | undefined;
      try {
        await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 16384, block_size: 512 });
        await d.rpc('bdev_null_create', { name: 'N0', num_blocks: 16384, block_size: 512 });
        await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'M0' });
        await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.idle', dev_name: 'N0' });
        ini = await BlkInitiator.connect(d.socket('vhost.0'), { queues: QUEUES, queueSize: QUEUE_SIZE, maxIoBytes: IO_BYTES });
        const closed = ini.fe.waitClosed(30_000).then(() => undefined);
        const tally: Tally = { submitted: 0, completed: 0, bad: [] };
        const lanes: Promise<void>[] = [];
        for (let q = 0; q < QUEUES; q++) for (let lane = 0; lane < LANES; lane++) lanes.push(stream(ini, q, lane, closed, tally));

        // Until every lane has done a round trip (up to 20 s: a loaded machine delays the start).
        await sleep(300);
        for (const until = Date.now() + 20_000; Date.now() < until && tally.completed < QUEUES * LANES * 2; ) await sleep(20);
        const before = tally.completed;
        assert.ok(before > 0, 'I/O is flowing');
        const exited = new Promise<number | null>((resolve) => d.proc.once('exit', (code) => resolve(code)));
        d.proc.kill(signal);
        const code = await exited;
        await closed;
        // Completions the daemon published without a notification still count: reap the rings.
        for (const q of ini.queues) q.reap();
        await sleep(10);

        assert.equal(code, 0, `exit code; last logs:\n${d.logs.slice(-5).join('\n')}`);
        assert.deepEqual(tally.bad, []);
        const inFlight = ini.queues.reduce((n, q) => n + q.inFlight, 0);
        assert.equal(tally.submitted, tally.completed + inFlight);
        assert.ok(tally.completed > before, 'requests completed after the signal was sent too');
        const left = readdirSync(d.dir);
        assert.deepEqual(left, [], `socket files left behind: ${left.join(', ')}`);
        assert.ok(!existsSync(d.rpcSocket));
        assert.ok(d.logsMatching(/"msg":"vhostd stopped"/).length === 1);
        assert.deepEqual(d.logs.filter((l) => /"level":(50|60)/.test(l)), [], 'no error logged while stopping');
        t.diagnostic(`${tally.completed} requests completed (${tally.completed - before} after the signal), ${inFlight} in flight when the connection closed`);
        await Promise.race([Promise.all(lanes), sleep(1000)]);
      } finally {
        ini?.close();
        await d.stop();
      }
    });
  }

  test('front-ends that hang up just before SIGTERM: their teardown finishes before the reactors stop', async () => {
    // Regression: the controller did not wait for sessions already closing, the reactors were
    // terminated under them, and a reactor's fd callback aborted the process (SIGABRT).
    for (let round = 0; round < 6; round++) {
      const d = await VhostdProcess.start(['-m', '0x1']);
      try {
        const inis: BlkInitiator[] = [];
        for (let c = 0; c < 4; c++) {
          await d.rpc('bdev_malloc_create', { name: `M${c}`, num_blocks: 2048, block_size: 512 });
          await d.rpc('vhost_create_blk_controller', { ctrlr: `vhost.${c}`, dev_name: `M${c}` });
          const ini = await BlkInitiator.connect(d.socket(`vhost.${c}`), { queues: 2, queueSize: 16 });
          assert.equal((await ini.write(0, new Uint8Array(4096).fill(c))).status, BlkStatus.OK);
          inis.push(ini);
        }
        const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => d.proc.once('exit', (code, sig) => resolve([code, sig])));
        for (const ini of inis) ini.close();
        d.proc.kill('SIGTERM');
        assert.deepEqual(await exited, [0, null], `round ${round}; last logs:\n${d.logs.slice(-8).join('\n')}`);
        assert.deepEqual(readdirSync(d.dir), []);
      } finally {
        await d.stop();
      }
    }
  });
});
