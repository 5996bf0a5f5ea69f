// malloc bdev: a RAM disk in a SharedArrayBuffer that every reactor reads and writes directly.
// The buffer is an anonymous mapping of the addon's, not `new SharedArrayBuffer`: V8 frees a
// SharedArrayBuffer's memory only once every isolate that held it (each reactor that opened a
// channel) has collected its last view, and idle isolates do not collect, so deleted RAM disks
// stayed resident. destroy() gives the pages back at once; the (then empty) address range goes
// with the last reference.
import { randomUUID } from 'node:crypto';
import { mmapAnon, native } from '../../../native/index.js';
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType, gatherInto, scatterFrom, zeroBytes } from '../../io.js';

export interface MallocSpec extends ChannelSpec {
  module: 'malloc';
  buffer: SharedArrayBuffer;
}

export class MallocBdev implements Bdev {
  readonly module = 'malloc';
  readonly productName = 'Malloc disk';
  readonly numBlocks: number;
  readonly buffer: SharedArrayBuffer;
  /** The addon's mapping id of `buffer`, until destroy() released it. */
  private mappingId: number | undefined;

  constructor(
    readonly name: string,
    readonly blockSize: number,
    sizeBytes: number,
    readonly uuid: string = randomUUID(),
  ) {
    this.numBlocks = Math.floor(sizeBytes / blockSize);
    const bytes = this.numBlocks * blockSize;
    if (bytes === 0) {
      this.buffer = new SharedArrayBuffer(0);
      return;
    }
    let m: ReturnType<typeof mmapAnon>;
    try {
      m = mmapAnon(bytes);
    } catch (e) {
      // What `new SharedArrayBuffer` threw for a RAM disk too big to allocate (RPC: -ENOMEM).
      throw new RangeError(`cannot allocate a ${bytes}-byte RAM disk: ${(e as Error).message}`);
    }
    this.buffer = m.buffer;
    this.mappingId = m.id;
  }

  supportsIo(_type: IoType): boolean {
    return true;
  }

  channelSpec(): MallocSpec {
    return { module: 'malloc', blockSize: this.blockSize, numBlocks: this.numBlocks, buffer: this.buffer };
  }

  driverSpecific(): undefined {
    return undefined;
  }

  writeConfig(): ConfigCall {
    return {
      method: 'bdev_malloc_create',
      params: { name: this.name, num_blocks: this.numBlocks, block_size: this.blockSize, uuid: this.uuid },
    };
  }

  /**
   * Called once no channel uses the bdev (the registry refuses while it is claimed): the data
   * goes now; a late access anywhere reads zeros rather than faulting.
   */
  async destroy(): Promise<void> {
    if (this.mappingId === undefined) return;
    native.releaseMapping(this.mappingId);
    this.mappingId = undefined;
  }
}

export class MallocChannel implements BdevChannel {
  private readonly data: Uint8Array;

  constructor(spec: ChannelSpec) {
    this.data = new Uint8Array((spec as MallocSpec).buffer);
  }

  submit(io: BdevIo): void {
    switch (io.type) {
      case IoType.READ:
        scatterFrom(io.iov, this.data, io.offset);
        break;
      case IoType.WRITE:
        gatherInto(io.iov, this.data, io.offset);
        break;
      case IoType.UNMAP:
      case IoType.WRITE_ZEROES:
        zeroBytes(this.data, io.offset, io.length);
        break;
      case IoType.FLUSH:
        break;
      default:
        io.complete(IoStatus.FAILED);
        return;
    }
    io.complete(IoStatus.SUCCESS);
  }

  close(): void {}
}

