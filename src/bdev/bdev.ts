// The one bdev interface every backend implements (SPDK's bdev function table, split by thread):
// a Bdev lives on the control thread (naming, claims, config, RPC info); each reactor opens its own
// BdevChannel from the Bdev's structured-cloneable ChannelSpec and submits I/O on it.
import type { BdevIo, IoType } from './io.js';

/** Structured-cloneable description a reactor turns into a channel (SharedArrayBuffers, fds, names). */
export interface ChannelSpec {
  module: string;
  blockSize: number;
  numBlocks: number;
  [key: string]: unknown;
}

export interface BdevChannel {
  submit(io: BdevIo): void;
  /** Reaps completions for backends that poll (io_uring, rbd); returns the number reaped. */
  poll?(): number;
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
  channelSpec(): ChannelSpec;
  /** The `driver_specific` object of bdev_get_bdevs, if the module has one. */
  driverSpecific(): Record<string, unknown> | undefined;
  writeConfig(): ConfigCall;
  /** Releases the backend's resources once no channel uses it. */
  destroy(): Promise<void>;
}

export type ChannelFactory = (spec: ChannelSpec) => BdevChannel;
