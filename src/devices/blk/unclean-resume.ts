// A front-end that reconnects to a restarted vhostd (vhost-user INFLIGHT_SHMFD: SET_INFLIGHT_FD
// without GET_INFLIGHT_FD) resubmits the requests it had in flight and carries on. If the bdev
// was opened from state the killed process left unclean (a qcow2 image whose metadata changes
// were only in that process's memory), writes it acknowledged are gone. Every FLUSH of the
// resumed session covers them (they completed before the kill, so before any FLUSH of the new
// session was sent), so none may succeed: each fails, as a disk reports the loss of its volatile
// cache, and the guest learns its data is gone instead of believing it safe. Failing only the
// first is not enough: with several writers, the second writer's FLUSH would vouch for its write
// that was lost too. A front-end that starts fresh (a new guest) has nothing to lose and clears
// the bdev layer's UNCLEAN_OPEN word.
import { Ctl } from '../../bdev/layer-share.js';

/** For a queue starting now: whether its FLUSHes must fail. A fresh front-end clears the bdev's unclean state. */
export function flushesLost(control: SharedArrayBuffer, resumed: boolean): boolean {
  const ctl = new Int32Array(control);
  if (!resumed) {
    Atomics.store(ctl, Ctl.UNCLEAN_OPEN, 0);
    return false;
  }
  return Atomics.load(ctl, Ctl.UNCLEAN_OPEN) !== 0;
}
