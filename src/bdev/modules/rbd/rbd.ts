// Ceph RBD bdev (SPDK module/bdev/rbd): one librbd image handle per bdev, opened off the control
// thread and shared by every reactor's channel. librbd image handles are thread-safe, and one
// handle per bdev means one exclusive-lock owner, one cache and one set of watches per image (as
// SPDK since 22.01); a handle per channel would make reactors of the same process fight over the
// exclusive lock, and would need a blocking rbd_open on the reactor. Each channel has its own
// completion queue: librbd's callbacks post (slot, result) into it and signal its eventfd, which
// the reactor watches; I/O goes straight from guest-memory windows into librbd (no bounce copy).
import { randomUUID } from 'node:crypto';
import { type FdWatchHandle, native } from '../../../native/index.js';
import { refreshClock } from '../../../native/clock.js';
import { type RbdQueueHandle, rbd } from '../../../native/rbd.js';
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType } from '../../io.js';
import type { ClusterInfo, RadosCluster } from './cluster.js';
import { Errno } from '../../../util/errno.js';
import { rbdErrno, rbdError } from './errors.js';

const { ENOENT, EOPNOTSUPP } = Errno;

export const RBD_PRODUCT_NAME = 'Ceph Rbd Disk';

/** Block sizes a vhost device can expose. */
export const RBD_BLOCK_SIZES: readonly number[] = [512, 4096];

/** What identifies the image and how the bdev reaches it (bdev_rbd_create's params, decoded). */
export interface RbdSettings {
  poolName: string;
  rbdName: string;
  userId?: string;
  /** rados_conf_set entries given instead of a config file. */
  config?: Record<string, string>;
  /** A connection registered with bdev_rbd_register_cluster. */
  clusterName?: string;
  readOnly: boolean;
}

export interface RbdSpec extends ChannelSpec {
  module: 'rbd';
  imageId: number;
}

/** A pool context and an image opened on it. */
export class RbdImage {
  private closed = false;

  private constructor(
    readonly ioctxId: number,
    readonly imageId: number,
    readonly sizeBytes: number,
  ) {}

  /** Opens pool/image on a connected cluster; nothing stays open if it fails. */
  static async open(cluster: RadosCluster, pool: string, image: string, readOnly: boolean): Promise<RbdImage> {
    const ioctx = await rbd().rbdIoctxCreate(cluster.id, pool);
    if (ioctx < 0) {
      if (ioctx === -ENOENT) throw rbdError(ENOENT, `pool ${pool} does not exist`);
      throw rbdError(-ioctx, `cannot open pool ${pool}`);
    }
    const img = await rbd().rbdImageOpen(ioctx, image, readOnly);
    if (img < 0) {
      await rbd().rbdIoctxClose(ioctx);
      if (img === -ENOENT) throw rbdError(ENOENT, `image ${image} does not exist in pool ${pool}`);
      throw rbdError(-img, `cannot open image ${pool}/${image}`);
    }
    const opened = new RbdImage(ioctx, img, rbd().rbdImageSize(img));
    if (opened.sizeBytes < 0) {
      await opened.close();
      throw rbdError(-opened.sizeBytes, `cannot read the size of image ${pool}/${image}`);
    }
    return opened;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // The image holds its pool context: the order only decides which close does the work.
    await rbd().rbdImageClose(this.imageId);
    await rbd().rbdIoctxClose(this.ioctxId);
  }
}

/** Checks the block size against the image; throws EINVAL saying why. */
export function checkGeometry(settings: RbdSettings, blockSize: number, sizeBytes: number): number {
  const what = `${settings.poolName}/${settings.rbdName}`;
  if (sizeBytes === 0) throw rbdErrno('EINVAL', `image ${what} is empty`);
  if (sizeBytes % blockSize !== 0) {
    throw rbdErrno('EINVAL', `image ${what} size ${sizeBytes} is not a multiple of block_size ${blockSize}`);
  }
  return sizeBytes / blockSize;
}

export class RbdBdev implements Bdev {
  readonly module = 'rbd';
  readonly productName = RBD_PRODUCT_NAME;
  private destroyed = false;

  constructor(
    readonly name: string,
    readonly blockSize: number,
    readonly numBlocks: number,
    readonly uuid: string,
    readonly settings: RbdSettings,
    private readonly image: RbdImage,
    /** Closes (own connection) or releases (registered cluster) the rados connection. */
    private readonly releaseCluster: () => Promise<void>,
    /** The registered cluster's settings, shown in driver_specific like SPDK. */
    private readonly clusterInfo?: ClusterInfo,
  ) {}

  static newUuid(): string {
    return randomUUID();
  }

  supportsIo(type: IoType): boolean {
    if (this.settings.readOnly) return type === IoType.READ || type === IoType.FLUSH;
    return true;
  }

  channelSpec(): RbdSpec {
    return { module: 'rbd', blockSize: this.blockSize, numBlocks: this.numBlocks, imageId: this.image.imageId };
  }

