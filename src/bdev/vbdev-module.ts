// Control-side helpers of the vbdev modules (delay, error): finding the base, claiming it for the
// new vbdev and registering the vbdev with nothing half-done on failure, and SPDK's decoding
// reply of those modules (-32603).
import { type Decoded, type Schema, decodeParams } from '../util/decode.js';
import { RpcCode, VhostdError } from '../util/errors.js';
import type { Bdev } from './bdev.js';
import { DECODE_FAILED } from './module.js';
import type { BaseClaim, BdevRegistry } from './registry.js';

/** The vbdev modules' decoding failure: SPDK_JSONRPC_ERROR_INTERNAL_ERROR, the reason in `detail`. */
export function vbdevDecodeFailed(detail: string): VhostdError {
  const err = new VhostdError(RpcCode.INTERNAL_ERROR, DECODE_FAILED);
  err.detail = detail;
  return err;
}

/** decodeParams with SPDK's reply for the vbdev modules (vbdevDecodeFailed). */
export function decodeVbdevParams<S extends Schema>(params: unknown, schema: S): Decoded<S> {
  try {
    return decodeParams(params, schema, { message: DECODE_FAILED });
  } catch (e) {
    throw vbdevDecodeFailed((e as VhostdError).detail ?? DECODE_FAILED);
  }
}

/** The base bdev by name or UUID; ENODEV if there is none (SPDK would wait for it to appear). */
export function findBase(bdevs: BdevRegistry, name: string): Bdev {
  const base = bdevs.list().find((b) => b.name === name) ?? bdevs.list().find((b) => b.uuid === name);
  if (!base) throw VhostdError.errno('ENODEV', `base bdev ${name} does not exist`);
  return base;
}

/**
 * Claims `base` for the vbdev `name` (EPERM if claimed or open, as SPDK's failed
 * spdk_bdev_module_claim_bdev), builds the vbdev with the claim and registers it. The vbdev's
 * UUID (often derived from the base's) must be free (EEXIST). On any failure the claim is let go.
 */
export function registerVbdev<B extends Bdev>(bdevs: BdevRegistry, base: Bdev, name: string, make: (claim: BaseClaim) => B): B {
  const claim = bdevs.claimForVbdev(base.name, name);
  try {
    const bdev = make(claim);
    if (bdevs.hasUuid(bdev.uuid)) throw VhostdError.errno('EEXIST', `a bdev with uuid ${bdev.uuid} already exists`);
    bdevs.add(bdev);
    return bdev;
  } catch (e) {
    claim.release();
    throw e;
  }
}
