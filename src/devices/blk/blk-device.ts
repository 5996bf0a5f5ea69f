// virtio-blk as a reactor runs it: one bdev channel shared by the device's queues on this reactor.
import type { BdevChannel } from '../../bdev/bdev.js';
import { openChannel } from '../../bdev/channels.js';
import type { QueueRunner, RequestHandler } from '../../virtio/queue-runner.js';
import { type Device, type DeviceKind, type DeviceSpec, unknownControl } from '../device.js';
import { BlkHandler } from './blk-handler.js';
import type { BlkDeviceSpec } from './blk-spec.js';

export class BlkDevice implements Device {
  private readonly channel: BdevChannel;

  constructor(
    private readonly spec: BlkDeviceSpec,
    private readonly warn: (msg: string) => void,
  ) {
    this.channel = openChannel(spec.bdev);
  }

  handlerFor(runner: QueueRunner): RequestHandler {
    return new BlkHandler(runner, this.channel, this.spec, this.warn);
  }

  poll(): number {
    return this.channel.poll ? this.channel.poll() : 0;
  }

  control(action: string): void {
    throw unknownControl('blk', action);
  }

  async close(): Promise<void> {
    this.channel.close();
  }
}

export const blkKind: DeviceKind = {
  kind: 'blk',
  create: (spec: DeviceSpec, warn) => new BlkDevice(spec as BlkDeviceSpec, warn),
};
