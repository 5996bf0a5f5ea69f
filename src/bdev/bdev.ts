// The one bdev interface every backend implements (SPDK's bdev function table, split by thread):
// a Bdev lives on the control thread (naming, claims, config, RPC info); each reactor opens its own
// BdevChannel from the Bdev's structured-cloneable ChannelSpec and submits I/O on it. Devices never
// see a backend's channel alone: they open an OpenSpec (the backend's spec plus the bdev layer's
// share, from the registry), which puts the layer channel on top (channels.ts).
import type { BdevIo, IoType } from './io.js';

/** Structured-cloneable description a reactor turns into a channel (SharedArrayBuffers, fds, names). */
export interface ChannelSpec {
  module: string;
  blockSize: number;
  numBlocks: number;
  [key: string]: unknown;
}

/** What a bdev's layer channels share with the control thread: SharedArrayBuffers, sent once with the spec. */
export interface LayerShare {
  /** Int32 control words (layer-share.ts Ctl).  */
  control: SharedArrayBuffer;
  /** bdev_get_iostat counters (iostat.ts). */
  iostat: SharedArrayBuffer;
  /** Latency histogram buckets, one block per thread (histogram.ts). */
  histogram: SharedArrayBuffer;
}

/** What a device (or a vbdev over its base) opens: the backend's spec and the layer's share. */
export interface OpenSpec {
  backend: ChannelSpec;
  layer: LayerShare;
  /** Bdev.threadAffinity of the bdev, for the device's queue placement. */
  affinity?: string;
}

export interface BdevChannel {
  submit(io: BdevIo): void;
  /** Reaps completions for backends that poll (io_uring, rbd); returns the number reaped. */
  poll?(): number;
  /** Takes back an I/O that has not reached the backend (the layer's QoS/NOMEM waits); true if it did. */
  abort?(io: BdevIo): boolean;
  close(): void;
}

/** The RPC call that recreates a bdev (SPDK's write_config_json). */
export interface ConfigCall {
  method: string;
  params: Record<string, unknown>;
}

export interface Bdev {
  readonly name: string;
  readonly module: string;
  readonly productName: string;
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly uuid: string;
  supportsIo(type: IoType): boolean;
  /**
   * The backend was opened from state a killed process left with writes it had acknowledged
   * possibly lost (a qcow2 image with the dirty bit): a reconnecting front-end's FLUSHes, which
   * would vouch for those writes, must fail (devices/blk/unclean-resume.ts).
   */
  readonly uncleanOpen?: boolean;
  /**
   * Set when the backend must see all its I/O from one reactor (a writable qcow2 image: one
   * engine holds its metadata): devices on it put all their queues on one reactor, the same for
   * every device with this key.
   */
  readonly threadAffinity?: string;
  /**
   * The spec a reactor opens this backend's channel from. A vbdev puts its base in it as
   * `open(base)`: the base's I/O then goes through the base's own layer (stats, QoS) too.
   */
  channelSpec(open?: (base: Bdev) => OpenSpec): ChannelSpec;
  /** The `driver_specific` object of bdev_get_bdevs, if the module has one. */
  driverSpecific(): Record<string, unknown> | undefined;
  writeConfig(): ConfigCall;
  /** Releases the backend's resources once no channel uses it. */
  destroy(): Promise<void>;
}

export type ChannelFactory = (spec: ChannelSpec) => BdevChannel;
