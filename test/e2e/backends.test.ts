// Storage backends end to end: an unmodified QEMU guest (TCG) on vhost-user-blk disks served by
// file (io_uring and aio), Ceph RBD and error-injection bdevs, set up with vhostctl (rpc.py's
// arguments), with the host checking what actually landed in the backing file or image.
//   * file: fio verify + known chunks at known offsets, which the file then holds byte for byte;
//     discard punches a hole (st_blocks drops, SEEK_DATA skips the range) and write-zeroes zeroes,
//     guards intact; FLUSH reaches the file bdev (counted by bdev_get_iostat). vhostd restarted
//     on the same file (as an aio bdev), a second boot finds the chunks.
//   * an injected read failure (bdev_error_inject_error EE_x read failure -n 1) is an I/O error in
//     the guest on that request only; the next read succeeds.
//   * rbd: the same write / restart / check on an image in a throwaway single-node cluster.
//   * without a guest: injection state and iostat counters shared by two reactors, delay latency.
//   * a file on tmpfs is read and written inline on the reactors (no io_uring worker threads):
//     fio verify on 2 queues spread over 2 reactors, chunks byte-exact in the file.
// Guest boots: 5 (3 file, 2 rbd).
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { before, describe, test } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { type CephCluster, CephUnavailable, startCeph } from '../lib/ceph.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { GuestSession, assertGuestOk, buildGuest, guestScript, patternChunk, runGuest, vhostUserBlkArgs } from './lib/guest.js';
import { sequence } from './lib/sequence.js';

const MiB = 1024 * 1024;
const root = new URL('../../', import.meta.url).pathname;
const CHUNK = 65536;

/** Boots a guest on a 2-queue disk that runs fio verify (2 jobs, QD 16, 16 MiB), then writes the persistence chunks. */
function fioThenPersistWrite(name: string, socket: string, seed: string) {
  return runGuest({
    name,
    script: sequence([
      { script: guestScript('blk-fio-verify.sh'), env: { DEV: 'vda', SIZE_MB: '16', IODEPTH: '16', NUMJOBS: '2', FS_CHECK: '0' } },
      { script: guestScript('blk-persist-write.sh'), env: { DEV: 'vda', SEED: seed } },
    ]),
    devices: vhostUserBlkArgs(socket, { numQueues: 2 }),
  });
}

