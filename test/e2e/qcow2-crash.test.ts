// Crash consistency of the qcow2 bdev under SIGKILL, with a real guest: vhostd serves a fresh qcow2
// image (64 KiB clusters: every numbered block allocates) to a guest whose writers write numbered
// 64 KiB blocks with O_DIRECT + O_SYNC (a FLUSH after each) and print "FLUSHED n slot" once the
// flush returned, while fio writes at random elsewhere without flushing. Four rounds: vhostd
// (restarted on the same image from its saved config) serves a freshly booted guest, is SIGKILLed
// at a different moment each round, then the guest's QEMU is stopped too; with both gone the host
// runs qemu-img check (no corruption: exit 0, or 3 for leaked clusters only) and reads the image
// with qemu-img convert: every block any guest so far reported flushed is there with its pattern.
// The numbered blocks only reach the image's L2 tables through the engine's flush, so finding
// them proves that the guest's FLUSH reaches it (the guest checks that the device offers
// VIRTIO_BLK_F_FLUSH, bdev_get_iostat counts the flushes).
//
// A new guest each round, not one that reconnects (reconnect=1) to the restarted vhostd: a write
// the guest completed before the kill lives on only in the killed process's metadata cache until
// a FLUSH, and a FLUSH replayed to the new process succeeds without it — the guest would be told
// such a block is flushed though it is lost (seen: the block whose FLUSH the kill interrupted).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';
import { qemuCheck, qemuImg, qemuMap } from '../unit/qcow2/qemu.js';
import { GuestSession, REPO_ROOT, buildGuest, guestScript, vhostUserBlkArgs } from './lib/guest.js';

const BS = 65536;
const SLOTS = 4096; // 256 MiB of numbered blocks (one L2 table), fio above them
const SIZE = '1G';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function blockBytes(n: number): Buffer {
  const line = `vhostd crash block ${n}\n`;
  return Buffer.from(line.repeat(Math.ceil(BS / line.length))).subarray(0, BS);
}

/** FLUSHED lines the guest printed so far: block number -> slot. */
function flushedBlocks(output: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const [, n, slot] of output.matchAll(/^FLUSHED (\d+) (\d+)$/gm)) m.set(Number(n), Number(slot));
  return m;
}

/** qemu-img check (0, or 3: leaks only) and every flushed block in place; returns the leak count. */
function checkImage(dir: string, img: string, flushed: Map<number, number>, what: string): number {
  const c = qemuCheck(img);
  assert.ok(c.code === 0 || c.code === 3, `${what}: qemu-img check exit ${c.code} (corruption?):\n${c.out}`);
  const raw = join(dir, 'check.raw');
  qemuImg('convert', '-O', 'raw', img, raw);
  const fd = openSync(raw, 'r');
  try {
    const buf = Buffer.alloc(BS);
    for (const [n, slot] of flushed) {
      buf.fill(0);
      readSync(fd, buf, 0, BS, slot * BS);
      assert.ok(buf.equals(blockBytes(n)), `${what}: block ${n} (slot ${slot}) was reported flushed but reads back ${JSON.stringify(buf.subarray(0, 40).toString('latin1'))}`);
    }
  } finally {
    closeSync(fd);
    rmSync(raw, { force: true });
  }
  return Number(/(\d+) leaked clusters/.exec(c.out)?.[1] ?? 0);
}

/**
 * Builds the guest image, starts vhostd serving a fresh 64 KiB-cluster image `name`
 * as controller vhost.0 (bdev Q), and saves its config for the restarts.
 */
