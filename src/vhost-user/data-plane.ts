// What a vhost-user session needs from the data plane that serves its rings. The session speaks the
// protocol on the control thread; whatever runs the queues (the reactors, a test double) implements
// this, so the protocol layer depends on no runtime.
import type { DirtyLogShare } from '../memory/dirty-log.js';
import type { RegionShare } from '../memory/region.js';
import type { QueueConfig } from '../virtio/queue-runner.js';

export interface DataPlane {
  /** Every queue from now on addresses guest memory through `regions`. */
  setMemory(regions: RegionShare[]): Promise<void>;
  /**
   * Live migration: every queue marks the guest pages it writes in `log` from now on (a new log
   * replaces the old one once this resolves), or stops marking (undefined).
   */
  setDirtyLog(log: DirtyLogShare | undefined): Promise<void>;
  /** Starts serving a ring; `kickFd` stays the session's. */
  startQueue(cfg: QueueConfig, kickFd: number): Promise<void>;
  /** Stops a running ring once its in-flight requests completed; returns the next avail index (vring base). */
  stopQueue(qid: number): Promise<number>;
  /** Replaces a running ring's call fd (-1: none). */
  setCallFd(qid: number, fd: number): Promise<void>;
  /** Stops every ring at once after a protocol violation; requests in flight still complete. */
  fail(): Promise<void>;
  /** Tears the device down after the connection closed. */
  close(): Promise<void>;
}
