// Typed facade over the librados/librbd part of the native addon (native/rbd.cc). Handles are
// small integers valid in every thread of the process; calls return a non-negative result or
// -errno, and the ones that talk to the cluster return Promises settled from a helper thread.
import { loadAddon } from './index.js';

/** One reactor channel's submission/completion queue on a shared image handle. */
export interface RbdQueueHandle {
  /** The eventfd signalled when completions are waiting. */
  readonly fd: number;
  /** Each submission returns 0 or -errno; completions come back through drain(). */
  readv(slot: number, offset: number, bufs: Uint8Array[], offs: Uint32Array, lens: Uint32Array, count: number): number;
  writev(slot: number, offset: number, bufs: Uint8Array[], offs: Uint32Array, lens: Uint32Array, count: number): number;
  flush(slot: number): number;
  discard(slot: number, offset: number, length: number): number;
  writeZeroes(slot: number, offset: number, length: number): number;
  /**
   * Moves up to min(lengths) completions out: slot, result (bytes/0 or -errno). One atomic load when
   * there are none. Does not reset the eventfd: read it first when woken by it.
   */
  drain(slots: Int32Array, results: Float64Array): number;
  /** No more submissions; freed after the last in-flight completion. */
  close(): void;
}

interface RbdAddon {
  rbdClusterCreate(userId: string | null): number;
  rbdConfReadFile(cluster: number, path: string | null): number;
  rbdConfSet(cluster: number, key: string, value: string): number;
  rbdConfGet(cluster: number, key: string): string | number;
  rbdConnect(cluster: number, cpus: number[]): Promise<number>;
  rbdIoctxCreate(cluster: number, pool: string): Promise<number>;
  rbdImageOpen(ioctx: number, name: string, readOnly: boolean): Promise<number>;
  rbdImageSize(image: number): number;
  rbdImageClose(image: number): Promise<number>;
  rbdIoctxClose(ioctx: number): Promise<number>;
  rbdClusterClose(cluster: number): Promise<number>;
  /** At exit: closes everything; past timeoutMs it ends the process with _exit(exitCode). */
  rbdCloseAllSync(timeoutMs: number, exitCode: number): number;
  rbdHandleCount(): number;
  RbdQueue: new (image: number) => RbdQueueHandle;
}

let addon: RbdAddon | undefined;

/**
 * The librbd binding, loaded on first use: librbd, librados and the Ceph libraries behind them
 * add about 18 MiB to the resident memory of every process that loads them, which a vhostd
 * without RBD bdevs does not pay.
 */
export function rbd(): RbdAddon {
  return (addon ??= loadAddon('vhostd_rbd').addon as RbdAddon);
}
