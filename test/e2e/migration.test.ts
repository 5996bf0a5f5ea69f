// Live migration of a guest whose disk is a vhost-user device: QEMU moves the VM to a second QEMU
// (same host, unix socket) while the guest does I/O, the destination attached to another
// vhost-user socket onto the same data.
//
// * qemu-storage-daemon (libvhost-user: VHOST_F_LOG_ALL, LOG_SHMFD) first: proves the harness
//   (lib/migration.ts) and both guest scripts against a back-end known to migrate correctly.
// * vhostd: two controllers of one daemon on one bdev; two daemons on one file; packed rings;
//   vhost-user-scsi; the dirty-read check, and the same check with vhostd's dirty log switched
//   off (VHOSTD_TEST_NO_DIRTY_LOG=1) to show it catches a missing dirty bit. These run when
//   vhostd offers migration (VHOST_F_LOG_ALL and VHOST_USER_PROTOCOL_F_LOG_SHMFD; without them
//   QEMU refuses to migrate: "vhost-user backend lacks VHOST_USER_PROTOCOL_F_LOG_SHMFD") and are
//   skipped otherwise, with the reason.
//
// Guest RAM is 384 MiB (256 cannot unpack the 90 MiB initramfs): a migration sends ~260 MiB and
// takes 1-2 s under TCG.
// Run: node --import tsx --test test/e2e/migration.test.ts
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { VhostUserFrontend } from '../../src/initiator/frontend.js';
import { ProtocolFeature, Req, VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/vhost-user/protocol.js';
import { VhostdProcess } from '../lib/vhostd.js';
import {
  GuestError,
  type GuestResult,
  GuestSession,
  assertGuestOk,
  buildGuest,
  guestScript,
  makeTempDir,
  vhostUserBlkArgs,
  vhostUserScsiArgs,
} from './lib/guest.js';
import { type MigrationInfo, type MigrationResult, describeMigration, migrateGuest, whileMigrating } from './lib/migration.js';
import { Qsd } from './lib/qsd.js';

const MiB = 1024 * 1024;
const MEM_MIB = 384;
const VHOST_F_LOG_ALL = 26;

before(async () => {
  await buildGuest();
});

// ---------------------------------------------------------------------------------------------
// does vhostd offer migration?

let vhostdMigration: Promise<string | undefined> | undefined;

/**
 * undefined when vhostd's blk and scsi controllers both offer VHOST_F_LOG_ALL and
 * VHOST_USER_PROTOCOL_F_LOG_SHMFD (what QEMU needs to migrate a vhost-user device), else why not.
 */
function vhostdMigrationUnsupported(): Promise<string | undefined> {
  vhostdMigration ??= (async () => {
    const d = await VhostdProcess.start(['-m', '0x1']);
    try {
      await d.rpc('bdev_malloc_create', { name: 'probe', num_blocks: 2048, block_size: 512 });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'probe.blk', dev_name: 'probe' });
      await d.rpc('vhost_create_scsi_controller', { ctrlr: 'probe.scsi' });
      const missing: string[] = [];
      for (const ctrlr of ['probe.blk', 'probe.scsi']) {
        const fe = VhostUserFrontend.connect(d.socket(ctrlr));
        try {
          const features = (await fe.call(Req.GET_FEATURES)).getBigUint64(0, true);
          if (!(features & (1n << BigInt(VHOST_F_LOG_ALL)))) missing.push(`${ctrlr}: VHOST_F_LOG_ALL`);
          if (features & (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES))) {
            const proto = (await fe.call(Req.GET_PROTOCOL_FEATURES)).getBigUint64(0, true);
            if (!(proto & (1n << BigInt(ProtocolFeature.LOG_SHMFD)))) missing.push(`${ctrlr}: VHOST_USER_PROTOCOL_F_LOG_SHMFD`);
          } else {
            missing.push(`${ctrlr}: VHOST_USER_F_PROTOCOL_FEATURES`);
          }
        } finally {
          fe.close();
        }
      }
      return missing.length ? `vhostd does not offer live migration yet (missing ${missing.join(', ')})` : undefined;
    } finally {
      await d.stop();
    }
  })();
  return vhostdMigration;
}

