// Reactor-side lookup from a ChannelSpec's module name to the backend's channel constructor, and
// openBdev(), the one way to open a bdev: the backend's channel under a layer channel.
import type { BdevChannel, ChannelFactory, ChannelSpec } from './bdev.js';
import type { OpenSpec } from './bdev.js';
import { LayerChannel } from './layer-channel.js';
import { MallocChannel } from './modules/malloc/malloc.js';
import { NullChannel } from './modules/null/null.js';
import { FileChannel } from './modules/uring/uring.js';
import { RbdChannel } from './modules/rbd/rbd.js';
import { DelayChannel } from './modules/delay/delay.js';
import { ErrorChannel } from './modules/error/error.js';

const factories = new Map<string, ChannelFactory>([
  ['malloc', (spec) => new MallocChannel(spec)],
  ['null', () => new NullChannel()],
  ['uring', (spec) => new FileChannel(spec)],
  ['rbd', (spec) => new RbdChannel(spec)],
  // Virtual bdevs open their base bdev (nested OpenSpec) through openBdev.
  ['delay', (spec) => new DelayChannel(spec, openBdev)],
  ['error', (spec) => new ErrorChannel(spec, openBdev)],
]);

export function registerChannelFactory(module: string, factory: ChannelFactory): void {
  factories.set(module, factory);
}

/** The backend's channel alone (no layer): for the layer itself and backend tests. */
export function openBackendChannel(spec: ChannelSpec): BdevChannel {
  const factory = factories.get(spec.module);
  if (!factory) throw new Error(`no channel factory for bdev module ${spec.module}`);
  return factory(spec);
}

/** Opens a registered bdev as devices and vbdevs use it: through its layer (QoS, NOMEM, stats). */
export function openBdev(spec: OpenSpec): LayerChannel {
  return new LayerChannel(openBackendChannel(spec.backend), spec.layer);
}
