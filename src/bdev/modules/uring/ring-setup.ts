// How a channel's io_uring is created. A block device's completion reaches io_uring as task work
// for the thread that submitted the I/O, and by default the kernel interrupts that thread to run
// it wherever it is: a reactor spinning in a poll pass takes an IPI (on a VM, an exit) per
// completion, and the work runs in whatever the reactor happened to be doing. With DEFER_TASKRUN
// (Linux 6.1, needs SINGLE_ISSUER: a channel's ring is used by its reactor only) the work waits
// until the reactor reaps: TASKRUN_FLAG marks the ring, liburing's peek then enters the kernel to
// run it in one batch, and the registered eventfd still wakes a sleeping reactor. Loop device
// over /dev/shm, our initiator, 4 alternated bench runs: randread QD 128 232-300k -> 359-408k IO/s,
// randwrite QD 128 143-199k -> 188-228k, QD 32 and QD 1 up by less than their spread.
// COOP_TASKRUN (5.19) only drops the IPI; older kernels refuse both with EINVAL.
import { type UringRing, fileConst } from '../../../native/uring.js';
import { Errno } from '../../../util/errno.js';

export const RING_SETUPS = [
  { name: 'defer-taskrun', flags: fileConst.IORING_SETUP_DEFER_TASKRUN | fileConst.IORING_SETUP_SINGLE_ISSUER | fileConst.IORING_SETUP_TASKRUN_FLAG },
  { name: 'coop-taskrun', flags: fileConst.IORING_SETUP_COOP_TASKRUN | fileConst.IORING_SETUP_TASKRUN_FLAG },
  { name: 'plain', flags: 0 },
] as const;

export type RingSetupName = (typeof RING_SETUPS)[number]['name'];

/**
 * Opens `ring` with the best setup the kernel takes, starting from `first` (VHOSTD_URING_SETUP, to
 * compare them); returns 0 or -errno of the last attempt, and the setup that took.
 */
export function openRing(ring: UringRing, first: string | undefined = process.env.VHOSTD_URING_SETUP): { rc: number; setup: RingSetupName } {
  const start = Math.max(0, RING_SETUPS.findIndex((s) => s.name === first));
  let rc = -Errno.EINVAL;
  for (let i = start; i < RING_SETUPS.length; i++) {
    rc = ring.init(RING_SETUPS[i].flags);
    // EINVAL: flags this kernel does not know; anything else (ENOMEM, EPERM) is not about them.
    if (rc !== -Errno.EINVAL) return { rc, setup: RING_SETUPS[i].name };
  }
  return { rc, setup: 'plain' };
}