// ---------------------------------------------------------------------------------------------
// migrate-fio-verify.sh around one migration

interface FioMigration {
  r: GuestResult;
  m: MigrationResult;
}

/**
 * Boots a guest on `src` running migrate-fio-verify.sh, migrates it to `dst` once fio has been
 * running for a moment, calls `afterMigration` (e.g. stop the source's back-end), lets the guest
 * finish on the destination, and checks what it reported.
 */
async function fioAcrossMigration(opts: {
  name: string;
  src: string[];
  dst: string[];
  env?: Record<string, string>;
  afterMigration?: () => Promise<void>;
}): Promise<FioMigration> {
  const g = await GuestSession.start({
    name: opts.name,
    memMiB: MEM_MIB,
    timeoutMs: 150_000,
    script: guestScript('migrate-fio-verify.sh'),
    env: { SIZE_MB: '8', MAX_S: '120', ...opts.env },
    devices: opts.src,
  });
  try {
    await g.waitForMark('fio-running', 60_000);
    // well into fio's first round (its write phase has requests in flight)
    await sleep(1500);
    const m = await migrateGuest(g, { devices: opts.dst });
    console.log(`# ${opts.name}: ${describeMigration(m)}`);
    assert.equal(m.status, 'completed', `migration ${m.status}: ${m.error}\n--- source stderr ---\n${m.sourceStderr}\n--- destination stderr ---\n${m.destStderr}`);
    assert.equal(m.destStatus, 'running', 'the destination runs the guest');
    await opts.afterMigration?.();
    g.send('stop');
    const r = await g.waitExit(120_000);
    assertGuestOk(r, `${opts.name}: fio verify across the migration`);
    assert.equal(r.results.fio_errors, '0');
    assert.equal(r.results.region_intact, '1', 'the region written before the migration reads back the same');
    assert.equal(r.results.stopped_by_host, '1');
    assert.ok(Number(r.results.rounds_after_stop) >= 1, 'a full fio round ran on the destination');
    return { r, m };
  } finally {
    await g.kill();
  }
}

// ---------------------------------------------------------------------------------------------
// migrate-dirty-read.sh: see the script's header for the design

const DIRTY_OFFSET = 1 * MiB;

/** The 4 KiB block the host writes for generation `gen` (the guest parses `gen=NNNNNNNN `). */
function genBlock(gen: number): Buffer {
  const head = `gen=${String(gen).padStart(8, '0')} `;
  const fill = `vhostd dirty-read generation ${gen} `;
  return Buffer.from((head + fill.repeat(Math.ceil(4096 / fill.length))).slice(0, 4096));
}

/** Rewrites the block at DIRTY_OFFSET of an image file with a new generation every `periodMs`. */
class GenerationWriter {
  private gen = 0;
  private timer: NodeJS.Timeout | undefined;
  private constructor(private readonly fd: number) {}

  /** Opens `image` and writes generation 1. */
  static open(image: string): GenerationWriter {
    const w = new GenerationWriter(fs.openSync(image, 'r+'));
    w.next();
    return w;
  }
  /** Writes the next generation; returns its number. */
  next(): number {
    this.gen++;
    fs.writeSync(this.fd, genBlock(this.gen), 0, 4096, DIRTY_OFFSET);
    return this.gen;
  }
  start(periodMs: number): void {
    this.timer ??= setInterval(() => this.next(), periodMs);
  }
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
  close(): void {
    this.stop();
    fs.closeSync(this.fd);
  }
}

interface DirtyReadRun {
  /** RESULT lines (also when the guest did not survive the migration: see `exit`) */
  results: Record<string, string>;
  /** the guest's end: its result, or the GuestError when it died (panic) instead of exiting */
  exit: GuestResult | GuestError;
  m: MigrationResult;
  /** the generation the host wrote last, after QEMU's first RAM pass */
  finalGen: number;
}

