// Messages between the control thread and reactor workers. Requests carry an id and get exactly
// one reply; events flow from reactors to the control thread unasked.
import type { DeviceSpec } from '../devices/device.js';
import type { DirtyLogShare } from '../memory/dirty-log.js';
import type { RegionShare } from '../memory/region.js';
import type { WireError } from '../util/errors.js';
import type { Coalescing, QueueConfig } from '../virtio/queue-runner.js';

export type { DeviceSpec };

export type ReactorRequest =
  | { op: 'attach'; devId: number; spec: DeviceSpec }
  | { op: 'memory'; devId: number; regions: RegionShare[] }
  /** Live migration: the dirty log to mark, or undefined when logging stops. */
  | { op: 'dirtyLog'; devId: number; log: DirtyLogShare | undefined }
  | { op: 'startQueue'; devId: number; cfg: QueueConfig; kickFd: number }
  | { op: 'stopQueue'; devId: number; qid: number }
  | { op: 'setCall'; devId: number; qid: number; fd: number }
  | { op: 'coalescing'; devId: number; coalescing: Coalescing }
  | { op: 'detach'; devId: number }
  | { op: 'fail'; devId: number }
  /** A device-specific action (Device.control), e.g. SCSI hot-plug. */
  | { op: 'control'; devId: number; action: string; arg: unknown }
  /** gc: a full garbage collection first, when node runs with --expose-gc (memory diagnostics). */
  | { op: 'stats'; gc?: boolean };

export interface QueueStats {
  devId: number;
  /** Controller name. */
  device: string;
  qid: number;
  inFlight: number;
  completed: number;
}

export interface ReactorStats {
  index: number;
  core: number;
  tid: number;
  /** Sleeping on kick eventfds (true) or polling. */
  inInterrupt: boolean;
  busyUs: number;
  idleUs: number;
  /** Interrupt → poll transitions. */
  wakeups: number;
  /** How it waits for backend I/O (backend-wait.ts): the learned latency, times it slept on it. */
  backendWait: { mode: BackendWaitMode; latencyUs: number; sleeps: number; spinLatencyUs: number; sleepLatencyUs: number; kicklessSleeps: number };
  gcCount: number;
  heapUsed: number;
  queues: QueueStats[];
}

/**
 * A failed request replies `{code, message}` (toWireError): the code is the stable one the RPC
 * answers with (-errno or a JSON-RPC code), and the control thread rethrows it as a VhostdError.
 */
export type ReactorReply = { id: number; ok: true; result?: unknown } | { id: number; ok: false; error: WireError };

export type ReactorEvent = { event: 'deviceError'; devId: number; reason: string };

export interface ReactorInit {
  index: number;
  core: number;
  logLevel: string;
  /** How long a reactor keeps polling with no work before it sleeps on kicks. */
  pollIdleUs: number;
  /** How a polling reactor waits for backend I/O (backend-wait.ts). */
  backendWait: BackendWaitMode;
}

export type BackendWaitMode = 'adaptive' | 'spin' | 'sleep';
