// vhost-user-blk end to end: an unmodified QEMU 7.2 guest (TCG) uses disks served by vhostd.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { assertGuestOk, buildGuest, guestScript, runGuest, vhostUserBlkArgs } from './lib/guest.js';
import { sequence } from './lib/sequence.js';

const MiB = 1024 * 1024;
let d: VhostdProcess;

describe('vhost-user-blk with a QEMU guest', { timeout: 900_000 }, () => {
  before(async () => {
    await buildGuest();
    d = await VhostdProcess.start(['-m', '0x1']);
    await d.rpc('bdev_malloc_create', { name: 'M512', num_blocks: (64 * MiB) / 512, block_size: 512 });
    await d.rpc('bdev_malloc_create', { name: 'M4k', num_blocks: (32 * MiB) / 4096, block_size: 4096 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'M512' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.1', dev_name: 'M4k' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0, 'vhostd exits 0 on SIGTERM');
  });

  test('two controllers at once: exact geometry for 512 and 4096-byte bdevs, fio verify on both', async () => {
    const geometry = guestScript('blk-geometry.sh');
    const r = await runGuest({
      name: 'two-disks',
      script: sequence([
        { script: geometry, env: { DEV: 'vda', EXPECT_SIZE: String(64 * MiB), EXPECT_LBS: '512', EXPECT_RO: '0', EXPECT_QUEUES: '2' } },
        { script: geometry, env: { DEV: 'vdb', EXPECT_SIZE: String(32 * MiB), EXPECT_LBS: '4096', EXPECT_RO: '0', EXPECT_QUEUES: '2' } },
        { script: guestScript('blk-two-disks.sh'), env: { DEVS: 'vda vdb', SIZE_MB: '8' } },
      ]),
      devices: [...vhostUserBlkArgs(d.socket('vhost.0'), { numQueues: 2 }), ...vhostUserBlkArgs(d.socket('vhost.1'), { numQueues: 2 })],
    });
    assertGuestOk(r, 'geometry + two disks');
    assert.equal(r.results.fio_errors, '0');
  });

  test('discard and write-zeroes, fio verify over both queues, ext4 round trip, then data survives a second boot', async () => {
    const first = await runGuest({
      name: 'fio-discard-persist',
      script: sequence([
        // before the filesystem exists: util-linux blkdiscard refuses a disk with a signature
        { script: guestScript('blk-discard.sh'), env: { DEV: 'vda', DISCARD: '1', REQUIRE_DISCARD: '1', DISCARD_ZEROES: '1', ZEROOUT: '1' } },
        { script: guestScript('blk-fio-verify.sh'), env: { DEV: 'vda', SIZE_MB: '16', IODEPTH: '16', NUMJOBS: '2' } },
        { script: guestScript('blk-persist-write.sh'), env: { DEV: 'vda', SEED: 'second-boot' } },
      ]),
      devices: vhostUserBlkArgs(d.socket('vhost.0'), { numQueues: 2 }),
    });
    assertGuestOk(first, 'fio + discard + persist-write');
    assert.equal(first.results.fio_errors, '0');
    assert.equal(first.results.queues_used, '2/2');
    assert.equal(first.results.fs_sha_match, '1');
    assert.equal(first.results.discard_zeroed, '1');
    assert.equal(first.results.zeroout_zeroed, '1');
    assert.ok(first.results.random_sha, 'persist-write reported its random chunk');
    // A second QEMU on the same controller after the first one exited.
    const second = await runGuest({
      name: 'persist-check',
      script: guestScript('blk-persist-check.sh'),
      env: { DEV: 'vda', SEED: 'second-boot', RANDOM_SHA: first.results.random_sha },
      devices: vhostUserBlkArgs(d.socket('vhost.0'), { numQueues: 2 }),
    });
    assertGuestOk(second, 'persist-check');
    assert.equal(second.results.random_match, '1');
  });

  test('packed virtqueues (QEMU packed=on, packed_ring controller): fio verify over both queues', async () => {
    await d.rpc('bdev_malloc_create', { name: 'Mpk', num_blocks: (64 * MiB) / 512, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'packed', dev_name: 'Mpk', packed_ring: true });
    const r = await runGuest({
      name: 'packed',
      script: sequence([
        { script: guestScript('blk-geometry.sh'), env: { DEV: 'vda', EXPECT_SIZE: String(64 * MiB), EXPECT_QUEUES: '2' } },
        { script: guestScript('blk-fio-verify.sh'), env: { DEV: 'vda', SIZE_MB: '16', IODEPTH: '32', NUMJOBS: '2', FS_CHECK: '0' } },
        { script: 'grep -q "^.\\{34\\}1" /sys/block/vda/device/features && echo "RESULT packed=1" || { echo "RESULT packed=0"; exit 1; }', env: {} },
      ]),
      devices: vhostUserBlkArgs(d.socket('packed'), { numQueues: 2, extra: 'packed=on' }),
    });
    assertGuestOk(r, 'packed fio');
    assert.equal(r.results.fio_errors, '0');
    assert.equal(r.results.packed, '1', 'the guest negotiated VIRTIO_F_RING_PACKED');
  });

  test('guest memory on hugetlbfs (memory-backend-file,share=on): fio verify on a RAM disk and on an O_DIRECT file through io_uring fixed buffers', async () => {
    // 512 MiB of 2 MiB pages for the guest, mounted where QEMU looks for them.
    const { execFileSync } = await import('node:child_process');
    const { existsSync, mkdirSync, readFileSync, writeFileSync } = await import('node:fs');
    const free = () => Number(/HugePages_Free:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
    if (free() < 300) writeFileSync('/proc/sys/vm/nr_hugepages', String(Number(readFileSync('/proc/sys/vm/nr_hugepages', 'utf8')) + 300 - free()));
    if (!readFileSync('/proc/mounts', 'utf8').includes('hugetlbfs')) {
      if (!existsSync('/dev/hugepages')) mkdirSync('/dev/hugepages');
      execFileSync('mount', ['-t', 'hugetlbfs', 'none', '/dev/hugepages']);
    }
    assert.ok(free() >= 256, `enough free huge pages (${free()})`);
    await d.rpc('bdev_malloc_create', { name: 'Mhp', num_blocks: (32 * MiB) / 512, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'huge', dev_name: 'Mhp' });
    // An io_uring bdev on a file opened O_DIRECT: the guest's hugepage memory is registered as
    // fixed buffers and its reads and writes go through them (READ_FIXED / WRITE_FIXED).
    const { closeSync, constants, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync: writeFile } = await import('node:fs');
    const dir = mkdtempSync('/var/tmp/vhostd-hugepages-');
    const file = `${dir}/disk.img`;
    writeFile(file, '');
    truncateSync(file, 32 * MiB);
    let direct = true;
    try {
      closeSync(openSync(file, constants.O_RDWR | constants.O_DIRECT));
    } catch {
      direct = false; // no O_DIRECT here: buffered I/O, no fixed buffers
    }
    try {
      await d.rpc('bdev_uring_create', { name: 'Fhp', filename: file, block_size: 512 });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'huge.file', dev_name: 'Fhp' });
      const fixedBefore = d.logsMatching(/registering it with io_uring as fixed buffers/).length;
      const r = await runGuest({
        name: 'hugepages',
        memBackend: 'hugepages',
        script: sequence([
          { script: guestScript('blk-fio-verify.sh'), env: { DEV: 'vda', SIZE_MB: '8', NUMJOBS: '2', FS_CHECK: '0' } },
          { script: guestScript('blk-fio-verify.sh'), env: { DEV: 'vdb', SIZE_MB: '8', NUMJOBS: '2', FS_CHECK: '0' } },
        ]),
        devices: [...vhostUserBlkArgs(d.socket('huge'), { numQueues: 2 }), ...vhostUserBlkArgs(d.socket('huge.file'), { numQueues: 2 })],
      });
      assertGuestOk(r, 'fio on hugepage-backed guest memory');
      assert.equal(r.results.fio_errors, '0');
      if (direct) {
        assert.ok(d.logsMatching(/registering it with io_uring as fixed buffers/).length > fixedBefore, 'the file bdev registered the guest memory as fixed buffers');
      }
      assert.deepEqual(d.logsMatching(/fixed buffers off/), [], 'no registration failed');
      await d.deleteController('huge.file');
      await d.rpc('bdev_uring_delete', { name: 'Fhp' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a read-only controller: the guest sees it read-only, writes fail, the bdev is unchanged', async () => {
    await d.rpc('bdev_malloc_create', { name: 'Mro', num_blocks: (16 * MiB) / 512, block_size: 512 });
    // Fill the first 64 KiB with a pattern through a writable controller, then swap it for a read-only one.
    const pattern = Uint8Array.from({ length: 65536 }, (_, i) => (i * 7 + 3) & 0xff);
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'rw', dev_name: 'Mro' });
    let ini = await BlkInitiator.connect(d.socket('rw'), { maxIoBytes: 65536 });
    assert.equal((await ini.write(0, pattern)).status, BlkStatus.OK);
    ini.close();
    await d.deleteController('rw');
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'ro', dev_name: 'Mro', readonly: true });
    const r = await runGuest({ name: 'readonly', script: guestScript('blk-readonly.sh'), devices: vhostUserBlkArgs(d.socket('ro'), { numQueues: 2 }) });
    assertGuestOk(r, 'readonly');
    assert.equal(r.results.ro, '1');
    assert.equal(r.results.write_rejected, '1');
    await d.deleteController('ro');
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'rw', dev_name: 'Mro' });
    ini = await BlkInitiator.connect(d.socket('rw'), { maxIoBytes: 65536 });
    const back = await ini.read(0, 65536);
    ini.close();
    assert.deepEqual(back.data, pattern, 'the read-only guest changed nothing');
  });
});