/**
 * Runs migrate-dirty-read.sh on `src`, migrates to `dst` as the script's header describes, and
 * returns what the guest reported. `image` is the file both back-ends serve (the host writes
 * the generations into it).
 */
async function dirtyReadAcrossMigration(opts: { name: string; image: string; src: string[]; dst: string[] }): Promise<DirtyReadRun> {
  const writer = GenerationWriter.open(opts.image);
  const g = await GuestSession.start({
    name: opts.name,
    memMiB: MEM_MIB,
    timeoutMs: 150_000,
    script: guestScript('migrate-dirty-read.sh'),
    env: { OFFSET: String(DIRTY_OFFSET), MAX_S: '120' },
    devices: opts.src,
  });
  try {
    await g.waitForMark('reading', 60_000);
    writer.start(10);
    let finalGen = 0;
    let passes = 0;
    const m = await migrateGuest(g, {
      devices: opts.dst,
      // called after QEMU's first full pass over RAM: the guest's buffer page has been sent once
      hold: async (src) => {
        passes = (await src.execute<MigrationInfo>('query-migrate')).ram?.['dirty-sync-count'] ?? 0;
        await sleep(200);
        writer.stop();
        finalGen = writer.next();
        // fio reads the block a few hundred times meanwhile: its buffer's last device write is finalGen
        await sleep(400);
        g.send('freeze');
        await whileMigrating(src, g.waitForMark('frozen', 60_000));
      },
    });
    writer.stop();
    console.log(`# ${opts.name}: ${describeMigration(m)}; final generation ${finalGen} written after RAM pass ${passes}`);
    assert.equal(m.status, 'completed', `migration ${m.status}: ${m.error}\n--- source stderr ---\n${m.sourceStderr}\n--- destination stderr ---\n${m.destStderr}`);
    g.send('check');
    await g.waitFor(/^RESULT buffer_intact=/, 60_000);
    const exit = await g.waitExit(60_000).catch((e: unknown) => {
      if (e instanceof GuestError) return e;
      throw e;
    });
    const results = g.results;
    console.log(
      `# ${opts.name}: guest buffer before the switch: gen ${results.pre_gen} (${results.reads} reads into it); ` +
        `on the destination: gen ${results.post_gen}` +
        (exit instanceof GuestError ? `; then the guest died (${exit.reason})` : ''),
    );
    // the test only means something if the last device write into the buffer came after the
    // page was first sent, and the guest saw exactly that block
    assert.ok(Number(results.first_gen) < finalGen, 'the host changed the block while the guest was reading it');
    assert.equal(results.pre_gen, String(finalGen).padStart(8, '0'), 'the guest read the final generation before freezing');
    assert.equal(results.pre_sha, createHash('sha256').update(genBlock(finalGen)).digest('hex'));
    return { results, exit, m, finalGen };
  } finally {
    writer.close();
    await g.kill();
  }
}

// ---------------------------------------------------------------------------------------------

describe('live migration with qemu-storage-daemon (harness check)', () => {
  test('fio verify through a migration between two exports of one node', { timeout: 240_000 }, async () => {
    await using qsd = await Qsd.start({
      disks: [
        { backing: { kind: 'file', sizeBytes: 64 * MiB }, numQueues: 2 },
        { backing: { kind: 'file' }, sameNodeAs: 0, numQueues: 2 },
      ],
    });
    const [a, b] = qsd.disks;
    assert.ok(a && b);
    const { m } = await fioAcrossMigration({
      name: 'mig-qsd-fio',
      src: vhostUserBlkArgs(a.socketPath, { id: 'disk0', numQueues: 2 }),
      dst: vhostUserBlkArgs(b.socketPath, { id: 'disk0', numQueues: 2 }),
    });
    assert.ok((m.downtimeMs ?? 0) > 0 && (m.totalTimeMs ?? 0) > 0);
  });

  test('dirty-read: the buffer the device wrote last holds the same data on the destination', { timeout: 240_000 }, async () => {
    await using qsd = await Qsd.start({
      disks: [
        { backing: { kind: 'file', sizeBytes: 16 * MiB } },
        { backing: { kind: 'file' }, sameNodeAs: 0 },
      ],
    });
    const [a, b] = qsd.disks;
    assert.ok(a?.imagePath && b);
    const { exit, results, finalGen } = await dirtyReadAcrossMigration({
      name: 'mig-qsd-dirty',
      image: a.imagePath,
      src: vhostUserBlkArgs(a.socketPath, { id: 'disk0', numQueues: 1 }),
      dst: vhostUserBlkArgs(b.socketPath, { id: 'disk0', numQueues: 1 }),
    });
    if (exit instanceof GuestError) throw exit;
    assertGuestOk(exit, 'dirty-read with QSD');
    assert.equal(results.buffer_intact, '1');
    assert.equal(results.post_gen, String(finalGen).padStart(8, '0'));
  });
});

