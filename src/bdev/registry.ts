// Control-thread registry of named bdevs. It owns the names (and UUIDs: one check for every
// module, and reservations for creates that take time), the modules' state, and the claims.
// Controllers open bdevs for writing without claiming them (several may share one, as in SPDK);
// vbdevs claim their base exclusively (claimForVbdev). A bdev a blk controller uses cannot be
// deleted until the controller lets it go; SCSI targets and vbdevs over it are removed first
// (hot-detach), as SPDK does: deleting a base deletes the vbdevs claiming it first, recursively
// (a vbdev over a vbdev), after checking that nothing in the chain keeps its bdev.
import type { ErrnoName } from '../util/errno.js';
import { VhostdError, invalidParams } from '../util/errors.js';
import type { Bdev } from './bdev.js';
import { BdevLayer } from './bdev-layer.js';
import type { OpenSpec } from './bdev.js';

/** Builds a module's error reply for a failed name check (modules differ in message style). */
export type NameCheckError = (errno: ErrnoName, what: string) => VhostdError;

/** SPDK's plain -errno with strerror() text (malloc, null, delay, error). */
const plainErrno: NameCheckError = (errno, what) => VhostdError.errno(errno, what);

interface Claim {
  /** Who holds it: a controller or test name, or `bdev <vbdev>` for a vbdev. */
  owner: string;
  /** The vbdev holding it (claimForVbdev): deleting the claimed bdev deletes this one first. */
  vbdev?: string;
  /** A non-bdev holder's way to let go when the bdev is deleted. */
  onRemove?: () => Promise<void>;
}

/** A vbdev's claim on its base: the base, and how the vbdev lets go (once, on destroy). */
export interface BaseClaim {
  readonly base: Bdev;
  release(): void;
}

export class BdevRegistry {
  private readonly bdevs = new Map<string, Bdev>();
  /** Each bdev's layer state (stats, QoS, histogram), by bdev. */
  private readonly layers = new WeakMap<Bdev, BdevLayer>();
  /** Exclusive claims, by claimed bdev name. */
  private readonly claims = new Map<string, Claim>();
  /** Per bdev, the owners that opened it (controllers) and how each lets go on delete. */
  private readonly openers = new Map<string, Map<string, (() => Promise<void>) | undefined>>();
  /** Names held by creates still under way (reserveName): taken for every module. */
  private readonly reserved = new Set<string>();
  /** Each module's state for this vhostd (moduleState): auto-name counters, clusters. */
  private readonly modules = new Map<string, unknown>();

  /**
   * Refuses a name no bdev may have (-32602): empty, or holding a NUL, which C clients and the
   * saved config's consumers would cut short. Called before a backend allocates anything.
   */
  static checkName(name: string): void {
    if (name.length === 0) throw invalidParams('invalid bdev name: empty');
    if (name.includes('\0')) throw invalidParams(`invalid bdev name ${JSON.stringify(name)}: contains a NUL character`);
  }

  /**
   * The one name and UUID check of every module's create, before it allocates anything: an empty
   * name is EINVAL, a name some bdev has (or a pending create holds) or a UUID some bdev has is
   * EEXIST, each built by the module's `fail` (SPDK's modules differ in message style); a NUL is
   * -32602 (checkName). An undefined name (auto-named later) checks only the UUID.
   */
  checkNameFree(name: string | undefined, uuid: string | undefined, fail: NameCheckError = plainErrno): void {
    if (name !== undefined) {
      if (name === '') throw fail('EINVAL', 'bdev name must not be empty');
      BdevRegistry.checkName(name);
      if (this.isNameTaken(name)) throw fail('EEXIST', `bdev ${name} already exists`);
    }
    if (uuid !== undefined && this.hasUuid(uuid)) throw fail('EEXIST', `a bdev with uuid ${uuid} already exists`);
  }

  /**
   * checkNameFree, then holds `name` for a create that takes time (connecting to a cluster) until
   * the returned function is called: no other create gets it meanwhile. Call it before add().
   */
  reserveName(name: string | undefined, uuid: string | undefined, fail: NameCheckError = plainErrno): () => void {
    this.checkNameFree(name, uuid, fail);
    if (name === undefined) return () => undefined;
    this.reserved.add(name);
    return () => void this.reserved.delete(name);
  }

  /** A bdev has the name or a create holds it. */
  isNameTaken(name: string): boolean {
    return this.bdevs.has(name) || this.reserved.has(name);
  }

  hasUuid(uuid: string): boolean {
    for (const b of this.bdevs.values()) if (b.uuid === uuid) return true;
    return false;
  }

  /** A module's state in this registry, made by `init` on first use (one per vhostd, not per process). */
  moduleState<T>(module: string, init: () => T): T {
    if (!this.modules.has(module)) this.modules.set(module, init());
    return this.modules.get(module) as T;
  }

