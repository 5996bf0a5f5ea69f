// Control-thread registry of named bdevs with SPDK-style exclusive claims: a bdev used by a
// controller cannot be deleted until the controller lets it go — unless the claim holder can
// hot-remove it (a SCSI target), in which case deletion detaches it first, as SPDK does.
import { VhostdError, invalidParams } from '../util/errors.js';
import type { Bdev } from './bdev.js';
import { attachIostat } from './iostat.js';

export class BdevRegistry {
  private readonly bdevs = new Map<string, Bdev>();
  private readonly claims = new Map<string, string>();
  /** Claims whose holder lets go when the bdev is deleted (hot-remove). */
  private readonly onRemove = new Map<string, () => Promise<void>>();

  /**
   * Refuses a name no bdev may have (-32602): empty, or holding a NUL, which C clients and the
   * saved config's consumers would cut short. Called before a backend allocates anything.
   */
  static checkName(name: string): void {
    if (name.length === 0) throw invalidParams('invalid bdev name: empty');
    if (name.includes('\0')) throw invalidParams(`invalid bdev name ${JSON.stringify(name)}: contains a NUL character`);
  }

  add(bdev: Bdev): Bdev {
    BdevRegistry.checkName(bdev.name);
    if (this.bdevs.has(bdev.name)) throw VhostdError.errno('EEXIST', `bdev ${bdev.name} already exists`);
    // bdev_get_iostat counters: every channel spec of a registered bdev carries them.
    attachIostat(bdev);
    this.bdevs.set(bdev.name, bdev);
    return bdev;
  }

  has(name: string): boolean {
    return this.bdevs.has(name);
  }

  /** Looks up by name or uuid (SPDK accepts aliases and uuids). */
  get(name: string): Bdev {
    const bdev = this.bdevs.get(name) ?? [...this.bdevs.values()].find((b) => b.uuid === name);
    if (!bdev) throw VhostdError.errno('ENODEV', `bdev ${name} does not exist`);
    return bdev;
  }

  list(): Bdev[] {
    return [...this.bdevs.values()];
  }

  claimedBy(name: string): string | undefined {
    return this.claims.get(name);
  }

  claim(name: string, owner: string, onRemove?: () => Promise<void>): Bdev {
    const bdev = this.get(name);
    const holder = this.claims.get(bdev.name);
    if (holder !== undefined) throw VhostdError.errno('EPERM', `bdev ${bdev.name} already claimed by ${holder}`);
    this.claims.set(bdev.name, owner);
    if (onRemove) this.onRemove.set(bdev.name, onRemove);
    return bdev;
  }

  release(name: string, owner: string): void {
    if (this.claims.get(name) !== owner) return;
    this.claims.delete(name);
    this.onRemove.delete(name);
  }

  /** Deletes an unclaimed bdev of the given module (undefined = any module). */
  async delete(name: string, module?: string): Promise<void> {
    const bdev = this.get(name);
    if (module !== undefined && bdev.module !== module) throw VhostdError.errno('ENODEV', `bdev ${name} is not a ${module} bdev`);
    const hotRemove = this.onRemove.get(bdev.name);
    if (hotRemove) await hotRemove();
    const holder = this.claims.get(bdev.name);
    if (holder !== undefined) throw VhostdError.errno('EBUSY', `bdev ${bdev.name} is in use by ${holder}`);
    if (!this.bdevs.has(bdev.name)) throw VhostdError.errno('ENODEV', `bdev ${name} does not exist`);
    this.bdevs.delete(bdev.name);
    await bdev.destroy();
  }
}
