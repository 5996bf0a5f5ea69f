// virtio-blk as a reactor runs it: one bdev channel shared by the device's queues on this reactor,
// with the NOMEM queue of that channel (requests the bdev refused wait there for a retry).
import type { BdevChannel } from '../../bdev/bdev.js';
import { openChannel } from '../../bdev/channels.js';
import type { NomemQueue } from '../../bdev/nomem-queue.js';
import type { QueueRunner, RequestHandler } from '../../virtio/queue-runner.js';
import { type Device, type DeviceKind, type DeviceSpec, unknownControl } from '../device.js';
import { BlkHandler, blkNomemQueue } from './blk-handler.js';
import type { BlkRequest } from './blk-request.js';
import type { BlkDeviceSpec } from './blk-spec.js';

export class BlkDevice implements Device {
  private readonly channel: BdevChannel;
  private readonly nomem: NomemQueue<BlkRequest>;

  constructor(
    private readonly spec: BlkDeviceSpec,
    private readonly warn: (msg: string) => void,
  ) {
    this.channel = openChannel(spec.bdev);
    this.nomem = blkNomemQueue(this.channel);
  }

  handlerFor(runner: QueueRunner): RequestHandler {
    return new BlkHandler(runner, this.channel, this.spec, this.warn, this.nomem);
  }

  poll(): number {
    const n = this.channel.poll ? this.channel.poll() : 0;
    return this.nomem.length === 0 ? n : n + this.nomem.kick();
  }

  control(action: string): void {
    throw unknownControl('blk', action);
  }

  async close(): Promise<void> {
    // Only requests of queues given up on (stop timed out) can still wait: their ring is gone.
    this.nomem.clear();
    this.channel.close();
  }
}

export const blkKind: DeviceKind = {
  kind: 'blk',
  create: (spec: DeviceSpec, warn) => new BlkDevice(spec as BlkDeviceSpec, warn),
};
