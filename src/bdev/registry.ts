// Control-thread registry of named bdevs. Controllers open bdevs for writing without claiming them
// (several may share one, as in SPDK); vbdevs claim their base exclusively. A bdev a blk controller
// uses cannot be deleted until the controller lets it go; SCSI targets and vbdevs over it are
// removed first (hot-detach), as SPDK does.
import { VhostdError, invalidParams } from '../util/errors.js';
import type { Bdev } from './bdev.js';
import { BdevLayer } from './bdev-layer.js';
import type { OpenSpec } from './bdev.js';

export class BdevRegistry {
  private readonly bdevs = new Map<string, Bdev>();
  /** Each bdev's layer state (stats, QoS, histogram), by bdev. */
  private readonly layers = new WeakMap<Bdev, BdevLayer>();
  private readonly claims = new Map<string, string>();
  /** Per bdev, the owners that opened it (controllers) and how each lets go on delete. */
  private readonly openers = new Map<string, Map<string, (() => Promise<void>) | undefined>>();
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
    this.layers.set(bdev, new BdevLayer());
    this.bdevs.set(bdev.name, bdev);
    return bdev;
  }

  /** The bdev layer state (statistics, QoS, histogram) of a registered bdev. */
  layerOf(bdev: Bdev): BdevLayer {
    const layer = this.layers.get(bdev);
    if (layer === undefined) throw VhostdError.errno('ENODEV', `bdev ${bdev.name} is not registered`);
    return layer;
  }

  /** What a reactor opens the bdev from (channels.ts openBdev): backend spec plus layer share. */
  openSpec(bdev: Bdev): OpenSpec {
    return { backend: bdev.channelSpec((base) => this.openSpec(base)), layer: this.layerOf(bdev).share };
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

  /** The module (vbdev) holding the bdev's exclusive claim, if any. */
  claimedBy(name: string): string | undefined {
    return this.claims.get(name);
  }

  /** The controllers (owners) that have the bdev open for writing. */
  openedBy(name: string): string[] {
    return [...(this.openers.get(name)?.keys() ?? [])];
  }

  /**
   * Opens the bdev for writing without claiming it, as SPDK's vhost does: several controllers may
   * share a bdev (live migration between two controllers, multipath). `onRemove` lets the owner
   * let go when the bdev is deleted (a SCSI target hot-detaches); owners without it keep the bdev
   * from being deleted. Refused while a vbdev holds its exclusive claim.
   */
  open(name: string, owner: string, onRemove?: () => Promise<void>): Bdev {
    const bdev = this.get(name);
    const holder = this.claims.get(bdev.name);
    if (holder !== undefined) throw VhostdError.errno('EPERM', `bdev ${bdev.name} already claimed by ${holder}`);
    let users = this.openers.get(bdev.name);
    if (users === undefined) this.openers.set(bdev.name, (users = new Map()));
    users.set(owner, onRemove);
    return bdev;
  }

  /**
   * Claims the bdev exclusively for `owner` (a vbdev over its base, SPDK's exclusive_write claim):
   * refused while it is claimed or open. Deleting the bdev calls `onRemove` first (the vbdev goes too).
   */
  claim(name: string, owner: string, onRemove?: () => Promise<void>): Bdev {
    const bdev = this.get(name);
    const holder = this.claims.get(bdev.name) ?? this.openedBy(bdev.name)[0];
    if (holder !== undefined) throw VhostdError.errno('EPERM', `bdev ${bdev.name} already claimed by ${holder}`);
    this.claims.set(bdev.name, owner);
    if (onRemove) this.onRemove.set(bdev.name, onRemove);
    return bdev;
  }

  /** Lets go of an open or a claim of `owner`. */
  release(name: string, owner: string): void {
    const users = this.openers.get(name);
    if (users?.delete(owner) && users.size === 0) this.openers.delete(name);
    if (this.claims.get(name) !== owner) return;
    this.claims.delete(name);
    this.onRemove.delete(name);
  }

  /** Deletes an unclaimed bdev of the given module (undefined = any module). */
  async delete(name: string, module?: string): Promise<void> {
    const bdev = this.get(name);
    if (module !== undefined && bdev.module !== module) throw VhostdError.errno('ENODEV', `bdev ${name} is not a ${module} bdev`);
    // Users that cannot let go (a blk controller) keep the bdev; the others are told first.
    const users = [...(this.openers.get(bdev.name)?.entries() ?? [])];
    const keeping = users.find(([, onRemove]) => onRemove === undefined);
    if (keeping) throw VhostdError.errno('EBUSY', `bdev ${bdev.name} is in use by ${keeping[0]}`);
    for (const [, onRemove] of users) await onRemove!();
    const hotRemove = this.onRemove.get(bdev.name);
    if (hotRemove) await hotRemove();
    const holder = this.claims.get(bdev.name) ?? this.openedBy(bdev.name)[0];
    if (holder !== undefined) throw VhostdError.errno('EBUSY', `bdev ${bdev.name} is in use by ${holder}`);
    if (!this.bdevs.has(bdev.name)) throw VhostdError.errno('ENODEV', `bdev ${name} does not exist`);
    this.bdevs.delete(bdev.name);
    await bdev.destroy();
  }
}
