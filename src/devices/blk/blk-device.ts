// virtio-blk as a reactor runs it: one bdev layer channel shared by the device's queues on this
// reactor (the layer holds what QoS or a full backend queue keeps back).
import { openBdev } from '../../bdev/channels.js';
import type { LayerChannel } from '../../bdev/layer-channel.js';
import type { QueueRunner, RequestHandler } from '../../virtio/queue-runner.js';
import { type Device, type DeviceKind, type DeviceSpec, unknownControl } from '../device.js';
import { BlkHandler } from './blk-handler.js';
import type { BlkDeviceSpec } from './blk-spec.js';
import { flushesLost } from './unclean-resume.js';

export class BlkDevice implements Device {
  private readonly channel: LayerChannel;

  constructor(
    private readonly spec: BlkDeviceSpec,
    private readonly warn: (msg: string) => void,
  ) {
    this.channel = openBdev(spec.bdev);
  }

  handlerFor(runner: QueueRunner): RequestHandler {
    return new BlkHandler(runner, this.channel, this.spec, this.warn, flushesLost(this.spec.bdev.layer.control, runner.resumed));
  }

  poll(): number {
    return this.channel.poll();
  }

  control(action: string): void {
    throw unknownControl('blk', action);
  }

  async close(): Promise<void> {
    // Only requests of queues given up on (stop timed out) can still wait: their ring is gone.
    this.channel.close();
  }
}

export const blkKind: DeviceKind = {
  kind: 'blk',
  create: (spec: DeviceSpec, warn) => new BlkDevice(spec as BlkDeviceSpec, warn),
};
