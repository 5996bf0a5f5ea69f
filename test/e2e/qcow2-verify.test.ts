// qcow2 bdevs under a real QEMU guest (issue #15): one guest, four vhost-user-blk disks on one
// vhostd, each a qcow2 bdev over an image QEMU's tools made:
//   vda  qemu-img create -f qcow2 (64 KiB clusters), 32 MiB
//   vdb  qemu-img create -f qcow2 -o cluster_size=4096, 24 MiB
//   vdc  qemu-img create -f qcow2 -b base.qcow2 -F qcow2, over a base holding 0x5a in its first
//        32 MiB (qemu-io), 40 MiB: fio's region straddles the end of the base's data
//   vdd  written by qemu-io (patterns, a zero cluster, a compressed cluster), served read-only
// The guest writes known data, runs fio verify (random writes of mixed sizes, O_DIRECT, then every
// block read back) on vda, vdb and vdc at once, and prints the sha256 of every whole disk and of
// each fio region. Then, with the bdevs deleted (metadata written back): qemu-img check is clean on
// every file, the base and the read-only image are byte for byte unchanged, the guest's sha256 of
// each disk is that of `qemu-img convert -O raw`, and `qemu-img compare` finds each image equal to
// a model built on the host from the known writes, the base pattern, and the fio region the guest
// checksummed.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';
import { type GuestResult, assertGuestOk, buildGuest, guestScript, makeTempDir, patternChunk, runGuest, vhostUserBlkArgs } from './lib/guest.js';

