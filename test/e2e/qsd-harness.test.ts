// Peer sanity check: the e2e harness and the guest check scripts, run against
// qemu-storage-daemon's vhost-user-blk export (a known-good backend). When a vhostd e2e test
// fails, this file passing says the harness, the guest and the scripts are fine.
// Run: node --import tsx --test test/e2e/qsd-harness.test.ts
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  GuestError,
  GuestSession,
  assertGuestOk,
  buildGuest,
  guestScript,
  makeTempDir,
  patternChunk,
  runGuest,
  vhostUserBlkArgs,
} from './lib/guest.js';
import { Qsd } from './lib/qsd.js';

const MiB = 1024 * 1024;

function pidAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

before(async () => {
  await buildGuest();
});

describe('guest harness', () => {
  test('exit status, RESULT/MARK lines, env and args, host<->guest signalling', async () => {
    const g = await GuestSession.start({
      name: 'protocol',
      env: { GREETING: "it's a \"test\" $HOME" },
      args: ['one', 'two words'],
      script: `. /vhostd/lib.sh
result greeting "$GREETING"
result argc "$#"
result arg2 "$2"
mark ready
wait_host go 60 || exit 9
result after_wait yes
exit 7
`,
    });
    try {
      await g.waitFor('MARK ready');
      await g.waitFor('WAIT go');
      assert.equal(g.results.after_wait, undefined, 'the guest must block in wait_host');
      g.send('go');
      const r = await g.waitExit();
      assert.equal(r.exitCode, 7, r.output);
      assert.deepEqual(r.results, { greeting: `it's a "test" $HOME`, argc: '2', arg2: 'two words', after_wait: 'yes' });
      assert.deepEqual(r.marks, ['ready']);
      assert.match(r.console, /Linux version|Power down|SeaBIOS/);
    } finally {
      await g.kill();
    }
  });

  test('timeouts and QEMU failures reject, and leave no QEMU behind', async () => {
    const g = await GuestSession.start({ name: 'timeout', script: 'sleep 600', timeoutMs: 3000 });
    const pid = g.pid;
    await assert.rejects(g.waitExit(), (e: unknown) => e instanceof GuestError && e.reason === 'timeout');
    assert.equal(pidAlive(pid), false, 'QEMU must be gone after a timeout');
    assert.equal(fs.existsSync(g.dir), false, 'the temp dir must be removed');
    // a vhost-user socket nobody listens on: QEMU refuses to start
    await assert.rejects(
      runGuest({ name: 'nosocket', script: 'exit 0', devices: vhostUserBlkArgs('/nonexistent/vhost.sock') }),
      (e: unknown) => e instanceof GuestError && e.reason === 'qemu-failed' && /nonexistent/.test(e.stderr),
    );
  });
});

