// The bdev modules as the list (modules/index.ts) names them, the reactors' lookup from a
// ChannelSpec's module name to that module's channel factory, and openBdev(), the one way to open
// a bdev: the backend's channel under a layer channel. No backend is named here.
import type { BdevChannel, ChannelFactory, ChannelSpec } from './bdev.js';
import type { OpenSpec } from './bdev.js';
import { LayerChannel } from './layer-channel.js';
import type { BdevModule } from './module.js';
import * as listed from './modules/index.js';

/** Every bdev module of the list (in the order of its export names). */
export const BDEV_MODULES: readonly BdevModule[] = Object.values(listed);

/** ChannelSpec module name → factory, from the modules' `channels`; throws on a name two modules claim. */
export function channelFactories(modules: readonly BdevModule[]): Map<string, ChannelFactory> {
  const map = new Map<string, ChannelFactory>();
  for (const m of modules) {
    for (const [name, make] of Object.entries(m.channels)) {
      if (map.has(name)) throw new Error(`bdev modules: channel module name ${name} is given twice (by ${m.name})`);
      // Virtual bdevs open their base bdev (nested OpenSpec) through openBdev.
      map.set(name, (spec) => make(spec, openBdev));
    }
  }
  return map;
}

const factories = channelFactories(BDEV_MODULES);

/** Adds a factory outside the list (tests' stand-in backends). */
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