async function serveFreshImage(name: string): Promise<{ d: VhostdProcess; dir: string; img: string; config: string }> {
  await buildGuest();
  const d = await VhostdProcess.start(['-m', '0x1']);
  const img = join(d.dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', img, SIZE);
  await d.rpc('bdev_qcow2_create', { name: 'Q', filename: img });
  await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Q' });
  const config = join(d.dir, 'config.json');
  const saved = execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/vhostctl.ts', '-s', d.rpcSocket, 'save_config'], { cwd: REPO_ROOT });
  writeFileSync(config, saved);
  assert.match(saved.toString(), /bdev_qcow2_create/);
  return { d, dir: d.dir, img, config };
}

test('qcow2 under SIGKILL: four kills during flushed writes; qemu-img check clean (leaks at most), every flushed block present', { timeout: 300_000 }, async () => {
  const served = await serveFreshImage('crash.qcow2');
  const { dir, img, config } = served;
  let d = served.d;
  const all = new Map<number, number>();
  const report: string[] = [];
  // Different moments: early in the first allocations, later with more metadata cached, ...
  const delays = [300, 1100, 0, 700].map((ms) => ms + Math.floor(Math.random() * 500));
  let next = 0;
  try {
    for (const [round, delay] of delays.entries()) {
      if (round > 0) d = await VhostdProcess.start(['-m', '0x1', '--json', config], { dir });
      const g = await GuestSession.start({
        name: `qcow2-crash-${round + 1}`,
        script: guestScript('qcow2-crash-writer.sh'),
        // Each round's blocks are new numbers (and so new slots).
        env: { SLOTS: String(SLOTS), WRITERS: '3', FIRST: String(next) },
        devices: vhostUserBlkArgs(d.socket('vhost.0'), { numQueues: 1 }),
      });
      let output: string;
      try {
        await g.waitForMark('running', 60_000);
        await g.waitFor(/^FLUSHED /m, 30_000);
        await sleep(delay);
        if (round === 0) {
          const stats = await d.rpc<{ bdevs: Array<{ num_flush_ops: number }> }>('bdev_get_iostat', { name: 'Q' });
          assert.ok(stats.bdevs[0]!.num_flush_ops > 0, 'FLUSH requests reached the bdev');
        }
        await d.kill();
      } finally {
        await g.kill();
        output = g.output;
      }
      // (Nothing completes once vhostd is dead: every FLUSHED line was flushed before the kill.)
      assert.match(output, /RESULT flush_feature=1/, 'VIRTIO_BLK_F_FLUSH offered and negotiated');
      assert.match(output, /RESULT write_cache=write back/);
      assert.doesNotMatch(output, /WRITE-ERROR|^FAIL/m, 'no guest write failed');
      const flushed = flushedBlocks(output);
      assert.ok(flushed.size > 0, `round ${round + 1}: the guest flushed blocks before the kill`);
      for (const [n, slot] of flushed) all.set(n, slot);
      next = Math.max(...all.keys()) + 1;
      const leaks = checkImage(dir, img, all, `after kill ${round + 1}`);
      // fio's unflushed random writes above the slots: on disk as far as the writers' flushes took them.
      const fio = qemuMap(img).filter((e) => e.data && e.start >= SLOTS * BS).reduce((n, e) => n + e.length, 0);
      report.push(`kill ${round + 1} ${delay} ms after the first flush: ${flushed.size} blocks flushed (${all.size} in all) present, ${leaks} leaked clusters, ${fio / BS} clusters of fio's`);
    }
    console.log(`# ${report.join('; ')}`);
    assert.ok(/[1-9]\d* clusters of fio's/.test(report.join()), 'the background writes reached the image');
  } finally {
    await d.stop();
  }
});

// The same workload with a guest that stays: QEMU (reconnect=1) reconnects to the restarted vhostd
// and hands it its in-flight requests. The killed process had acknowledged writes whose metadata
// it had not written back; the image's dirty bit tells the new process so, and it fails every
// FLUSH of the resumed session (devices/blk/unclean-resume.ts), so the guest's writers report
// WRITE-ERROR from then on instead of FLUSHED for a block that is gone. Every block reported
// FLUSHED, before or after the kill, is in the image.
test('qcow2 under SIGKILL with a guest that reconnects: no FLUSH vouches for a lost write', { timeout: 300_000 }, async () => {
  const served = await serveFreshImage('resume.qcow2');
  const { dir, img, config } = served;
  let d = served.d;
  const g = await GuestSession.start({
    name: 'qcow2-crash-resume',
    script: guestScript('qcow2-crash-writer.sh'),
    env: { SLOTS: String(SLOTS), WRITERS: '3', FIRST: '0' },
    devices: vhostUserBlkArgs(d.socket('vhost.0'), { numQueues: 1, reconnectS: 1 }),
  });
  let output = '';
  try {
    await g.waitForMark('running', 60_000);
    await g.waitFor(/^FLUSHED /m, 30_000);
    await sleep(300 + Math.floor(Math.random() * 700));
    await d.kill();
    const flushedBeforeKill = flushedBlocks(g.output).size;
    d = await VhostdProcess.start(['-m', '0x1', '--json', config], { dir });
    await d.waitForLog(/vhost-user connection accepted/, 30_000);
    const unclean = d.logsMatching(/was not closed cleanly/).length > 0;
    if (unclean) await g.waitFor(/^WRITE-ERROR /m, 60_000);
    else await sleep(3000);
    g.send('stop');
    const r = await g.waitExit(120_000);
    output = r.output;
    assert.match(output, /RESULT bg_errors=0/, 'the background writes (no FLUSH) never failed');
    const flushed = flushedBlocks(output);
    const errors = [...output.matchAll(/^WRITE-ERROR (\d+)$/gm)].length;
    if (unclean) {
      assert.ok(errors > 0, 'the resumed session refused FLUSH');
      assert.equal(d.logsMatching(/failing every FLUSH of the reconnected front-end/).length, 1);
    } else {
      assert.equal(errors, 0, 'a clean image: the resumed session flushes normally');
    }
    assert.equal(await d.stop({ keepDir: true }), 0);
    checkImage(dir, img, flushed, 'after the reconnect');
    console.log(`# ${flushedBeforeKill} blocks flushed before the kill, ${flushed.size} in all, all present; image ${unclean ? 'unclean' : 'clean'} at the kill; ${errors} writes refused a FLUSH after the reconnect`);
  } finally {
    await g.kill();
    await d.stop();
  }
});
