// vhost-user-scsi end to end: a QEMU guest sees vhostd's SCSI targets as disks, SCSI tools agree
// with the bdevs, and targets come and go while the guest runs.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';
import { GuestSession, assertGuestOk, buildGuest, guestScript, runGuest, vhostUserScsiArgs } from './lib/guest.js';

const MiB = 1024 * 1024;
let d: VhostdProcess;

describe('vhost-user-scsi with a QEMU guest', { timeout: 600_000 }, () => {
  before(async () => {
    await buildGuest();
    d = await VhostdProcess.start(['-m', '0x1']);
    await d.rpc('bdev_malloc_create', { name: 'S0', num_blocks: (64 * MiB) / 512, block_size: 512 });
    await d.rpc('bdev_malloc_create', { name: 'S1', num_blocks: (32 * MiB) / 4096, block_size: 4096 });
    await d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi0' });
    assert.equal(await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi0', scsi_target_num: 0, bdev_name: 'S0' }), 0);
    assert.equal(await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi0', scsi_target_num: -1, bdev_name: 'S1' }), 1);
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  test('two targets: sizes, INTEL / Malloc disk, sg3_utils, fio verify, ext4, UNMAP', async () => {
    const r = await runGuest({
      name: 'scsi-basic',
      script: guestScript('scsi-basic.sh'),
      env: { EXPECT_SIZE_0: String(64 * MiB), EXPECT_SIZE_1: String(32 * MiB) },
      devices: vhostUserScsiArgs(d.socket('scsi0'), { numQueues: 2 }),
    });
    assertGuestOk(r, 'scsi-basic');
    assert.equal(r.results.model_t0, 'Malloc disk');
    assert.equal(r.results.unmap_zeroed, '1');
  });

  test('packed virtqueues (QEMU packed=on): fio verify on a SCSI disk', async () => {
    await d.rpc('bdev_malloc_create', { name: 'P0', num_blocks: (32 * MiB) / 512, block_size: 512 });
    await d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsipk' });
    await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsipk', scsi_target_num: 0, bdev_name: 'P0' });
    const r = await runGuest({
      name: 'scsi-packed',
      script: [
        '. /vhostd/lib.sh',
        'wait_dev /dev/sda || finish',
        'v=$(basename "$(readlink -f /sys/block/sda/device/../../../..)")',
        'features=$(cat /sys/bus/virtio/devices/*/features | grep -c "^.\\{34\\}1")',
        'expect packed_devices "$features" 1',
        'fio --name=v --filename=/dev/sda --rw=randwrite --bs=4k --size=16m --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --output=/tmp/f.txt >/dev/null 2>&1',
        'result fio_rc $?',
        `expect fio_errors "$(grep -c 'err= *[1-9]\\|verify:' /tmp/f.txt)" 0`,
        'finish',
      ].join('\n'),
      devices: vhostUserScsiArgs(d.socket('scsipk'), { numQueues: 2, extra: 'packed=on' }),
    });
    assertGuestOk(r, 'scsi packed fio');
    assert.equal(r.results.packed_devices, '1', 'the virtio-scsi device negotiated VIRTIO_F_RING_PACKED');
    assert.equal(r.results.fio_errors, '0');
  });

  test('hot-attach and hot-detach of a target while fio verify runs on another', async () => {
    await d.rpc('bdev_malloc_create', { name: 'S2', num_blocks: (16 * MiB) / 512, block_size: 512 });
    await d.rpc('bdev_malloc_create', { name: 'H0', num_blocks: (32 * MiB) / 512, block_size: 512 });
    await d.rpc('vhost_create_scsi_controller', { ctrlr: 'hot' });
    await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'hot', scsi_target_num: 0, bdev_name: 'H0' });
    const g = await GuestSession.start({ kernelArgs: process.env.GUEST_KARGS, name: 'scsi-hotplug', script: guestScript('scsi-hotplug.sh'), devices: vhostUserScsiArgs(d.socket('hot'), { numQueues: 2 }) });
    try {
      await g.waitForMark('ready');
      assert.equal(await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'hot', scsi_target_num: 2, bdev_name: 'S2' }), 2);
      g.send('added');
      await g.waitForMark('seen');
      await d.rpc('vhost_scsi_controller_remove_target', { ctrlr: 'hot', scsi_target_num: 2 });
      g.send('removed');
      const r = await g.waitExit();
      assertGuestOk(r, 'scsi-hotplug');
      assert.equal(r.results.added, '1');
      assert.equal(r.results.removed, '1');
      assert.equal(r.results.fio_errors, '0');
      assert.ok(Number(r.results.fio_runs) >= 1);
    } finally {
      await g.kill();
    }
    // The bdev is free again once detached, and deleting a bdev that backs a target hot-detaches it.
    await d.rpc('bdev_malloc_delete', { name: 'S2' });
    await d.rpc('bdev_malloc_delete', { name: 'H0' });
    const [hot] = await d.rpc<Array<{ backend_specific: { scsi: unknown[] } }>>('vhost_get_controllers', { name: 'hot' });
    assert.deepEqual(hot.backend_specific.scsi, []);
  });
});
