// RBD errors: SPDK's JSON-RPC code (-errno), and a message that starts with strerror() as SPDK's
// does but goes on to say what failed (which pool, which image, which monitor setting). Names,
// numbers and texts come from the one errno table (util/errno.ts); librados reports a blocklisted
// client as ESHUTDOWN (its EBLOCKLISTED), which is there too.
import type { ErrnoName } from '../../../util/errno.js';
import { VhostdError } from '../../../util/errors.js';

/** A JSON-RPC error with code -errno and the message "<strerror>: <what>" (errno of either sign). */
export function rbdError(errno: number, what: string): VhostdError {
  return VhostdError.errnoWithDetail(errno, what);
}

/** rbdError for a named errno. */
export function rbdErrno(name: ErrnoName, what: string): VhostdError {
  return VhostdError.errnoWithDetail(name, what);
}
