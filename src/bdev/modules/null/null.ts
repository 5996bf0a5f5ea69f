// null bdev: accepts every I/O and touches no data, like SPDK's null bdev (without metadata) and
// QEMU's null-co default (read-zeroes=off): a read leaves the guest's buffer as it was. It measures
// the data path itself; the malloc bdev is the RAM disk that moves bytes.
import { randomUUID } from 'node:crypto';
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType } from '../../io.js';

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
    io.complete(IoStatus.SUCCESS);
  }

  close(): void {}
}
