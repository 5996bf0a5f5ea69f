// Memory across controller life cycles, against a real vhostd: thousands of blk and scsi
// create/delete cycles (and a few hundred with a front-end attached) leave the control thread's
// and the reactors' heaps where they were — every closed fd watch used to root its owner (the
// controller with its bdev, the connection with its session, the reactor's device with its
// queues) through the addon's global handle on its callback — and deleted malloc bdevs give
// their memory back to the system at once, not whenever every isolate that saw them collects.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { RpcClient } from '../../src/rpc/client.js';
import { VhostdProcess } from '../lib/vhostd.js';

const MIB = 1 << 20;
const BLK_CYCLES = 3000;
const SCSI_CYCLES = 2000;
const SESSION_CYCLES = 200;
/** Heap growth allowed per thread over all the cycles (JIT code, caches); the leak was ~1.3 KiB a cycle. */
const HEAP_BOUND = 1 * MIB;

interface MemoryStats {
  rss: number;
  gc_forced: boolean;
  heap_used: number;
  reactors: Array<{ lcore: number; heap_used: number }>;
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

const mib = (n: number) => `${(n / MIB).toFixed(2)} MiB`;

/** Deletes a controller, retrying while the daemon still tears down a session that just closed. */
async function deleteController(c: RpcClient, ctrlr: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await c.call('vhost_delete_controller', { ctrlr });
      return;
    } catch (e) {
      if (i > 200 || !/connected front-end/.test((e as Error).message)) throw e;
      await sleep(10);
    }
  }
}

