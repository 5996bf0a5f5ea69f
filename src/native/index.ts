// Typed facade over the native addon: the only module that loads it. Every call returns a
// non-negative result or -errno; `check` turns the latter into a SyscallError.
import { createRequire } from 'node:module';
import { Errno, errnoName } from '../util/errno.js';

export interface FdWatchHandle {
  start(): void;
  stop(): void;
  close(): void;
}

export interface SharedMapping {
  id: number;
  buffer: SharedArrayBuffer;
}

interface NativeAddon {
  socketListen(path: string, backlog: number): number;
  socketConnect(path: string): number;
  accept(fd: number): number;
  recvMsg(fd: number, buf: Uint8Array, fdsOut: Int32Array): number;
  sendMsg(fd: number, buf: Uint8Array, fds: number[]): number;
  close(fd: number): number;
  eventfd(initval: number): number;
  eventfdWrite(fd: number): number;
  eventfdRead(fd: number): number;
  memfdCreate(name: string, size: number): number;
  setAffinity(cpus: number[]): number;
  getTid(): number;
  /** sched_yield(2) for the calling thread. */
  schedYield(): void;
  mmapShared(fd: number, length: number, offset: number): SharedMapping | number;
  /** Private anonymous memory as a SharedArrayBuffer (malloc bdevs); releaseMapping() frees its pages. */
  mmapAnon(length: number): SharedMapping | number;
  releaseMapping(id: number): number;
  mappingCount(): number;
  /** 1 once a SIGBUS inside mapping `id` (its file shrank) replaced it with anonymous memory. */
  mappingFaulted(id: number): number;
  /** SharedArrayBuffer whose first int32 counts the SIGBUS faults handled in mappings, process-wide. */
  faultCounter(): SharedArrayBuffer;
  /** memmove between Uint8Arrays (bounds-checked): 0 | -EINVAL. */
  memCopy(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, len: number): number;
  /** memset 0 of a Uint8Array range (bounds-checked): 0 | -EINVAL. */
  memZero(dst: Uint8Array, off: number, len: number): number;
  /** Registers this thread's clock cell (Float64Array): 0 | -EINVAL. */
  clockRegister(cell: Float64Array): number;
  /** Writes CLOCK_MONOTONIC (ms) into the registered cell's first element. */
  clockTick(): void;
  FdWatch: new (fd: number, cb: (status: number, events: number) => void) => FdWatchHandle;
}

const require = createRequire(import.meta.url);

/** Loads build/Release/<name>.node (from src/ or from dist/src/). */
export function loadAddon(name: string): { addon: unknown; path: string } {
  const candidates = [`../../build/Release/${name}.node`, `../../../build/Release/${name}.node`];
  let lastError: unknown;
  for (const c of candidates) {
    try {
      return { addon: require(c) as unknown, path: require.resolve(c) };
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(`vhostd native addon ${name} not built (run npm ci or npm run build): ${String(lastError)}`);
}

const loaded = loadAddon('vhostd_native');
export const native = loaded.addon as NativeAddon;
/** Where the addon was loaded from (for worker threads that load it themselves). */
export const nativePath: string = loaded.path;

export const EAGAIN = Errno.EAGAIN;

export class SyscallError extends Error {
  readonly code: string;
  constructor(
    readonly syscall: string,
    readonly errno: number,
  ) {
    const name = errnoName(errno);
    super(`${syscall} failed: ${name}`);
    this.code = name;
  }
}

/** Throws SyscallError for a negative (-errno) result, returns it otherwise. */
export function check(syscall: string, rc: number): number {
  if (rc < 0) throw new SyscallError(syscall, -rc);
  return rc;
}

/**
 * SIGBUS faults handled inside mmapShared mappings so far (a file shrank under its mapping): read
 * per poll without a call; when it moves, mappingFaulted() tells which mapping.
 */
export const mappingFaults = new Int32Array(native.faultCounter(), 0, 1);

export function mmapShared(fd: number, length: number, offset: number): SharedMapping {
  const r = native.mmapShared(fd, length, offset);
  if (typeof r === 'number') throw new SyscallError('mmap', -r);
  return r;
}

/** Anonymous memory (zeroed, untouched pages cost nothing) that releaseMapping(id) returns to the system at once. */
export function mmapAnon(length: number): SharedMapping {
  const r = native.mmapAnon(length);
  if (typeof r === 'number') throw new SyscallError('mmap', -r);
  return r;
}
