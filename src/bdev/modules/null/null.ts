// null bdev: accepts every I/O, reads return zeros (SPDK's null bdev without metadata).
import { randomUUID } from 'node:crypto';
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType, zeroFill } from '../../io.js';

export class NullBdev implements Bdev {
  readonly module = 'null';
  readonly productName = 'Null disk';

  constructor(
    readonly name: string,
    readonly blockSize: number,
    readonly numBlocks: number,
    readonly uuid: string = randomUUID(),
  ) {}

  supportsIo(type: IoType): boolean {
    return type !== IoType.UNMAP;
  }

  channelSpec(): ChannelSpec {
    return { module: 'null', blockSize: this.blockSize, numBlocks: this.numBlocks };
  }

  driverSpecific(): undefined {
    return undefined;
  }

  writeConfig(): ConfigCall {
    return {
      method: 'bdev_null_create',
      params: { name: this.name, num_blocks: this.numBlocks, block_size: this.blockSize, uuid: this.uuid },
    };
  }

  async destroy(): Promise<void> {}
}

export class NullChannel implements BdevChannel {
  submit(io: BdevIo): void {
    if (io.type === IoType.READ) zeroFill(io.iov);
    io.complete(IoStatus.SUCCESS);
  }

  close(): void {}
}
