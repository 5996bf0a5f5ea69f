// Control-side helpers of the vbdev modules (delay, error): finding the base, claiming it for the
// new vbdev and registering the vbdev with nothing half-done on failure.
import { VhostdError } from '../util/errors.js';
import type { Bdev } from './bdev.js';
import type { BaseClaim, BdevRegistry } from './registry.js';

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
