// The bdev layer with a QEMU guest (TCG): fio in the guest reads at the QoS limit the host sets
// with bdev_set_qos_limit (2000 IO/s, 4 MiB/s, ±10%), a limit raised while fio runs takes effect
// within a second (measured on the host with bdev_get_iostat), and an io_uring bdev with a queue
// of one entry under a deep guest queue completes everything with no guest error, on blk and
// scsi (the layer retries what the backend refuses with NOMEM).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statfsSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { VhostdProcess } from '../lib/vhostd.js';
import { GuestSession, assertGuestOk, buildGuest, guestScript, runGuest, vhostUserBlkArgs, vhostUserScsiArgs } from './lib/guest.js';
import { sequence } from './lib/sequence.js';

const MiB = 1024 * 1024;
const within = (v: number, target: number, tol: number) => Math.abs(v - target) <= target * tol;

interface Iostat {
  ticks: number;
  bdevs: Array<{ num_read_ops: number }>;
}

describe('bdev layer with a QEMU guest', { timeout: 900_000 }, () => {
  before(async () => {
    await buildGuest();
  });

  test('QoS: fio reads at 2000 IO/s and 4 MiB/s ±10%; a limit raised live takes effect within a second', async () => {
    const d = await VhostdProcess.start(['-m', '0x1']);
    try {
      await d.rpc('bdev_null_create', { name: 'Q0', num_blocks: (64 * MiB) / 512, block_size: 512 });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'qos.0', dev_name: 'Q0' });
      await using g = await GuestSession.start({
        name: 'qos',
        script: guestScript('blk-qos.sh'),
        env: { DEV: 'vda', RUN_S: '5', LIVE_S: '6' },
        devices: vhostUserBlkArgs(d.socket('qos.0'), { numQueues: 1 }),
      });
      await g.waitFor('WAIT base');
      g.send('base');
      await g.waitFor('WAIT iops');
      await d.rpc('bdev_set_qos_limit', { name: 'Q0', rw_ios_per_sec: 2000 });
      g.send('iops');
      await g.waitFor('WAIT bw');
      await d.rpc('bdev_set_qos_limit', { name: 'Q0', rw_ios_per_sec: 0, rw_mbytes_per_sec: 4 });
      g.send('bw');
      await g.waitFor('WAIT live');
      await d.rpc('bdev_set_qos_limit', { name: 'Q0', rw_ios_per_sec: 2000, rw_mbytes_per_sec: 0 });
      g.send('live');
      await g.waitFor('MARK live-start');
      // fio ramps for 1 s, then runs 6 s at 2000 IO/s; raise the limit in the middle.
      await new Promise((r) => setTimeout(r, 3000));
      const raised = 3000;
      await d.rpc('bdev_set_qos_limit', { name: 'Q0', rw_ios_per_sec: raised });
      const t0 = Date.now();
      await new Promise((r) => setTimeout(r, 1000));
      const a = await d.rpc<Iostat>('bdev_get_iostat', { name: 'Q0' });
      await new Promise((r) => setTimeout(r, 1500));
      const b = await d.rpc<Iostat>('bdev_get_iostat', { name: 'Q0' });
      const liveRate = ((b.bdevs[0].num_read_ops - a.bdevs[0].num_read_ops) * 1e9) / (b.ticks - a.ticks);
      const r = await g.waitExit();
      assertGuestOk(r, 'blk-qos');
      const base = Number(r.results.iops_base);
      const iops = Number(r.results.iops_iops);
      const bwMiB = Number(r.results.bw_kib_bw) / 1024;
      assert.ok(base > 1.3 * raised, `the guest reads ${base} IO/s unlimited: too slow under TCG to show the limits`);
      assert.ok(within(iops, 2000, 0.1), `fio read ${iops} IO/s under a 2000 IO/s limit (unlimited: ${base})`);
      assert.ok(within(bwMiB, 4, 0.1), `fio read ${bwMiB.toFixed(2)} MiB/s under a 4 MiB/s limit`);
      assert.ok(within(liveRate, raised, 0.1), `${liveRate.toFixed(0)} IO/s from 1 s after raising the limit to ${raised} (${Date.now() - t0} ms window end)`);
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('NOMEM: an io_uring bdev with one queue entry under fio QD 32 — no guest error on blk or scsi', async () => {
    // Files on tmpfs/ramfs are read and written inline, never queued: use a disk-backed directory.
    const base = [tmpdir(), '/var/tmp'].find((p) => ![0x01021994, 0x858458f6].includes(Number(statfsSync(p).type)));
    assert.ok(base !== undefined, 'a disk-backed temporary directory');
    const dir = mkdtempSync(join(base, 'vhostd-nomem-e2e-'));
    const d = await VhostdProcess.start(['-m', '0x1'], { env: { VHOSTD_URING_DEPTH: '1', VHOSTD_URING_BACKLOG: '1' } });
    try {
      for (const n of ['U0', 'U1']) {
        const file = join(dir, `${n}.img`);
        writeFileSync(file, '');
        truncateSync(file, 64 * MiB);
        await d.rpc('bdev_uring_create', { filename: file, name: n, block_size: 512 });
      }
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'nomem.blk', dev_name: 'U0' });
      await d.rpc('vhost_create_scsi_controller', { ctrlr: 'nomem.scsi' });
      await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'nomem.scsi', scsi_target_num: 0, bdev_name: 'U1' });
      const r = await runGuest({
        name: 'nomem',
        script: sequence([
          { script: guestScript('blk-fio-verify.sh'), env: { DEV: 'vda', SIZE_MB: '8', IODEPTH: '32', NUMJOBS: '2', FS_CHECK: '0' } },
          {
            // virtio-scsi: the same write + verify at QD 32 on each of two jobs.
            script: [
              '. /vhostd/lib.sh',
              'wait_dev /dev/sda || finish',
              'fio --name=v --filename=/dev/sda --rw=randwrite --bs=4k --size=8m --offset_increment=8m --numjobs=2 --ioengine=libaio --iodepth=32 --direct=1 --verify=crc32c --output=/tmp/scsi.txt >/dev/null 2>&1',
              'rc=$?',
              'bad=$(grep -c "err= *[1-9]\\|verify:" /tmp/scsi.txt)',
              'expect scsi_fio_rc "$rc" 0',
              'expect scsi_fio_error_lines "$bad" 0',
              'finish',
            ].join('\n'),
            env: {},
          },
        ]),
        devices: [...vhostUserBlkArgs(d.socket('nomem.blk'), { numQueues: 2 }), ...vhostUserScsiArgs(d.socket('nomem.scsi'))],
      });
      assertGuestOk(r, 'fio verify on blk and scsi over a one-entry io_uring');
      assert.equal(r.results.fio_errors, '0');
      assert.equal(r.results.scsi_fio_rc, '0');
      for (const n of ['U0', 'U1']) assert.ok(d.logsMatching(new RegExp(`"bdev":"${n}".*refusing with NOMEM`)).length > 0, `${n}: the uring channel refused requests with NOMEM`);
      for (const n of ['U0', 'U1']) {
        const s = await d.rpc<{ bdevs: Array<{ num_write_ops: number; io_error: Record<string, number> }> }>('bdev_get_iostat', { name: n });
        assert.ok(s.bdevs[0].num_write_ops > 1000, `${n}: ${s.bdevs[0].num_write_ops} writes`);
        assert.deepEqual(s.bdevs[0].io_error, {}, `${n}: no failed I/O`);
      }
    } finally {
      assert.equal(await d.stop(), 0);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