/** vhostctl against `d`, as a user runs it; resolves with stdout, rejects on a non-zero exit. */
function ctl(d: VhostdProcess, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/vhostctl.ts', '-s', d.rpcSocket, ...args], { cwd: root, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`vhostctl ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

type IoStat = Record<string, number> & { io_error: Record<string, number> };

async function iostat(d: VhostdProcess, name: string): Promise<IoStat> {
  const r = await d.rpc<{ bdevs: IoStat[] }>('bdev_get_iostat', { name });
  return r.bdevs[0];
}

function readAt(file: string, offset: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(len);
    assert.equal(readSync(fd, buf, 0, len, offset), len, `short read at ${offset}`);
    return buf;
  } finally {
    closeSync(fd);
  }
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** lseek(SEEK_DATA): the first data byte at or after `offset`, or -1 if only a hole follows. */
function nextData(file: string, offset: number): number {
  const py = 'import errno,os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\ntry:\n print(os.lseek(fd,int(sys.argv[2]),os.SEEK_DATA))\nexcept OSError as e:\n print(-1 if e.errno==errno.ENXIO else -2)';
  const out = Number(execFileSync('python3', ['-c', py, file, String(offset)]).toString().trim());
  assert.notEqual(out, -2, 'lseek(SEEK_DATA) failed');
  return out;
}


/** The persist-write chunks (RESULT offsets, random_offset, random_sha) must be in `image` exactly. */
function checkPersistChunks(results: Record<string, string>, seed: string, read: (off: number, len: number) => Buffer, what: string): void {
  const offsets = results.offsets.split(',').map(Number);
  assert.equal(offsets.length, 4);
  for (const off of offsets) {
    assert.ok(read(off, CHUNK).equals(patternChunk(seed, off, CHUNK)), `${what}: the chunk at ${off} is the guest's pattern`);
  }
  assert.equal(sha256(read(Number(results.random_offset), CHUNK)), results.random_sha, `${what}: the random chunk`);
}

describe('storage backends with a QEMU guest', { timeout: 1_800_000 }, () => {
  before(async () => {
    await buildGuest();
  });

  test('without a guest: two reactors share the injection state and the iostat counters; delay latency', async () => {
    const d = await VhostdProcess.start(['-m', '0x3']);
    let ini: BlkInitiator | undefined;
    try {
      await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: (16 * MiB) / 512, block_size: 512 });
      assert.equal(await ctl(d, 'bdev_error_create', 'M0'), 'true\n');
      assert.equal(await ctl(d, 'bdev_delay_create', '-b', 'EE_M0', '-d', 'D0', '-r', '3000', '-t', '3000', '-w', '0', '-n', '0'), 'D0\n');
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'v0', dev_name: 'D0', cpumask: '0x3' });
      ini = await BlkInitiator.connect(d.socket('v0'), { queues: 2, maxIoBytes: 65536 });
      const data = patternChunk('reactors', 0, 4096);
      assert.equal((await ini.write(2048, data, 0)).status, BlkStatus.OK);

      // Each queue runs on its own reactor: two channels on two threads.
      const per = await d.rpc<{ channels: Array<{ thread_id: number }> }>('bdev_get_iostat', { name: 'EE_M0', per_channel: true });
      assert.deepEqual(per.channels.map((c) => c.thread_id).sort(), [1, 2]);

      const t0 = performance.now();
      assert.equal((await ini.read(2048, 4096, 1)).status, BlkStatus.OK);
      assert.ok(performance.now() - t0 >= 3, 'the delay bdev held the read for its 3 ms');
      assert.equal(await ctl(d, 'bdev_delay_update_latency', 'D0', 'avg_read', '0'), 'true\n');
      assert.equal(await ctl(d, 'bdev_delay_update_latency', 'D0', 'p99_read', '0'), 'true\n');

      // 5 injected failures, 40 reads racing on both reactors: exactly 5 fail, the rest return the data.
      assert.equal(await ctl(d, 'bdev_error_inject_error', 'EE_M0', 'read', 'failure', '-n', '5'), '');
      const reads = await Promise.all(Array.from({ length: 40 }, (_, i) => ini!.read(2048, 4096, i % 2)));
      assert.equal(reads.filter((r) => r.status === BlkStatus.IOERR).length, 5);
      for (const r of reads.filter((x) => x.status === BlkStatus.OK)) assert.ok(Buffer.from(r.data).equals(data));

      const [ee, m0, d0] = [await iostat(d, 'EE_M0'), await iostat(d, 'M0'), await iostat(d, 'D0')];
      assert.deepEqual(ee.io_error, { failed: 5 });
      assert.equal(ee.num_read_ops, 1 + 35);
      assert.deepEqual([m0.num_read_ops, m0.io_error], [36, {}], 'injected failures never reach the base');
      assert.deepEqual([d0.num_read_ops, d0.io_error, d0.num_write_ops, d0.bytes_written], [36, { failed: 5 }, 1, 4096]);
      const channels = (await d.rpc<{ channels: IoStat[] }>('bdev_get_iostat', { name: 'D0', per_channel: true })).channels;
      assert.equal(
        channels.reduce((n, c) => n + c.num_read_ops, 0),
        36,
        'the per-reactor counters add up to the device totals',
      );
      const table = await ctl(d, 'bdev_get_iostat', '--table');
      assert.match(table, /│ EE_M0 +│ 36 +│/);

      // In use: neither the delay bdev nor anything below it can be deleted.
      await assert.rejects(d.rpc('bdev_delay_delete', { name: 'D0' }), /Device or resource busy/);
      await assert.rejects(d.rpc('bdev_malloc_delete', { name: 'M0' }), /Device or resource busy/);
    } finally {
      ini?.close();
      assert.equal(await d.stop(), 0);
    }
  });

  test('file bdev: fio verify, chunks in the file, discard / write-zeroes / flush on the file; restart, second boot; injected read error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhostd-backends-'));
    const file = join(dir, 'disk.img');
    writeFileSync(file, '');
    truncateSync(file, 128 * MiB);
    const LEN = MiB;
    const GUARD = 65536;
    const OFFSET = 40 * MiB;
    const ZOFFSET = OFFSET + LEN + 4 * GUARD;
    const SEED = 'file-boot';
    let d: VhostdProcess | undefined = await VhostdProcess.start(['-m', '0x1']);
    try {
      // First daemon: an io_uring bdev.
      assert.equal(await ctl(d, 'bdev_uring_create', file, 'File0', '512'), 'File0\n');
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'file.0', dev_name: 'File0' });
      const before0 = await iostat(d, 'File0');
      const g = await GuestSession.start({
        name: 'file-first',
        script: sequence([
          { script: guestScript('backend-discard.sh'), env: { DEV: 'vda', SEED: 'discard', OFFSET: String(OFFSET), ZOFFSET: String(ZOFFSET), LEN: String(LEN), GUARD: String(GUARD) } },
          { script: guestScript('blk-fio-verify.sh'), env: { DEV: 'vda', SIZE_MB: '16', IODEPTH: '16', NUMJOBS: '2', FS_CHECK: '0' } },
          { script: guestScript('blk-persist-write.sh'), env: { DEV: 'vda', SEED } },
        ]),
        devices: vhostUserBlkArgs(d.socket('file.0'), { numQueues: 2 }),
      });
      let first;
      try {
        await g.waitFor('WAIT filled');
        // The guest's O_DIRECT writes + fsync: the pattern is in the file, and FLUSH reached the bdev.
        for (const start of [OFFSET, ZOFFSET]) {
          const total = LEN + 2 * GUARD;
          assert.ok(readAt(file, start - GUARD, total).equals(patternChunk('discard', start - GUARD, total)), `pattern at ${start} in the file`);
        }
        const filled = await iostat(d, 'File0');
        assert.ok(filled.num_flush_ops > before0.num_flush_ops, 'the guest fsync reached the file bdev as FLUSH (fdatasync)');
        const blocksFilled = statSync(file).blocks;
        assert.ok(nextData(file, OFFSET) === OFFSET, 'the discard range holds data before the discard');
        g.send('filled');

        await g.waitFor('WAIT discarded');
        const blocksAfter = statSync(file).blocks;
        // st_blocks also counts extent-tree blocks, which the file system may add when the punch
        // splits an extent (ext4: one 4 KiB block here); allow 64 KiB of that.
        assert.ok(
          blocksFilled - blocksAfter >= (LEN - 65536) / 512,
          `discard punched the range out of the file: st_blocks ${blocksFilled} -> ${blocksAfter} (512-byte blocks)`,
        );
        const next = nextData(file, OFFSET);
        assert.ok(next === -1 || next >= OFFSET + LEN, `SEEK_DATA from the discard range finds data only after it (${next})`);
        for (const start of [OFFSET, ZOFFSET]) {
          // The guest wrote one pattern stream over [start - GUARD, start + LEN + GUARD).
          const pattern = patternChunk('discard', start - GUARD, LEN + 2 * GUARD);
          assert.ok(readAt(file, start, LEN).equals(Buffer.alloc(LEN)), `[${start}, +${LEN}) reads zeros in the file`);
          assert.ok(readAt(file, start - GUARD, GUARD).equals(pattern.subarray(0, GUARD)), `guard before ${start}`);
          assert.ok(readAt(file, start + LEN, GUARD).equals(pattern.subarray(GUARD + LEN)), `guard after ${start}`);
        }
        const done = await iostat(d, 'File0');
        assert.equal(done.bytes_unmapped - filled.bytes_unmapped, LEN, 'UNMAP reached the file bdev for the whole range');
        assert.equal(done.bytes_zeroed - filled.bytes_zeroed, LEN, 'WRITE_ZEROES reached the file bdev for the whole range');
        g.send('discarded');
        first = await g.waitExit();
      } finally {
        await g.kill();
      }
      assertGuestOk(first, 'file: discard + fio + persist-write');
      assert.equal(first.results.discard_zeroed, '1');
      assert.equal(first.results.zeroout_zeroed, '1');
      assert.equal(first.results.fio_errors, '0');
      assert.equal(first.results.queues_used, '2/2');
      assert.equal(first.results.size_bytes, String(128 * MiB));
      checkPersistChunks(first.results, SEED, (off, len) => readAt(file, off, len), 'file after the first boot');
      const stats = await iostat(d, 'File0');
      assert.deepEqual(stats.io_error, {});
      assert.ok(stats.num_write_ops > 0 && stats.num_read_ops > 0);

      await d.deleteController('file.0');
      assert.equal(await d.stop(), 0, 'vhostd exits 0 on SIGTERM');
      d = undefined;

      // Second daemon on the same file, as an aio bdev; plus an error-injection disk.
      d = await VhostdProcess.start(['-m', '0x1']);
      assert.equal(await ctl(d, 'bdev_aio_create', file, 'File0', '512'), 'File0\n');
      await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: (16 * MiB) / 512, block_size: 512 });
      assert.equal(await ctl(d, 'bdev_error_create', 'M0'), 'true\n');
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'file.0', dev_name: 'File0' });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'err.0', dev_name: 'EE_M0' });
      const g2 = await GuestSession.start({
        name: 'file-second',
        script: sequence([
          { script: guestScript('blk-persist-check.sh'), env: { DEV: 'vda', SEED, RANDOM_SHA: first.results.random_sha } },
          { script: guestScript('backend-read-error.sh'), env: { DEV: 'vdb' } },
        ]),
        devices: [...vhostUserBlkArgs(d.socket('file.0'), { numQueues: 2 }), ...vhostUserBlkArgs(d.socket('err.0'), { numQueues: 1 })],
      });
      let second;
      try {
        await g2.waitFor('WAIT injected');
        assert.equal(await ctl(d, 'bdev_error_inject_error', 'EE_M0', 'read', 'failure', '-n', '1'), '');
        g2.send('injected');
        second = await g2.waitExit();
      } finally {
        await g2.kill();
      }
      assertGuestOk(second, 'file: persist-check + read error');
      for (const off of first.results.offsets.split(',')) assert.equal(second.results[`match_${off}`], '1', `chunk at ${off}`);
      assert.equal(second.results.random_match, '1');
      assert.equal(second.results.read_before, 'ok');
      assert.notEqual(second.results.first_rc, '0', 'the read hit by the injection failed in the guest');
      assert.equal(second.results.first_eio, '1', 'with EIO');
      assert.equal(second.results.second_rc, '0', 'the next read succeeded');
      assert.equal(second.results.second_match, '1');
      assert.deepEqual((await iostat(d, 'EE_M0')).io_error, { failed: 1 }, 'exactly one I/O was failed');
      assert.deepEqual((await iostat(d, 'M0')).io_error, {});
      assert.deepEqual((await iostat(d, 'File0')).io_error, {});
    } finally {
      if (d) await d.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('file bdev on tmpfs (/dev/shm): mapped and copied inline, no io_uring worker threads; fio verify on 2 queues and 2 reactors, chunks byte-exact in the file', async () => {
    const dir = mkdtempSync('/dev/shm/vhostd-backends-');
    const file = join(dir, 'disk.img');
    writeFileSync(file, '');
    truncateSync(file, 64 * MiB);
    const SEED = 'shm-boot';
    const d = await VhostdProcess.start(['-m', '0x3']);
    try {
      assert.equal(await ctl(d, 'bdev_uring_create', file, 'Shm0', '512'), 'Shm0\n');
      assert.equal(d.logsMatching(/in memory: mapped and copied inline/).length, 1, 'the bdev says it maps the tmpfs file and copies inline');
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'shm.0', dev_name: 'Shm0', cpumask: '0x3' });
      const r = await fioThenPersistWrite('file-shm', d.socket('shm.0'), SEED);
      assertGuestOk(r, 'shm file: fio verify + persist-write');
      assert.equal(r.results.fio_errors, '0');
      assert.equal(r.results.queues_used, '2/2');
      checkPersistChunks(r.results, SEED, (off, len) => readAt(file, off, len), 'tmpfs file after the boot');
      const stats = await iostat(d, 'Shm0');
      assert.deepEqual(stats.io_error, {});
      assert.ok(stats.num_write_ops > 0 && stats.num_read_ops > 0);
      // io_uring would have handed every request to an io-wq worker ("iou-wrk-<tid>") of vhostd.
      const pid = d.proc.pid as number;
      const workers = readdirSync(`/proc/${pid}/task`).filter((t) => readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').startsWith('iou-wrk'));
      assert.deepEqual(workers, [], 'no io_uring worker threads ran the tmpfs I/O');
    } finally {
      await d.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('rbd bdev: fio verify and chunks in the image (rbd export); restart, second boot finds them', async (t) => {
    let ceph: CephCluster;
    try {
      ceph = await startCeph();
    } catch (e) {
      // As test/integration/bdev-rbd.test.ts: only a machine without the packages skips; CI has them.
      if (!(e instanceof CephUnavailable) || process.env.CI) throw e;
      t.skip(`Ceph is not available: ${e.message}`);
      return;
    }
    const savedConf = process.env.CEPH_CONF;
    const IMG = `backends-${process.pid}-${Date.now().toString(36)}`;
    const SEED = 'rbd-boot';
    let d: VhostdProcess | undefined;
    try {
      await ceph.createImage(IMG, '64M');
      // vhostd inherits CEPH_CONF: bdev_rbd_create without a config map reads it, like librados.
      process.env.CEPH_CONF = ceph.conf;
      d = await VhostdProcess.start(['-m', '0x1']);
      assert.equal(await ctl(d, 'bdev_rbd_create', ceph.pool, IMG, '512', '-b', 'Rbd0'), 'Rbd0\n');
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'rbd.0', dev_name: 'Rbd0' });
      const first = await fioThenPersistWrite('rbd-first', d.socket('rbd.0'), SEED);
      assertGuestOk(first, 'rbd: fio + persist-write');
      assert.equal(first.results.fio_errors, '0');
      assert.equal(first.results.size_bytes, String(64 * MiB));
      const stats = await iostat(d, 'Rbd0');
      assert.ok(stats.num_flush_ops > 0, 'the guest fsyncs reached the rbd bdev');
      assert.deepEqual(stats.io_error, {});
      await d.deleteController('rbd.0');
      assert.equal(await d.stop(), 0);
      d = undefined;
      // What another client of the cluster sees, with vhostd gone.
      const image = await ceph.exportImage(IMG);
      assert.equal(image.length, 64 * MiB);
      checkPersistChunks(first.results, SEED, (off, len) => image.subarray(off, off + len), 'rbd export');

      d = await VhostdProcess.start(['-m', '0x1']);
      assert.equal(await ctl(d, 'bdev_rbd_create', ceph.pool, IMG, '512', '-b', 'Rbd0'), 'Rbd0\n');
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'rbd.0', dev_name: 'Rbd0' });
      const second = await runGuest({
        name: 'rbd-second',
        script: guestScript('blk-persist-check.sh'),
        env: { DEV: 'vda', SEED, RANDOM_SHA: first.results.random_sha },
        devices: vhostUserBlkArgs(d.socket('rbd.0'), { numQueues: 2 }),
      });
      assertGuestOk(second, 'rbd: persist-check');
      for (const off of first.results.offsets.split(',')) assert.equal(second.results[`match_${off}`], '1', `chunk at ${off}`);
      assert.equal(second.results.random_match, '1');
      await d.deleteController('rbd.0');
      assert.equal(await ctl(d, 'bdev_rbd_delete', 'Rbd0'), '');
    } finally {
      if (d) await d.stop();
      if (savedConf === undefined) delete process.env.CEPH_CONF;
      else process.env.CEPH_CONF = savedConf;
      await ceph.stop();
    }
  });
});

