// Errors that carry the JSON-RPC code SPDK would report: SPDK answers most failures with
// -errno as the code and strerror() as the message, so callers can match on either.
import { constants } from 'node:os';

const strerror: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENODEV: 'No such device',
  EINVAL: 'Invalid argument',
  ENOSPC: 'No space left on device',
  ENOTSUP: 'Operation not supported',
  ERANGE: 'Numerical result out of range',
};

/** An error with an SPDK-compatible JSON-RPC error code. */
export class VhostdError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }

  /** -errno with strerror() text, as SPDK's spdk_strerror replies; `detail` is logged, not sent. */
  static errno(name: keyof typeof strerror, detail?: string): VhostdError {
    const err = new VhostdError(-(constants.errno as Record<string, number>)[name], strerror[name] ?? name);
    if (detail) err.detail = detail;
    return err;
  }

  detail?: string;
}

/** JSON-RPC 2.0 standard codes used by SPDK. */
export const RpcCode = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
} as const;

export function invalidParams(message: string): VhostdError {
  return new VhostdError(RpcCode.INVALID_PARAMS, message);
}
