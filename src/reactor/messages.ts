// Messages between the control thread and reactor workers. Requests carry an id and get exactly
// one reply; events flow from reactors to the control thread unasked.
import type { BlkDeviceSpec } from '../devices/blk/blk-spec.js';
import type { RegionShare } from '../memory/region.js';
import type { QueueConfig } from '../virtio/queue-runner.js';

/** Device descriptions a reactor can instantiate (scsi joins this union). */
export type DeviceSpec = BlkDeviceSpec;

export type ReactorRequest =
  | { op: 'attach'; devId: number; spec: DeviceSpec }
  | { op: 'memory'; devId: number; regions: RegionShare[] }
  | { op: 'startQueue'; devId: number; cfg: QueueConfig; kickFd: number }
  | { op: 'stopQueue'; devId: number; qid: number }
  | { op: 'setCall'; devId: number; qid: number; fd: number }
  | { op: 'detach'; devId: number }
  | { op: 'stats' };

export interface QueueStats {
  devId: number;
  qid: number;
  inFlight: number;
  completed: number;
}

export interface ReactorStats {
  core: number;
  tid: number;
  queues: QueueStats[];
}

export type ReactorReply = { id: number; ok: true; result?: unknown } | { id: number; ok: false; error: string };

export type ReactorEvent = { event: 'deviceError'; devId: number; reason: string };

export interface ReactorInit {
  index: number;
  core: number;
  logLevel: string;
}