const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const img = (...args: string[]) => execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const io = (path: string, ...cmds: string[]) => execFileSync('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

interface Disk {
  dev: string;
  bdev: string;
  file: string;
  sizeBytes: number;
  readonly?: boolean;
  /** fio's region (MiB). */
  fio?: { offMiB: number; sizeMiB: number };
  /** Known writes by the guest: offset, length, seed (pattern_chunk). */
  known: Array<[number, number, string]>;
  /** The content before the guest runs (the backing data, or what qemu-io wrote). */
  model: Uint8Array;
}

describe('qcow2 images under a QEMU guest', { timeout: 300_000 }, () => {
  let d: VhostdProcess;
  let dir: string;

  before(async () => {
    await buildGuest();
    dir = await makeTempDir('vq2-');
    d = await VhostdProcess.start(['-m', '0x1', '-L', 'info']);
  });
  after(async () => {
    if (d) assert.equal(await d.stop(), 0, 'vhostd exits 0 on SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('fio verify on qemu-img images (64 KiB and 4 KiB clusters) and an overlay; a qemu-io image read back; qemu-img check/compare agree', async () => {
    const base = join(dir, 'base.qcow2');
    const disks: Disk[] = [
      { dev: 'vda', bdev: 'Q64k', file: join(dir, 'c64k.qcow2'), sizeBytes: 32 * MiB, fio: { offMiB: 4, sizeMiB: 8 }, known: [[0, 66048, 'a0'], [20 * MiB + 3584, 131072, 'a1']], model: new Uint8Array(32 * MiB) },
      { dev: 'vdb', bdev: 'Q4k', file: join(dir, 'c4k.qcow2'), sizeBytes: 24 * MiB, fio: { offMiB: 8, sizeMiB: 8 }, known: [[MiB + 512, 12288, 'b0'], [20 * MiB, 4096, 'b1']], model: new Uint8Array(24 * MiB) },
      { dev: 'vdc', bdev: 'QOV', file: join(dir, 'overlay.qcow2'), sizeBytes: 40 * MiB, fio: { offMiB: 28, sizeMiB: 8 }, known: [[512, 4096, 'c0'], [37 * MiB + 1536, 70144, 'c1']], model: new Uint8Array(40 * MiB) },
      { dev: 'vdd', bdev: 'QIO', file: join(dir, 'qemu-io.qcow2'), sizeBytes: 16 * MiB, readonly: true, known: [], model: new Uint8Array(16 * MiB) },
    ];
    const [c64k, c4k, overlay, written] = disks;

    img('create', '-q', '-f', 'qcow2', c64k.file, String(c64k.sizeBytes));
    img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', c4k.file, String(c4k.sizeBytes));
    img('create', '-q', '-f', 'qcow2', base, String(overlay.sizeBytes));
    io(base, `write -q -P 0x5a 0 ${32 * MiB}`);
    overlay.model.fill(0x5a, 0, 32 * MiB);
    img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', overlay.file);

    // QEMU writes the read-only disk: data, an unaligned write from a file, a zero cluster in the
    // middle of data, a compressed cluster, a partial cluster.
    img('create', '-q', '-f', 'qcow2', written.file, String(written.sizeBytes));
    const pat1 = patternChunk('qio1', 0, 204800);
    const pat2 = patternChunk('qio2', 0, 65536);
    writeFileSync(join(dir, 'pat1'), pat1);
    writeFileSync(join(dir, 'pat2'), pat2);
    io(
      written.file,
      `write -q -P 0x11 0 ${MiB}`,
      `write -q -s ${join(dir, 'pat1')} ${3 * MiB + 512} 204800`,
      `write -q -z ${512 * 1024} ${128 * 1024}`,
      `write -q -c -s ${join(dir, 'pat2')} ${8 * MiB} 65536`,
      `write -q -P 0x22 ${12 * MiB + 4096} 8192`,
    );
    written.model.fill(0x11, 0, MiB);
    written.model.set(pat1, 3 * MiB + 512);
    written.model.fill(0, 512 * 1024, 640 * 1024);
    written.model.set(pat2, 8 * MiB);
    written.model.fill(0x22, 12 * MiB + 4096, 12 * MiB + 4096 + 8192);
    const map = JSON.parse(img('map', '--output=json', written.file)) as Array<{ start: number; zero: boolean; data: boolean; compressed?: boolean }>;
    assert.ok(map.some((m) => m.start === 512 * 1024 && m.zero && !m.data), `qemu-io made a zero cluster: ${JSON.stringify(map)}`);

    const sumBefore = { base: sha256(readFileSync(base)), written: sha256(readFileSync(written.file)) };

    const devices: string[] = [];
    for (const k of disks) {
      assert.equal(await d.rpc('bdev_qcow2_create', { name: k.bdev, filename: k.file, ...(k.readonly ? { readonly: true } : {}) }), k.bdev);
      await d.rpc('vhost_create_blk_controller', { ctrlr: `q.${k.dev}`, dev_name: k.bdev, ...(k.readonly ? { readonly: true } : {}) });
      // The overlay gets two queues (both on the one reactor that writes the image).
      devices.push(...vhostUserBlkArgs(d.socket(`q.${k.dev}`), { numQueues: k === overlay ? 2 : 1 }));
    }

    let r: GuestResult | undefined;
    try {
      r = await runGuest({
        name: 'qcow2-verify',
        script: guestScript('qcow2-verify.sh'),
        env: {
          KNOWN: disks.flatMap((k) => k.known.map(([off, len, seed]) => `${k.dev}:${off}:${len}:${seed}`)).join(' '),
          FIO: disks.filter((k) => k.fio).map((k) => `${k.dev}:${k.fio!.offMiB}:${k.fio!.sizeMiB}`).join(' '),
          SHA: disks.map((k) => k.dev).join(' '),
          IODEPTH: '16',
        },
        devices,
      });
    } finally {
      // Deleting the bdevs writes the metadata back and closes the files.
      for (const k of disks) {
        await d.deleteController(`q.${k.dev}`);
        assert.equal(await d.rpc('bdev_qcow2_delete', { name: k.bdev }), true);
      }
    }
    assert.ok(r);
    assertGuestOk(r, 'qcow2 fio verify');
    assert.equal(r.results.fio_errors, '0');
    assert.equal(r.results.fio_jobs, '3');
    assert.ok(Number(r.results.fio_write_ios) > 1000, `fio wrote ${r.results.fio_write_ios} blocks`);
    for (const k of disks) assert.equal(r.results[`size_${k.dev}`], String(k.sizeBytes), `/dev/${k.dev} is ${k.bdev}`);
    assert.deepEqual(d.logsMatching(/"level":50/), [], 'vhostd logged no errors');

    for (const f of [...disks.map((k) => k.file), base]) {
      const c = spawnSync('qemu-img', ['check', f], { encoding: 'utf8' });
      assert.equal(c.status, 0, `qemu-img check ${f}: ${c.stdout}${c.stderr}`);
    }
    assert.equal(sha256(readFileSync(base)), sumBefore.base, 'the base image is unchanged');
    assert.equal(sha256(readFileSync(written.file)), sumBefore.written, 'the read-only image is unchanged');

    for (const k of disks) {
      // What the guest saw is what QEMU reads from the image...
      const rawPath = join(dir, `${k.dev}.raw`);
      img('convert', '-O', 'raw', k.file, rawPath);
      const raw = readFileSync(rawPath);
      assert.equal(sha256(raw), r.results[`sha_${k.dev}`], `${k.dev}: the guest's sha256 of the disk is qemu-img convert's`);
      // ...and equal to the model: the known writes, the base / qemu-io data, and fio's region
      // (whose sha256 the guest printed).
      for (const [off, len, seed] of k.known) k.model.set(patternChunk(seed, off, len), off);
      if (k.fio) {
        const region = raw.subarray(k.fio.offMiB * MiB, (k.fio.offMiB + k.fio.sizeMiB) * MiB);
        assert.equal(sha256(region), r.results[`fio_sha_${k.dev}`], `${k.dev}: fio's region as the guest read it`);
        k.model.set(region, k.fio.offMiB * MiB);
      }
      const modelPath = join(dir, `${k.dev}.model`);
      writeFileSync(modelPath, k.model);
      const cmp = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', k.file, modelPath], { encoding: 'utf8' });
      assert.equal(cmp.status, 0, `qemu-img compare ${k.dev} with the model: ${cmp.stdout}${cmp.stderr}`);
      rmSync(rawPath);
      rmSync(modelPath);
    }
    // fio's regions were written in full (the random map covers every block once).
    for (const k of disks.filter((x) => x.fio)) {
      assert.notEqual(r.results[`fio_sha_${k.dev}`], sha256(new Uint8Array(k.fio!.sizeMiB * MiB)), `${k.dev}: fio wrote its region`);
    }
  });
});
