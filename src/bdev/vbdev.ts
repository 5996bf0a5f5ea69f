// Building blocks of bdevs layered over another bdev (the delay and error vbdevs) and of the
// iostat counter that wraps every channel:
// * child I/O: the layer hands the channel below a ChildIo that shares the parent's scatter list
//   and, when completed, calls back into the layer, which then completes the parent. Children
//   come from a per-channel free list and are reused: nothing is allocated per I/O once warm;
// * SPDK's name-based (SHA-1, version 5) UUIDs for vbdevs created without a uuid.
import { createHash } from 'node:crypto';
import { type BdevIo, type IoStatus, type IoType, IoVecs } from './io.js';

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
