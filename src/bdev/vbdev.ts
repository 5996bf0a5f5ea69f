// Building blocks of bdevs layered over another bdev (the delay and error vbdevs):
// * the pass-through base both extend: PassThroughBdev (control side: name, uuid, geometry and
//   supported I/O of the base, the claim on the base and its release on destroy, the spec with the
//   base's OpenSpec) and PassThroughChannel (reactor side: opens the base through its layer and
//   passes child I/O through; a vbdev overrides only what it changes);
// * child I/O: the layer hands the channel below a ChildIo that shares the parent's scatter list
//   and, when completed, calls back into the layer, which then completes the parent. Children
//   come from a per-channel free list and are reused: nothing is allocated per I/O once warm;
// * SPDK's name-based (SHA-1, version 5) UUIDs for vbdevs created without a uuid.
import { createHash } from 'node:crypto';
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall, OpenSpec } from './bdev.js';
import { type BdevIo, IoStatus, type IoType, IoVecs } from './io.js';

export interface ChildIoOwner {
  /** The channel below completed `child` (at most once per take()). */
  childDone(child: ChildIo, status: IoStatus): void;
}

const NO_IOV = new IoVecs(0);

export class ChildIo implements BdevIo {
  type: IoType = 0;
  offset = 0;
  length = 0;
  iov: IoVecs = NO_IOV;
  /** The I/O this child stands for; undefined while the child is free. */
  parent: BdevIo | undefined = undefined;
  tag = 0;
  /** Scratch for the owner: the status the channel below reported. */
  status: IoStatus = 0;

  /**
   * Where this child's scratch time (ms) lives in its pool's `times`: a double stored in an
   * object field allocates a heap number on every store, once per I/O.
   */
  readonly timeAt: number;

  constructor(
    private readonly owner: ChildIoOwner,
    index: number,
  ) {
    this.timeAt = index;
  }

  complete(status: IoStatus): void {
    // A second completion of the same child (a bug below) must not complete a recycled parent.
    if (this.parent === undefined) return;
    this.owner.childDone(this, status);
  }
}

export class ChildIoPool {
  private readonly free: ChildIo[] = [];
  private created = 0;
  /** Children handed out and not yet released. */
  outstanding = 0;
  /** One scratch time per child (submission time, deadline), at child.timeAt; grows with the pool. */
  times = new Float64Array(64);

  constructor(private readonly owner: ChildIoOwner) {}

  take(parent: BdevIo): ChildIo {
    const c = this.free.pop() ?? this.create();
    c.parent = parent;
    c.type = parent.type;
    c.offset = parent.offset;
    c.length = parent.length;
    c.iov = parent.iov;
    this.outstanding++;
    return c;
  }

  private create(): ChildIo {
    const index = this.created++;
    if (index >= this.times.length) {
      const grown = new Float64Array(this.times.length * 2);
      grown.set(this.times);
      this.times = grown;
    }
    return new ChildIo(this.owner, index);
  }

  /** Puts the child back and returns its parent (complete the parent after this). */
  release(child: ChildIo): BdevIo {
    const parent = child.parent as BdevIo;
    child.parent = undefined;
    child.iov = NO_IOV;
    this.free.push(child);
    this.outstanding--;
    return parent;
  }
}

/** The 16 bytes of a textual UUID. */
export function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replaceAll('-', ''), 'hex');
}

/**
 * spdk_uuid_generate_sha1 (libuuid's uuid_generate_sha1): SHA-1 over the namespace UUID's bytes
 * and `name`, first 16 bytes, version 5 and the RFC 4122 variant.
 */
export function uuidSha1(namespace: string, name: Uint8Array): string {
  const h = createHash('sha1').update(uuidBytes(namespace)).update(name).digest().subarray(0, 16);
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** What every pass-through vbdev's spec carries: its base, opened through the base's layer. */
export interface PassThroughSpec extends ChannelSpec {
  base: OpenSpec;
}

/**
 * A bdev over a claimed base bdev with the base's geometry and supported I/O. The module claims
 * the base (registry.claimForVbdev) and hands in how to let go: destroy() does, once.
 */
export abstract class PassThroughBdev implements Bdev {
  abstract readonly module: string;
  abstract readonly productName: string;
  private released = false;

  constructor(
    readonly name: string,
    readonly base: Bdev,
    readonly uuid: string,
    private readonly releaseBase: () => void,
  ) {}

  get blockSize(): number {
    return this.base.blockSize;
  }

  get numBlocks(): number {
    return this.base.numBlocks;
  }

  supportsIo(type: IoType): boolean {
    return this.base.supportsIo(type);
  }

  /** The spec's common part; a vbdev adds its own shared state. */
  protected passThroughSpec(open: (base: Bdev) => OpenSpec): PassThroughSpec {
    return { module: this.module, blockSize: this.blockSize, numBlocks: this.numBlocks, base: open(this.base) };
  }

  abstract channelSpec(open?: (base: Bdev) => OpenSpec): ChannelSpec;
  abstract driverSpecific(): Record<string, unknown> | undefined;
  abstract writeConfig(): ConfigCall;

  async destroy(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.releaseBase();
  }
}

/**
 * A vbdev's channel: its base's channel (opened through the base's layer) and a pool of child
 * I/O. By default it passes every I/O through as a child and completes the parent with the child's
 * status; after close() it fails new I/O. Subclasses override submit/childDone/poll/onClose.
 */
export abstract class PassThroughChannel implements BdevChannel, ChildIoOwner {
  protected readonly base: BdevChannel;
  protected readonly pool = new ChildIoPool(this);
  protected closed = false;

  constructor(spec: ChannelSpec, open: (spec: OpenSpec) => BdevChannel) {
    this.base = open((spec as PassThroughSpec).base);
  }

  submit(io: BdevIo): void {
    if (this.closed) return io.complete(IoStatus.FAILED);
    this.base.submit(this.pool.take(io));
  }

  childDone(c: ChildIo, status: IoStatus): void {
    this.pool.release(c).complete(status);
  }

  /** The base's completions, if it polls. */
  poll(): number {
    return this.base.poll ? this.base.poll() : 0;
  }

  /** What the vbdev does before the base closes (complete or fail what it holds). */
  protected onClose(): void {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose();
    this.base.close();
  }
}
