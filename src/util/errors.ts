// Errors that carry the JSON-RPC code SPDK would report: SPDK answers most failures with
// -errno as the code and strerror() as the message, so callers can match on either. Codes,
// names and texts of errnos come from ./errno.ts (the one table).
//
// The code is the error's identity: it is what crosses from a reactor to the control thread
// (`toWireError` / `VhostdError.fromWire`) and what the RPC client receives.
import { type ErrnoName, errnoNumber, strerror } from './errno.js';

/** JSON-RPC 2.0 standard codes used by SPDK. */
export const RpcCode = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
} as const;

/**
 * An error as it crosses threads (structured-clone safe): `code` is a negative errno (-1..-4095)
 * or a JSON-RPC code, `message` the text the RPC reply carries, `detail` what is logged only.
 */
export interface WireError {
  code: number;
  message: string;
  detail?: string;
}

/** An error with an SPDK-compatible JSON-RPC error code. */
export class VhostdError extends Error {
  detail?: string;

  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }

  /** -errno with strerror() text, as SPDK's spdk_strerror replies; `detail` is logged, not sent. */
  static errno(name: ErrnoName, detail?: string): VhostdError {
    const n = errnoNumber(name);
    // Only an unknown name (a bug: ErrnoName forbids it) lacks a number.
    const err = new VhostdError(n === undefined ? RpcCode.INTERNAL_ERROR : -n, strerror(name));
    if (detail) err.detail = detail;
    return err;
  }

  /**
   * -errno whose message says what failed after the strerror() text ("No such file or directory:
   * cannot open /x"), for backends whose failures need the pool, file or setting in the reply.
   * `errno` is a name or a number of either sign.
   */
  static errnoWithDetail(errno: ErrnoName | number, what: string): VhostdError {
    const n = typeof errno === 'number' ? Math.abs(errno) : errnoNumber(errno);
    const err = new VhostdError(n === undefined ? RpcCode.INTERNAL_ERROR : -n, `${strerror(n ?? errno)}: ${what}`);
    err.detail = what;
    return err;
  }

  /** Rebuilds an error that crossed threads, with its code. */
  static fromWire(w: WireError): VhostdError {
    const err = new VhostdError(w.code, w.message);
    if (w.detail !== undefined) err.detail = w.detail;
    return err;
  }
}

/**
 * `e` as it is sent to another thread: a VhostdError keeps its code and detail; anything else
 * (a bug, or a failure nobody gave a code) is INTERNAL_ERROR with its message, as the RPC server
 * would have answered it on this thread.
 */
export function toWireError(e: unknown): WireError {
  if (e instanceof VhostdError) return e.detail === undefined ? { code: e.code, message: e.message } : { code: e.code, message: e.message, detail: e.detail };
  const message = e instanceof Error ? e.message : String(e);
  return { code: RpcCode.INTERNAL_ERROR, message: message || 'Internal error' };
}

export function invalidParams(message: string): VhostdError {
  return new VhostdError(RpcCode.INVALID_PARAMS, message);
}
