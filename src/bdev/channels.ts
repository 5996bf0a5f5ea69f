// Reactor-side lookup from a ChannelSpec's module name to the backend's channel constructor.
import type { BdevChannel, ChannelFactory, ChannelSpec } from './bdev.js';
import { MallocChannel } from './modules/malloc/malloc.js';
import { NullChannel } from './modules/null/null.js';
import { FileChannel } from './modules/uring/uring.js';
import { RbdChannel } from './modules/rbd/rbd.js';
import { DelayChannel } from './modules/delay/delay.js';
import { ErrorChannel } from './modules/error/error.js';
import { IostatChannel } from './iostat.js';

const factories = new Map<string, ChannelFactory>([
  ['malloc', (spec) => new MallocChannel(spec)],
  ['null', () => new NullChannel()],
  ['uring', (spec) => new FileChannel(spec)],
  ['rbd', (spec) => new RbdChannel(spec)],
  // Virtual bdevs open their base bdev's channel (nested spec) through openChannel.
  ['delay', (spec) => new DelayChannel(spec, openChannel)],
  ['error', (spec) => new ErrorChannel(spec, openChannel)],
]);

export function registerChannelFactory(module: string, factory: ChannelFactory): void {
  factories.set(module, factory);
}

export function openChannel(spec: ChannelSpec): BdevChannel {
  const factory = factories.get(spec.module);
  if (!factory) throw new Error(`no channel factory for bdev module ${spec.module}`);
  const channel = factory(spec);
  // Registered bdevs carry their bdev_get_iostat counters (src/bdev/iostat.ts).
  return spec.iostat instanceof SharedArrayBuffer ? new IostatChannel(channel, spec.iostat) : channel;
}
