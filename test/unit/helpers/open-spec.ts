// OpenSpecs for bdevs a test creates without a BdevRegistry: what registry.openSpec() gives a
// registered bdev (the backend's ChannelSpec plus the share of the bdev's layer), with one
// BdevLayer per bdev for the life of the bdev, so statistics of every channel opened from its
// specs (and of a vbdev's base, opened by the vbdev's channel) add up in one place.
import type { Bdev, OpenSpec } from '../../../src/bdev/bdev.js';
import { BdevLayer } from '../../../src/bdev/bdev-layer.js';

const layers = new WeakMap<Bdev, BdevLayer>();

/** The bdev layer of an unregistered bdev: created on first use, the same one afterwards. */
export function layerOf(bdev: Bdev): BdevLayer {
  let layer = layers.get(bdev);
  if (layer === undefined) {
    layer = new BdevLayer();
    layers.set(bdev, layer);
  }
  return layer;
}

/** What a device (or a vbdev over `bdev`) opens `bdev` from; vbdev bases get their own layer. */
export function openSpecOf(bdev: Bdev): OpenSpec {
  return { backend: bdev.channelSpec(openSpecOf), layer: layerOf(bdev).share };
}
