// Reactors: a multi-queue controller on a 2-core cpumask is served from both reactors, idle
// reactors sleep (no CPU), and the first request after idle wakes them.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { LoadGenerator } from '../../src/initiator/load.js';
import { VhostdProcess } from '../lib/vhostd.js';

let d: VhostdProcess;

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Reactors {
  tick_rate: number;
  reactors: Array<{
    lcore: number;
    in_interrupt: boolean;
    busy: number;
    idle: number;
    irq_count: number;
    backend_wait: { kickless_sleeps: number };
    queues: Array<{ device: string; queue: number; completed: number }>;
  }>;
}

describe('reactors', () => {
  before(async () => {
    d = await VhostdProcess.start(['-m', '0x3', '--poll-idle-us', '2000']);
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 16384, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'mq', dev_name: 'M0', cpumask: '0x3' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  test('a 2-queue controller on cpumask 0x3 is served from both reactors', async () => {
    const ini = await BlkInitiator.connect(d.socket('mq'), { queues: 2 });
    try {
      for (let q = 0; q < 2; q++) {
        const data = new Uint8Array(4096).fill(q + 1);
        assert.equal((await ini.write(8 * q, data, q)).status, BlkStatus.OK);
        assert.deepEqual((await ini.read(8 * q, 4096, q)).data, data);
      }
      const r = await d.rpc<Reactors>('framework_get_reactors');
      assert.equal(r.reactors.length, 2);
      const served = r.reactors.map((x) => x.queues.filter((q) => q.device === 'mq').map((q) => q.queue));
      assert.deepEqual(served.flat().sort(), [0, 1]);
      assert.ok(served.every((qs) => qs.length === 1), `each reactor serves one queue: ${JSON.stringify(served)}`);
      for (const x of r.reactors) assert.ok(x.queues.every((q) => q.completed >= 2));
    } finally {
      ini.close();
    }
  });

  test("vhostctl's reactor table shows each reactor's queue and its IOPS under load", async () => {
    const gen = await LoadGenerator.connect({ socketPath: d.socket('mq'), queues: 2, iodepth: 8, ioBytes: 4096 });
    try {
      const table = new Promise<string>((resolve, reject) => {
        // Sampled while the load runs: IOPS over the 0.5 s between two framework_get_reactors.
        setTimeout(() => {
          execFile(process.execPath, ['--import', 'tsx', 'src/cli/vhostctl.ts', '-s', d.rpcSocket, 'framework_get_reactors', '--table', '--interval', '0.5'], { timeout: 30_000 }, (err, stdout) =>
            err ? reject(err) : resolve(stdout),
          );
        }, 300);
      });
      const [load, out] = await Promise.all([gen.run({ rw: 'randread', durationMs: 4000, warmupMs: 0 }), table]);
      assert.ok(load.iosTotal > 0);
      const head = out.split('\n').find((l) => l.includes('Core')) ?? '';
      const cols = head.split('│').map((c) => c.trim());
      const iopsCol = cols.indexOf('IOPS');
      assert.ok(iopsCol > 0, out);
      const rows = out.split('\n').filter((l) => /^│ [01] /.test(l)).map((l) => l.split('│').map((c) => c.trim()));
      assert.equal(rows.length, 2, out);
      for (const row of rows) {
        assert.match(row[cols.indexOf('Queues')], /^mq\/[01]$/, out);
        assert.ok(Number(row[iopsCol]) > 100, `reactor ${row[1]} shows its IOPS: ${out}`);
      }
    } finally {
      gen.close();
    }
  });

  test('idle with a connected front-end: reactors sleep, CPU < 1%, and wake on the next request', async () => {
    const ini = await BlkInitiator.connect(d.socket('mq'), { queues: 2 });
    try {
      assert.equal((await ini.read(0, 4096)).status, BlkStatus.OK);
      await new Promise((r) => setTimeout(r, 200));
      // Polled up to 20 s: a loaded machine can keep a reactor from reaching its idle timeout.
      let r = await d.rpc<Reactors>('framework_get_reactors');
      for (const until = Date.now() + 20_000; Date.now() < until && !r.reactors.every((x) => x.in_interrupt); ) {
        await new Promise((res) => setTimeout(res, 50));
        r = await d.rpc<Reactors>('framework_get_reactors');
      }
      assert.ok(r.reactors.every((x) => x.in_interrupt), 'both reactors in interrupt mode');
      // Up to three 2 s windows; the first under 1% counts. An idle daemon's V8 isolates run a
      // memory-reducing GC now and then (~8 s apart, 100-150 ms of CPU over all threads: 5-7% of
      // a window, and one can straddle two windows); a reactor that polls, or wakes on a timer,
      // uses its share in every window.
      const pid = d.proc.pid as number;
      const windows: number[] = [];
      while (windows.length < 3 && !windows.some((u) => u < 0.01)) {
        const c0 = cpuSeconds(pid);
        const w0 = performance.now();
        await new Promise((res) => setTimeout(res, 2000));
        windows.push((cpuSeconds(pid) - c0) / ((performance.now() - w0) / 1000));
      }
      const used = Math.min(...windows);
      assert.ok(used < 0.01, `idle CPU ${windows.map((u) => (u * 100).toFixed(2)).join(', ')}% of a core in successive windows`);
      const t0 = performance.now();
      assert.equal((await ini.read(0, 4096, 1)).status, BlkStatus.OK);
      const wakeUs = (performance.now() - t0) * 1000;
      console.log(`# idle CPU ${windows.map((u) => (u * 100).toFixed(2)).join(', ')}% of a core; first request after idle: ${wakeUs.toFixed(0)} us`);
    } finally {
      ini.close();
    }
  });

  test('vhost_controller_set_coalescing delays interrupts of a busy queue (SPDK semantics)', async () => {
    await d.rpc('bdev_malloc_create', { name: 'C0', num_blocks: 16384, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'co', dev_name: 'C0', cpumask: '0x1' });
    const ini = await BlkInitiator.connect(d.socket('co'), { queues: 1, queueSize: 64 });
    const QD = 16;
    /** Keeps QD reads in flight for `ms`; returns completions per interrupt and interrupts per second. */
    const measure = async (ms: number) => {
      const q = ini.queues[0];
      const i0 = q.interrupts;
      let done = 0;
      const t0 = performance.now();
      const worker = async () => {
        while (performance.now() - t0 < ms) {
          assert.equal((await ini.read(0, 4096)).status, BlkStatus.OK);
          done++;
        }
      };
      await Promise.all(Array.from({ length: QD }, worker));
      const interrupts = Math.max(1, q.interrupts - i0);
      return { perInterrupt: done / interrupts, perSecond: (interrupts * 1000) / (performance.now() - t0), iops: (done * 1000) / ms };
    };
    try {
      // delay_base_us 2000 with iops_threshold 100: above 1 request per 10 ms stats interval every
      // interrupt waits >= 2 ms after the previous one, so a busy queue gets at most ~500 per second.
      // Without coalescing a queue serving thousands of IOPS gets far more. Counts depend on timing
      // on a loaded 2-core machine, so up to five pairs of samples are taken.
      let plain = { perInterrupt: 0, perSecond: 0, iops: 0 };
      let coalesced = { perInterrupt: 0, perSecond: Number.POSITIVE_INFINITY, iops: 0 };
      const ok = () => coalesced.perSecond < 600 && (plain.perSecond > coalesced.perSecond * 1.5 || plain.perInterrupt > QD * 0.9);
      for (let attempt = 0; attempt < 5 && !ok(); attempt++) {
        await d.rpc('vhost_controller_set_coalescing', { ctrlr: 'co', delay_base_us: 0, iops_threshold: 60000 });
        plain = await measure(500);
        assert.equal(await d.rpc('vhost_controller_set_coalescing', { ctrlr: 'co', delay_base_us: 2000, iops_threshold: 100 }), true);
        coalesced = await measure(500);
        const show = (x: typeof plain) => `${x.perSecond.toFixed(0)} interrupts/s, ${x.perInterrupt.toFixed(2)} completions each, ${x.iops.toFixed(0)} IOPS`;
        console.log(`# without coalescing: ${show(plain)}; with: ${show(coalesced)}`);
      }
      assert.ok(coalesced.perSecond < 600, `coalescing bounds the interrupt rate (${coalesced.perSecond.toFixed(0)}/s)`);
      assert.ok(
        plain.perSecond > coalesced.perSecond * 1.5 || plain.perInterrupt > QD * 0.9,
        `without coalescing interrupts are not held back (${plain.perSecond.toFixed(0)}/s vs ${coalesced.perSecond.toFixed(0)}/s)`,
      );
      const [c] = await d.rpc<Array<{ delay_base_us: number; iops_threshold: number }>>('vhost_get_controllers', { name: 'co' });
      assert.deepEqual([c.delay_base_us, c.iops_threshold], [2000, 100]);
    } finally {
      ini.close();
    }
  });
  test('waiting on a slow backend with requests out, the reactor does not ask the driver to kick', async () => {
    // A delay bdev of 500 us over a null bdev at QD 64: the next completion is due every ~8 us, so
    // the reactor sleeps on the backend with kicks off and takes the driver's new requests when
    // that completion wakes it. With kicks armed at each such sleep the driver kicked for a large
    // share of its submissions (below); SPDK's reactor never asks for kicks.
    await d.rpc('bdev_null_create', { name: 'KN', num_blocks: 262144, block_size: 512 });
    await d.rpc('bdev_delay_create', { base_bdev_name: 'KN', name: 'KD', avg_read_latency: 500, p99_read_latency: 500, avg_write_latency: 500, p99_write_latency: 500 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'kl', dev_name: 'KD', cpumask: '0x1' });
    const gen = await LoadGenerator.connect({ socketPath: d.socket('kl'), queues: 1, iodepth: 64, ioBytes: 4096 });
    try {
      const before = (await d.rpc<Reactors>('framework_get_reactors')).reactors[0];
      const r = await gen.run({ rw: 'randread', durationMs: 1500, warmupMs: 300 });
      const after = (await d.rpc<Reactors>('framework_get_reactors')).reactors[0];
      const kickless = after.backend_wait.kickless_sleeps - before.backend_wait.kickless_sleeps;
      // Every wake-up ends a sleep: the ones that were not kickless armed the driver's kicks.
      const armed = after.irq_count - before.irq_count - kickless;
      const perK = (r.initiator.kicks * 1000) / r.ios;
      console.log(`# delay bdev 500 us, QD 64: ${r.ios} I/O, ${r.initiator.kicks} kicks (${perK.toFixed(1)} per 1000 I/O), ${kickless} kickless sleeps, ${armed} armed`);
      assert.equal(r.errors, 0);
      assert.ok(r.ios > 10_000, `I/O flowed (${r.ios})`);
      // Quiet, this is ~1 kick per 1000 I/O (15.7 with kicks armed at each sleep). A loaded
      // machine pauses the reactor past the 1 ms after which it arms kicks again, so the checks
      // are on the mechanism: most sleeps on the backend leave kicks off, and kicks come only
      // from the sleeps that armed them (at most two each: one may race the quiesce).
      assert.ok(kickless > 0, 'the reactor slept on the backend with kicks off');
      assert.ok(kickless >= armed, `kickless sleeps ${kickless}, armed ${armed}`);
      assert.ok(r.initiator.kicks <= 2 * armed + 20, `${r.initiator.kicks} kicks, ${armed} armed sleeps`);
    } finally {
      gen.close();
    }
  });
});