  add(bdev: Bdev): Bdev {
    BdevRegistry.checkName(bdev.name);
    if (this.bdevs.has(bdev.name)) throw VhostdError.errno('EEXIST', `bdev ${bdev.name} already exists`);
    const layer = new BdevLayer();
    if (bdev.uncleanOpen === true) layer.markUnclean();
    this.layers.set(bdev, layer);
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
    const affinity = bdev.threadAffinity;
    return { backend: bdev.channelSpec((base) => this.openSpec(base)), layer: this.layerOf(bdev).share, ...(affinity !== undefined ? { affinity } : {}) };
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

  /** Who holds the bdev's exclusive claim (a vbdev: `bdev <name>`), if anyone. */
  claimedBy(name: string): string | undefined {
    return this.claims.get(name)?.owner;
  }

  /** The vbdevs claiming the bdev (at most one: claims are exclusive), direct ones only. */
  vbdevsOver(name: string): string[] {
    const vbdev = this.claims.get(name)?.vbdev;
    return vbdev !== undefined ? [vbdev] : [];
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
    const holder = this.claimedBy(bdev.name);
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
    return this.claimAs(name, { owner, ...(onRemove ? { onRemove } : {}) });
  }

  /**
   * The vbdev `vbdev` (not registered yet) claims `baseName` (by name or UUID) exclusively, as
   * SPDK's spdk_bdev_module_claim_bdev: EPERM while the base is claimed or open. Deleting the
   * base then deletes the vbdev first. The vbdev calls `release()` when it is destroyed.
   */
  claimForVbdev(baseName: string, vbdev: string): BaseClaim {
    const owner = `bdev ${vbdev}`;
    const base = this.claimAs(baseName, { owner, vbdev });
    let released = false;
    return {
      base,
      release: () => {
        if (released) return;
        released = true;
        this.release(base.name, owner);
      },
    };
  }

  private claimAs(name: string, claim: Claim): Bdev {
    const bdev = this.get(name);
    const holder = this.claimedBy(bdev.name) ?? this.openedBy(bdev.name)[0];
    if (holder !== undefined) throw VhostdError.errno('EPERM', `bdev ${bdev.name} already claimed by ${holder}`);
    this.claims.set(bdev.name, claim);
    return bdev;
  }

  /** Lets go of an open or a claim of `owner`. */
  release(name: string, owner: string): void {
    const users = this.openers.get(name);
    if (users?.delete(owner) && users.size === 0) this.openers.delete(name);
    if (this.claims.get(name)?.owner === owner) this.claims.delete(name);
  }

  /**
   * What keeps `name` from being deleted, looking through the vbdevs over it: an opener that
   * cannot let go (a blk controller) of the bdev or of any vbdev in the chain above it.
   */
  private keeper(name: string, top = name): string | undefined {
    for (const [owner, onRemove] of this.openers.get(name) ?? []) {
      if (onRemove === undefined) return name === top ? owner : `${owner} (through vbdev ${name})`;
    }
    for (const vbdev of this.vbdevsOver(name)) {
      const k = this.keeper(vbdev, top);
      if (k !== undefined) return k;
    }
    return undefined;
  }

  /**
   * Deletes a bdev of the given module (undefined = any module). The vbdevs over it go first,
   * recursively; SCSI targets and other holders that can let go are told first. EBUSY, with
   * nothing removed, when the bdev or a vbdev over it is in use by a blk controller.
   */
  async delete(name: string, module?: string): Promise<void> {
    const bdev = this.get(name);
    if (module !== undefined && bdev.module !== module) throw VhostdError.errno('ENODEV', `bdev ${name} is not a ${module} bdev`);
    const keeping = this.keeper(bdev.name);
    if (keeping !== undefined) throw VhostdError.errno('EBUSY', `bdev ${bdev.name} is in use by ${keeping}`);
    // Cascade: the vbdevs over it (and theirs) first.
    for (const vbdev of this.vbdevsOver(bdev.name)) if (this.bdevs.has(vbdev)) await this.delete(vbdev);
    for (const [, onRemove] of [...(this.openers.get(bdev.name)?.entries() ?? [])]) await onRemove!();
    const hotRemove = this.claims.get(bdev.name)?.onRemove;
    if (hotRemove) await hotRemove();
    const holder = this.claimedBy(bdev.name) ?? this.openedBy(bdev.name)[0];
    if (holder !== undefined) throw VhostdError.errno('EBUSY', `bdev ${bdev.name} is in use by ${holder}`);
    if (!this.bdevs.has(bdev.name)) throw VhostdError.errno('ENODEV', `bdev ${name} does not exist`);
    this.bdevs.delete(bdev.name);
    // Claims the deleted bdev held (a vbdev over its base) go with it, whatever its destroy does.
    for (const [claimed, c] of this.claims) if (c.vbdev === bdev.name) this.claims.delete(claimed);
    await bdev.destroy();
  }

  /**
   * At shutdown, once the controllers are closed: deletes every bdev (vbdevs first), as SPDK's
   * bdev layer does when the app stops, so that backends holding state in memory (a qcow2 image's
   * metadata cache) write it back before the reactors go. Returns the failures, one per bdev.
   */
  async destroyAll(): Promise<Array<{ bdev: string; error: unknown }>> {
    const failed: Array<{ bdev: string; error: unknown }> = [];
    for (const name of [...this.bdevs.keys()]) {
      if (!this.bdevs.has(name)) continue; // went with a base deleted before it
      try {
        await this.delete(name);
      } catch (error) {
        failed.push({ bdev: name, error });
      }
    }
    return failed;
  }
}
