// malloc bdev: a RAM disk in a SharedArrayBuffer that every reactor reads and writes directly.
import { randomUUID } from 'node:crypto';
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

  constructor(
    readonly name: string,
    readonly blockSize: number,
    sizeBytes: number,
    readonly uuid: string = randomUUID(),
  ) {
    this.numBlocks = Math.floor(sizeBytes / blockSize);
    this.buffer = new SharedArrayBuffer(this.numBlocks * blockSize);
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

  async destroy(): Promise<void> {}
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