describe('controller create/delete cycles keep memory flat', () => {
  let d: VhostdProcess;
  let c: RpcClient;

  before(async () => {
    // A modest heap: the old leak ran a 40 MiB heap out after ~24k cycles.
    d = await VhostdProcess.start(['-m', '0x3', '-L', 'warn'], { nodeArgs: ['--max-old-space-size=64', '--expose-gc'] });
    c = new RpcClient(d.rpcSocket);
    await c.call('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512 });
  });
  after(async () => {
    c?.close();
    await d?.stop();
  });

  async function memory(): Promise<MemoryStats> {
    const m = await c.call<MemoryStats>('vhostd_get_memory_stats', { gc: true });
    assert.equal(m.gc_forced, true, 'vhostd runs with --expose-gc, so the RPC collects garbage');
    return m;
  }

  async function blkCycle(): Promise<void> {
    await c.call('vhost_create_blk_controller', { ctrlr: 'leak.blk', dev_name: 'M0' });
    await c.call('vhost_delete_controller', { ctrlr: 'leak.blk' });
  }

  async function scsiCycle(): Promise<void> {
    await c.call('vhost_create_scsi_controller', { ctrlr: 'leak.scsi' });
    await c.call('vhost_scsi_controller_add_target', { ctrlr: 'leak.scsi', scsi_target_num: 0, bdev_name: 'M0' });
    await c.call('vhost_delete_controller', { ctrlr: 'leak.scsi' });
  }

  /** A controller with a front-end that starts two queues (devices on both reactors) and writes. */
  async function sessionCycle(i: number): Promise<void> {
    await c.call('vhost_create_blk_controller', { ctrlr: 'leak.sess', dev_name: 'M0' });
    const ini = await BlkInitiator.connect(d.socket('leak.sess'), { queues: 2, queueSize: 16, memBytes: 4 * MIB, maxIoBytes: 4096 });
    try {
      assert.equal((await ini.write(i % 256, new Uint8Array(4096).fill(i & 0xff), i % 2)).status, BlkStatus.OK);
    } finally {
      ini.close();
    }
    await deleteController(c, 'leak.sess');
  }

  function assertFlat(what: string, before: MemoryStats, now: MemoryStats): void {
    const grew = now.heap_used - before.heap_used;
    assert.ok(grew < HEAP_BOUND, `${what}: control-thread heap grew by ${mib(grew)} (${mib(before.heap_used)} -> ${mib(now.heap_used)})`);
    for (const r of now.reactors) {
      const was = before.reactors.find((x) => x.lcore === r.lcore);
      assert.ok(was);
      const g = r.heap_used - was.heap_used;
      assert.ok(g < HEAP_BOUND, `${what}: reactor ${r.lcore} heap grew by ${mib(g)} (${mib(was.heap_used)} -> ${mib(r.heap_used)})`);
    }
  }

  test(`${BLK_CYCLES} blk and ${SCSI_CYCLES} scsi create/delete cycles`, { timeout: 120_000 }, async () => {
    // Warm-up: JIT, lazily loaded modules, pools; then the baseline.
    for (let i = 0; i < 200; i++) await blkCycle();
    for (let i = 0; i < 200; i++) await scsiCycle();
    const base = await memory();
    const rss0 = rssBytes(d.proc.pid!);
    for (let i = 0; i < BLK_CYCLES; i++) await blkCycle();
    const afterBlk = await memory();
    for (let i = 0; i < SCSI_CYCLES; i++) await scsiCycle();
    const afterScsi = await memory();
    assert.ok(d.alive, 'vhostd died');
    const rss1 = rssBytes(d.proc.pid!);
    // For the log (RSS moves with the allocator and JIT; the heaps are what is asserted).
    console.log(
      `heap ${mib(base.heap_used)} -> ${mib(afterBlk.heap_used)} (blk) -> ${mib(afterScsi.heap_used)} (scsi); reactors ${base.reactors.map((r) => mib(r.heap_used))} -> ${afterScsi.reactors.map((r) => mib(r.heap_used))}; RSS ${mib(rss0)} -> ${mib(rss1)}`,
    );
    assertFlat(`${BLK_CYCLES} blk cycles`, base, afterBlk);
    assertFlat(`${SCSI_CYCLES} scsi cycles`, afterBlk, afterScsi);
    assert.deepEqual(await c.call('vhost_get_controllers'), []);
  });

  test(`${SESSION_CYCLES} cycles with a front-end attached`, { timeout: 120_000 }, async () => {
    for (let i = 0; i < 30; i++) await sessionCycle(i);
    const base = await memory();
    for (let i = 0; i < SESSION_CYCLES; i++) await sessionCycle(i);
    const now = await memory();
    console.log(`heap ${mib(base.heap_used)} -> ${mib(now.heap_used)}; reactors ${base.reactors.map((r) => mib(r.heap_used))} -> ${now.reactors.map((r) => mib(r.heap_used))}`);
    assertFlat(`${SESSION_CYCLES} session cycles`, base, now);
  });
});

describe('deleted malloc bdevs give their memory back', () => {
  let d: VhostdProcess;
  let c: RpcClient;
  const COUNT = 4;
  const SIZE = 256 * MIB;
  const CHUNK = MIB;
  /** RSS above the baseline allowed once every big bdev is gone; with them it is 1 GiB more. */
  const RSS_BOUND = 128 * MIB;

  before(async () => {
    d = await VhostdProcess.start(['-m', '0x3', '-L', 'warn']);
    c = new RpcClient(d.rpcSocket);
  });
  after(async () => {
    c?.close();
    await d?.stop();
  });

  /** Creates malloc bdev `name` and writes every byte of it through a blk controller, which it then deletes. */
  async function createFilled(name: string, size: number, fill: number): Promise<void> {
    await c.call('bdev_malloc_create', { name, num_blocks: size / 512, block_size: 512 });
    await c.call('vhost_create_blk_controller', { ctrlr: `ctrl.${name}`, dev_name: name });
    const ini = await BlkInitiator.connect(d.socket(`ctrl.${name}`), { queues: 1, queueSize: 32, memBytes: 32 * MIB, maxIoBytes: CHUNK });
    try {
      const data = new Uint8Array(CHUNK).fill(fill);
      // Eight requests in flight.
      for (let off = 0; off < size; off += 8 * CHUNK) {
        const rs = await Promise.all(Array.from({ length: 8 }, (_, k) => ini.write((off + k * CHUNK) / 512, data)));
        for (const r of rs) assert.equal(r.status, BlkStatus.OK);
      }
      const r = await ini.read((size - CHUNK) / 512, 4096);
      assert.equal(r.data[4095], fill);
    } finally {
      ini.close();
    }
    await deleteController(c, `ctrl.${name}`);
  }

  test(`${COUNT} x ${SIZE / MIB} MiB written through a controller, then deleted: RSS returns to the baseline`, { timeout: 120_000 }, async () => {
    const pid = d.proc.pid!;
    // Warm-up, so the baseline holds what serving I/O costs anyway (JIT, heap, pools).
    await createFilled('Warm', 16 * MIB, 1);
    await c.call('bdev_malloc_delete', { name: 'Warm' });
    const baseline = rssBytes(pid);
    for (let b = 0; b < COUNT; b++) await createFilled(`Big${b}`, SIZE, 0x5a + b);
    const full = rssBytes(pid);
    assert.ok(full - baseline > (COUNT * SIZE * 3) / 4, `the bdevs' data is resident (${mib(baseline)} -> ${mib(full)})`);
    for (let b = 0; b < COUNT; b++) await c.call('bdev_malloc_delete', { name: `Big${b}` });
    // Given back at deletion: no GC, no idle time needed (a short grace for the RPC's own garbage).
    let rss = rssBytes(pid);
    for (let i = 0; i < 20 && rss - baseline >= RSS_BOUND; i++) {
      await sleep(100);
      rss = rssBytes(pid);
    }
    console.log(`RSS ${mib(baseline)} -> ${mib(full)} with ${COUNT} x ${SIZE / MIB} MiB written -> ${mib(rss)} after deleting them`);
    assert.ok(rss - baseline < RSS_BOUND, `RSS stayed at ${mib(rss)} after deleting every bdev (baseline ${mib(baseline)}, ${mib(full)} with them)`);
    // The daemon still makes and serves RAM disks.
    await c.call('bdev_malloc_create', { name: 'After', num_blocks: 2048, block_size: 512 });
    await c.call('bdev_malloc_delete', { name: 'After' });
  });
});