describe('guest scripts against qemu-storage-daemon', () => {
  for (const lbs of [512, 4096] as const) {
    test(`blk-geometry: 64 MiB, ${lbs} B blocks, 2 queues`, async () => {
      await using qsd = await Qsd.start({
        disks: [{ backing: { kind: 'memory', sizeBytes: 64 * MiB }, numQueues: 2, logicalBlockSize: lbs }],
      });
      const r = await runGuest({
        name: `geometry-${lbs}`,
        script: guestScript('blk-geometry.sh'),
        env: { EXPECT_SIZE: String(64 * MiB), EXPECT_LBS: String(lbs), EXPECT_RO: '0', EXPECT_QUEUES: '2' },
        devices: qsd.disks[0]?.qemuArgs(),
      });
      assertGuestOk(r);
      assert.equal(r.results.size_bytes, String(64 * MiB));
      assert.equal(r.results.logical_block_size, String(lbs));
      assert.equal(r.results.num_queues, '2');
      assert.equal(r.results.ro, '0');
    });
  }

  test('blk-geometry notices a mismatch (the checks can fail)', async () => {
    await using qsd = await Qsd.start({ disks: [{ backing: { kind: 'null', sizeBytes: 32 * MiB } }] });
    const r = await runGuest({
      name: 'geometry-mismatch',
      script: guestScript('blk-geometry.sh'),
      env: { EXPECT_SIZE: String(64 * MiB), EXPECT_QUEUES: '2' },
      devices: qsd.disks[0]?.qemuArgs(),
    });
    assert.equal(r.exitCode, 1, r.output);
    assert.equal(r.results.size_bytes, String(32 * MiB));
    assert.equal(r.results.num_queues, '1');
  });

  test('blk-fio-verify: 2 queues both used, ext4 round trip', async () => {
    await using qsd = await Qsd.start({
      disks: [{ backing: { kind: 'memory', sizeBytes: 128 * MiB }, numQueues: 2, iothread: true }],
    });
    const r = await runGuest({ name: 'fio-verify', script: guestScript('blk-fio-verify.sh'), devices: qsd.disks[0]?.qemuArgs() });
    assertGuestOk(r);
    assert.equal(r.results.fio_errors, '0');
    assert.equal(r.results.queues_used, '2/2');
    assert.equal(r.results.fs_sha_match, '1');
    assert.equal(r.results.fs_fsck, 'ok');
  });

  test('blk-readonly: ro export refuses writes; the same script fails on a writable disk', async () => {
    const dir = await makeTempDir('vhostd-t-');
    try {
      const img = path.join(dir, 'ro.img');
      await fsp.writeFile(img, patternChunk('ro', 0, 4 * MiB));
      await using qsd = await Qsd.start({
        disks: [
          { backing: { kind: 'file', path: img }, writable: false, logicalBlockSize: 4096 },
          { backing: { kind: 'memory', sizeBytes: 16 * MiB } },
        ],
      });
      const ro = await runGuest({ name: 'readonly', script: guestScript('blk-readonly.sh'), devices: qsd.disks[0]?.qemuArgs() });
      assertGuestOk(ro);
      assert.equal(ro.results.write_rejected, '1');
      assert.deepEqual(await fsp.readFile(img), patternChunk('ro', 0, 4 * MiB), 'the image must be unchanged');
      const rw = await runGuest({ name: 'readonly-neg', script: guestScript('blk-readonly.sh'), devices: qsd.disks[1]?.qemuArgs() });
      assert.equal(rw.exitCode, 1, rw.output);
      assert.equal(rw.results.write_rejected, '0');
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  test('blk-discard: discard and write-zeroes zero exactly the range; ignored discard is caught', async () => {
    // discard=unmap on a tmpfs file: QSD punches holes, so discarded blocks read back as zeros
    await using qsd = await Qsd.start({
      disks: [
        { backing: { kind: 'memory', sizeBytes: 32 * MiB, discard: 'unmap' } },
        { backing: { kind: 'memory', sizeBytes: 32 * MiB, discard: 'ignore' } },
      ],
    });
    const r = await runGuest({ name: 'discard', script: guestScript('blk-discard.sh'), devices: qsd.disks[0]?.qemuArgs() });
    assertGuestOk(r);
    assert.equal(r.results.discard_zeroed, '1');
    assert.equal(r.results.zeroout_zeroed, '1');
    // discard=ignore: the guest still sees discard support, but nothing is zeroed
    const neg = await runGuest({ name: 'discard-neg', script: guestScript('blk-discard.sh'), devices: qsd.disks[1]?.qemuArgs() });
    assert.equal(neg.exitCode, 1, neg.output);
    assert.equal(neg.results.discard_zeroed, '0');
    assert.equal(neg.results.discard_guard_ok, '1');
  });

  test('blk-persist-write / blk-persist-check across a backend restart', async () => {
    const dir = await makeTempDir('vhostd-t-');
    try {
      const img = path.join(dir, 'persist.img');
      const disk = { backing: { kind: 'file' as const, path: img, sizeBytes: 64 * MiB }, numQueues: 2 };
      let written: Record<string, string>;
      {
        await using qsd = await Qsd.start({ disks: [disk] });
        const w = await runGuest({ name: 'persist-write', script: guestScript('blk-persist-write.sh'), env: { SEED: 'p1' }, devices: qsd.disks[0]?.qemuArgs() });
        assertGuestOk(w);
        written = w.results;
      }
      // what the guest wrote really is in the image, where it was meant to go
      const image = await fsp.readFile(img);
      for (const off of (written.offsets ?? '').split(',').map(Number)) {
        assert.deepEqual(image.subarray(off, off + 65536), patternChunk('p1', off, 65536), `chunk at ${off}`);
      }
      await using qsd = await Qsd.start({ disks: [disk] });
      const c = await runGuest({
        name: 'persist-check',
        script: guestScript('blk-persist-check.sh'),
        env: { SEED: 'p1', RANDOM_SHA: written.random_sha ?? '' },
        devices: qsd.disks[0]?.qemuArgs(),
      });
      assertGuestOk(c);
      assert.equal(c.results.random_match, '1');
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  test('blk-two-disks: concurrent fio verify, each disk its own backend', async () => {
    await using qsd = await Qsd.start({
      disks: [
        { backing: { kind: 'memory', sizeBytes: 48 * MiB }, numQueues: 2 },
        { backing: { kind: 'memory', sizeBytes: 40 * MiB }, numQueues: 1, iothread: true },
      ],
    });
    const [a, b] = qsd.disks;
    assert.ok(a && b);
    const r = await runGuest({ name: 'two-disks', script: guestScript('blk-two-disks.sh'), devices: [...a.qemuArgs(), ...b.qemuArgs()] });
    assertGuestOk(r);
    assert.equal(r.results.size_vda, String(48 * MiB));
    assert.equal(r.results.size_vdb, String(40 * MiB));
    // vda must be the first export's image and vdb the second's
    for (const [dev, disk] of [['vda', a], ['vdb', b]] as const) {
      const head = (await fsp.readFile(disk.imagePath as string)).subarray(0, 65536);
      assert.deepEqual(head, patternChunk(`signature-${dev}`, 0, 65536), `${dev} signature in ${disk.imagePath}`);
    }
  });
});