describe('live migration with vhostd', () => {
  test('one daemon, two blk controllers on one bdev: fio verify through the migration', { timeout: 240_000 }, async (t) => {
    const why = await vhostdMigrationUnsupported();
    if (why) return t.skip(why);
    const d = await VhostdProcess.start(['-m', '0x1']);
    try {
      const image = path.join(d.dir, 'disk.img');
      await fsp.writeFile(image, '');
      await fsp.truncate(image, 64 * MiB);
      await d.rpc('bdev_aio_create', { name: 'F0', filename: image, block_size: 512 });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'mig.a', dev_name: 'F0' });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'mig.b', dev_name: 'F0' });
      const { m } = await fioAcrossMigration({
        name: 'mig-vhostd-2ctrl',
        src: vhostUserBlkArgs(d.socket('mig.a'), { id: 'disk0', numQueues: 2 }),
        dst: vhostUserBlkArgs(d.socket('mig.b'), { id: 'disk0', numQueues: 2 }),
      });
      assert.equal(m.info.status, 'completed');
      assert.ok(d.alive, 'vhostd survived');
    } finally {
      await d.stop();
    }
  });

  test('two daemons on one file: the source daemon stops after the migration, the guest keeps working', { timeout: 240_000 }, async (t) => {
    const why = await vhostdMigrationUnsupported();
    if (why) return t.skip(why);
    const dir = await makeTempDir('vhostd-migf-');
    const d1 = await VhostdProcess.start(['-m', '0x1']);
    const d2 = await VhostdProcess.start(['-m', '0x1']);
    try {
      const image = path.join(dir, 'shared.img');
      await fsp.writeFile(image, '');
      await fsp.truncate(image, 64 * MiB);
      for (const d of [d1, d2]) {
        await d.rpc('bdev_aio_create', { name: 'F0', filename: image, block_size: 512 });
        await d.rpc('vhost_create_blk_controller', { ctrlr: 'mig.0', dev_name: 'F0' });
      }
      await fioAcrossMigration({
        name: 'mig-vhostd-2proc',
        src: vhostUserBlkArgs(d1.socket('mig.0'), { id: 'disk0', numQueues: 2 }),
        dst: vhostUserBlkArgs(d2.socket('mig.0'), { id: 'disk0', numQueues: 2 }),
        // the guest's last fio round runs with the source daemon gone
        afterMigration: async () => {
          assert.equal(await d1.stop(), 0, 'the source vhostd stops cleanly');
        },
      });
      assert.ok(d2.alive);
    } finally {
      await d1.stop();
      await d2.stop();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  test('packed virtqueues: fio verify through the migration', { timeout: 240_000 }, async (t) => {
    const why = await vhostdMigrationUnsupported();
    if (why) return t.skip(why);
    const d = await VhostdProcess.start(['-m', '0x1']);
    try {
      await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: (64 * MiB) / 512, block_size: 512 });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'pk.a', dev_name: 'M0', packed_ring: true });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'pk.b', dev_name: 'M0', packed_ring: true });
      await fioAcrossMigration({
        name: 'mig-vhostd-packed',
        src: vhostUserBlkArgs(d.socket('pk.a'), { id: 'disk0', numQueues: 2, extra: 'packed=on' }),
        dst: vhostUserBlkArgs(d.socket('pk.b'), { id: 'disk0', numQueues: 2, extra: 'packed=on' }),
      });
    } finally {
      await d.stop();
    }
  });

  test('vhost-user-scsi: fio verify through the migration', { timeout: 240_000 }, async (t) => {
    const why = await vhostdMigrationUnsupported();
    if (why) return t.skip(why);
    const d = await VhostdProcess.start(['-m', '0x1']);
    try {
      await d.rpc('bdev_malloc_create', { name: 'S0', num_blocks: (64 * MiB) / 512, block_size: 512 });
      for (const c of ['scsi.a', 'scsi.b']) {
        await d.rpc('vhost_create_scsi_controller', { ctrlr: c });
        await d.rpc('vhost_scsi_controller_add_target', { ctrlr: c, scsi_target_num: 0, bdev_name: 'S0' });
      }
      await fioAcrossMigration({
        name: 'mig-vhostd-scsi',
        env: { DISK: 'sda' },
        src: vhostUserScsiArgs(d.socket('scsi.a'), { id: 'scsi0', numQueues: 2 }),
        dst: vhostUserScsiArgs(d.socket('scsi.b'), { id: 'scsi0', numQueues: 2 }),
      });
    } finally {
      await d.stop();
    }
  });

  /** Two vhostd processes on one file, `env` for both; the dirty-read run between them. */
  async function vhostdDirtyRead(name: string, env: Record<string, string> | undefined): Promise<DirtyReadRun> {
    const dir = await makeTempDir('vhostd-migd-');
    const d1 = await VhostdProcess.start(['-m', '0x1'], { env });
    const d2 = await VhostdProcess.start(['-m', '0x1'], { env });
    try {
      const image = path.join(dir, 'dirty.img');
      await fsp.writeFile(image, '');
      await fsp.truncate(image, 16 * MiB);
      for (const d of [d1, d2]) {
        await d.rpc('bdev_aio_create', { name: 'F0', filename: image, block_size: 512 });
        await d.rpc('vhost_create_blk_controller', { ctrlr: 'dr.0', dev_name: 'F0' });
      }
      return await dirtyReadAcrossMigration({
        name,
        image,
        src: vhostUserBlkArgs(d1.socket('dr.0'), { id: 'disk0', numQueues: 1 }),
        dst: vhostUserBlkArgs(d2.socket('dr.0'), { id: 'disk0', numQueues: 1 }),
      });
    } finally {
      await d1.stop();
      await d2.stop();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  test('dirty-read: reads the device completed during the migration reach the destination', { timeout: 240_000 }, async (t) => {
    const why = await vhostdMigrationUnsupported();
    if (why) return t.skip(why);
    const { exit, results, finalGen } = await vhostdDirtyRead('mig-vhostd-dirty', undefined);
    if (exit instanceof GuestError) throw exit;
    assertGuestOk(exit, 'dirty-read with vhostd');
    assert.equal(results.buffer_intact, '1');
    assert.equal(results.post_gen, String(finalGen).padStart(8, '0'));
  });

  test('dirty-read with VHOSTD_TEST_NO_DIRTY_LOG=1: the destination holds stale data (the check can fail)', { timeout: 240_000 }, async (t) => {
    const why = await vhostdMigrationUnsupported();
    if (why) return t.skip(why);
    const { exit, results, finalGen } = await vhostdDirtyRead('mig-vhostd-nolog', { VHOSTD_TEST_NO_DIRTY_LOG: '1' });
    assert.equal(
      results.buffer_intact,
      '0',
      `with no dirty bits set, the guest buffer still matched on the destination: does vhostd honour VHOSTD_TEST_NO_DIRTY_LOG?\n${exit.output}`,
    );
    assert.ok(Number(results.post_gen) < finalGen, `destination buffer holds gen ${results.post_gen}, an older one than ${finalGen}`);
    // the script fails; a guest whose memory missed device writes may also just die (kernel panic)
    if (!(exit instanceof GuestError)) assert.equal(exit.exitCode, 1, 'the script reports the stale buffer as a failure');
  });
});
