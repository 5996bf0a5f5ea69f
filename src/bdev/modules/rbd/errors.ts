// RBD errors: SPDK's JSON-RPC code (-errno), and a message that starts with strerror() as SPDK's
// does but goes on to say what failed (which pool, which image, which monitor setting).
import { constants } from 'node:os';
import { VhostdError } from '../../../util/errors.js';

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v as number, k]));

const strerror: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENODEV: 'No such device',
  EINVAL: 'Invalid argument',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ERANGE: 'Numerical result out of range',
  ENOTSUP: 'Operation not supported',
  EOPNOTSUPP: 'Operation not supported',
  ENOTCONN: 'Transport endpoint is not connected',
  ETIMEDOUT: 'Connection timed out',
  ECONNREFUSED: 'Connection refused',
  EHOSTUNREACH: 'No route to host',
  // librados reports a blocklisted client as ESHUTDOWN (its EBLOCKLISTED).
  ESHUTDOWN: 'Cannot send after transport endpoint shutdown',
};

/** The errno name for a positive errno number ("errno N" if unknown). */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/** A JSON-RPC error with code -errno and the message "<strerror>: <what>". */
export function rbdError(errno: number, what: string): VhostdError {
  const name = errnoName(errno);
  const text = strerror[name] ?? name;
  const err = new VhostdError(-errno, `${text}: ${what}`);
  err.detail = what;
  return err;
}

/** rbdError for a named errno. */
export function rbdErrno(name: keyof typeof strerror, what: string): VhostdError {
  const errno = (constants.errno as Record<string, number>)[name];
  return rbdError(errno, what);
}