  driverSpecific(): Record<string, unknown> {
    const s = this.settings;
    const rbdInfo: Record<string, unknown> = { pool_name: s.poolName, rbd_name: s.rbdName };
    if (this.clusterInfo) {
      // SPDK dumps the registered cluster's entry in place of the bdev's own user/config.
      const { name, core_mask: _coreMask, ...entry } = this.clusterInfo;
      Object.assign(rbdInfo, { cluster_name: name }, entry);
    } else {
      if (s.userId !== undefined) rbdInfo.user_id = s.userId;
      if (s.config !== undefined) rbdInfo.config = { ...s.config };
    }
    if (s.readOnly) rbdInfo.read_only = true;
    return { rbd: rbdInfo };
  }

  writeConfig(): ConfigCall {
    const s = this.settings;
    const params: Record<string, unknown> = {
      name: this.name,
      pool_name: s.poolName,
      rbd_name: s.rbdName,
      block_size: this.blockSize,
    };
    if (s.userId !== undefined) params.user_id = s.userId;
    if (s.config !== undefined) params.config = { ...s.config };
    if (s.clusterName !== undefined) params.cluster_name = s.clusterName;
    if (s.readOnly) params.read_only = true;
    params.uuid = this.uuid;
    return { method: 'bdev_rbd_create', params };
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      await this.image.close();
    } finally {
      await this.releaseCluster();
    }
  }
}

/** Completions taken from the native queue per drain() call. */
const DRAIN_BATCH = 128;

/**
 * A reactor's channel: submits on the shared image through its own native queue and completes
 * I/O when the queue's eventfd fires. Slots are indices into `ios`, recycled through a free stack,
 * so steady-state I/O allocates nothing in JS.
 */
export class RbdChannel implements BdevChannel {
  private readonly queue: RbdQueueHandle;
  private readonly watch: FdWatchHandle;
  private readonly ios: Array<BdevIo | undefined> = [];
  private free = new Int32Array(64);
  private nfree = 0;
  private readonly doneSlots = new Int32Array(DRAIN_BATCH);
  private readonly doneResults = new Float64Array(DRAIN_BATCH);
  private inFlight = 0;

  constructor(spec: ChannelSpec) {
    this.queue = new (rbd().RbdQueue)((spec as RbdSpec).imageId);
    const fd = this.queue.fd;
    // Reset the eventfd before draining, so a completion posted in between signals again.
    this.watch = new native.FdWatch(fd, () => {
      native.eventfdRead(fd);
      // Woken outside a poll pass: completions are timed now, not at the pass before the sleep.
      refreshClock();
      this.poll();
    });
    this.watch.start();
  }

  private takeSlot(io: BdevIo): number {
    let slot: number;
    if (this.nfree > 0) {
      slot = this.free[--this.nfree];
    } else {
      slot = this.ios.length;
      this.ios.push(undefined);
      if (this.ios.length > this.free.length) {
        const grown = new Int32Array(this.free.length * 2);
        grown.set(this.free.subarray(0, this.nfree));
        this.free = grown;
      }
    }
    this.ios[slot] = io;
    this.inFlight++;
    return slot;
  }

  private putSlot(slot: number): BdevIo | undefined {
    const io = this.ios[slot];
    this.ios[slot] = undefined;
    this.free[this.nfree++] = slot;
    this.inFlight--;
    return io;
  }

  submit(io: BdevIo): void {
    if (io.length === 0 && io.type !== IoType.FLUSH) {
      io.complete(IoStatus.SUCCESS);
      return;
    }
    const slot = this.takeSlot(io);
    const q = this.queue;
    const iov = io.iov;
    let rc: number;
    switch (io.type) {
      case IoType.READ:
        rc = q.readv(slot, io.offset, iov.bufs, iov.offs, iov.lens, iov.count);
        break;
      case IoType.WRITE:
        rc = q.writev(slot, io.offset, iov.bufs, iov.offs, iov.lens, iov.count);
        break;
      case IoType.FLUSH:
        rc = q.flush(slot);
        break;
      case IoType.UNMAP:
        rc = q.discard(slot, io.offset, io.length);
        break;
      case IoType.WRITE_ZEROES:
        rc = q.writeZeroes(slot, io.offset, io.length);
        break;
      default:
        rc = -EOPNOTSUPP;
    }
    if (rc < 0) {
      this.putSlot(slot);
      io.complete(IoStatus.FAILED);
    }
  }

  /** Completes every I/O librbd has finished; returns how many. Also called by polling reactors. */
  poll(): number {
    if (this.inFlight === 0) return 0;
    let total = 0;
    for (;;) {
      const n = this.queue.drain(this.doneSlots, this.doneResults);
      if (n <= 0) break;
      for (let i = 0; i < n; i++) {
        const io = this.putSlot(this.doneSlots[i]);
        if (io === undefined) continue;
        const res = this.doneResults[i];
        // SPDK: a read succeeded only if it returned every byte, anything else if it returned >= 0.
        const ok = io.type === IoType.READ ? res === io.length : res >= 0;
        io.complete(ok ? IoStatus.SUCCESS : IoStatus.FAILED);
      }
      total += n;
      if (n < DRAIN_BATCH) break;
    }
    return total;
  }

  close(): void {
    this.watch.close();
    this.queue.close();
  }
}
