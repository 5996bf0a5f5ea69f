// A device as one reactor sees it: its guest-memory view, bdev channel and the queues this
// reactor serves. Guest misbehaviour stops the whole device, never the reactor.
import type { Device } from '../devices/device.js';
import { deviceKinds } from '../devices/kinds.js';
import { GuestMemory } from '../memory/guest-memory.js';
import type { RegionShare } from '../memory/region.js';
import { type FdWatchHandle, native } from '../native/index.js';
import { tick } from '../native/clock.js';
import { DirtyLog, type DirtyLogShare } from '../memory/dirty-log.js';
import { type Coalescing, type QueueConfig, QueueRunner, type RunnerHost } from '../virtio/queue-runner.js';
import type { DeviceSpec, QueueStats } from './messages.js';

interface QueueSlot {
  runner: QueueRunner;
  kickFd: number;
  watch: FdWatchHandle;
}

/**
 * How long stopping a queue (GET_VRING_BASE, closing the device) waits for its in-flight requests,
 * as SPDK does: a backend request that never completes must not hang QEMU, or the migration.
 */
export const STOP_DRAIN_MS = 3000;

/** Tests only: request buffers are not marked in the dirty log (see virtio/dirty-tracker.ts). */
const DIRTY_LOG_BUFFERS_SKIPPED = process.env.VHOSTD_TEST_NO_DIRTY_LOG === '1';

/** What a device needs from its reactor. */
export interface DeviceHost {
  deviceFailed(dev: DeviceInstance, qid: number, reason: string): void;
  scheduleFlush(runner: QueueRunner): void;
  deferSignal(runner: QueueRunner, ms: number): void;
  /** A queue was kicked, started or stopped: the reactor re-plans its polling. */
  queuesChanged(): void;
  /** The guest kicked: the reactor switches to (or stays in) poll mode. */
  kicked(): void;
}

export class DeviceInstance {
  readonly memory = new GuestMemory();
  private readonly device: Device;
  /** The dirty log all of this device's queues mark while migration logs. */
  private dirtyLog: DirtyLog | undefined;
  private readonly queues = new Map<number, QueueSlot>();
  broken = false;
  private readonly runnerHost: RunnerHost;

  constructor(
    readonly devId: number,
    readonly spec: DeviceSpec,
    private readonly host: DeviceHost,
    private readonly warn: (msg: string) => void,
    private readonly info: (msg: string) => void = warn,
  ) {
    const kind = deviceKinds.get(spec.kind);
    if (!kind) throw new Error(`unknown device kind ${JSON.stringify(spec.kind)}`);
    this.device = kind.create(spec, warn);
    this.runnerHost = {
      fail: (runner, reason) => {
        if (this.broken) return;
        this.fail();
        // A ring read from truncated memory reads zeros, and fails for that: say why.
        host.deviceFailed(this, runner.qid, this.memoryLost() ?? reason);
      },
      scheduleFlush: (runner) => host.scheduleFlush(runner),
      deferSignal: (runner, ms) => host.deferSignal(runner, ms),
    };
  }

  setMemory(regions: RegionShare[]): void {
    this.memory.update(regions);
    for (const slot of this.queues.values()) slot.runner.rebind();
  }

  startQueue(cfg: QueueConfig, kickFd: number): QueueRunner {
    if (this.queues.has(cfg.qid)) throw new Error(`queue ${cfg.qid} is already running`);
    const runner = new QueueRunner(this.memory, cfg, cfg.addrs, this.runnerHost);
    if (this.dirtyLog) runner.setDirtyLog(this.dirtyLog);
    runner.handler = this.device.handlerFor(runner);
    const watch = new native.FdWatch(kickFd, () => {
      native.eventfdRead(kickFd);
      // Serve the kicked queue at once (wake-up latency), then let the reactor poll. The clock
      // still holds the last pass's time, from before the sleep: the requests start now.
      tick();
      runner.poll();
      this.host.kicked();
    });
    this.queues.set(cfg.qid, { runner, kickFd, watch });
    this.broken = false;
    watch.start();
    this.host.queuesChanged();
    const resubmits = runner.queue.pendingResubmits;
    if (resubmits > 0) this.info(`queue ${cfg.qid}: resubmitting ${resubmits} requests left in flight by a previous vhostd`);
    // The driver may have queued requests before the kick fd was handed to us.
    runner.poll();
    this.host.kicked();
    return runner;
  }

  /**
   * Stops a queue after its in-flight requests completed, or after STOP_DRAIN_MS (then the
   * requests still out are abandoned: their completions no longer touch the ring); returns the
   * next avail index.
   */
  async stopQueue(qid: number): Promise<number> {
    const slot = this.queues.get(qid);
    if (!slot) throw new Error(`queue ${qid} is not running`);
    slot.watch.close();
    this.queues.delete(qid);
    this.host.queuesChanged();
    const runner = slot.runner;
    const inFlight = runner.inFlight;
    const t0 = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      runner.stop().then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), STOP_DRAIN_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!drained) {
      runner.abandon();
      this.warn(`queue ${qid}: ${runner.inFlight} requests still in flight after ${STOP_DRAIN_MS} ms; stopped without them`);
    } else if (inFlight > 0) {
      this.info(`queue ${qid}: drained ${inFlight} in-flight requests in ${(performance.now() - t0).toFixed(1)} ms before stopping`);
    }
    return runner.queue.vringBase();
  }

  /** Starts (a log), switches (a new log) or stops (undefined) dirty logging on every queue. */
  setDirtyLog(share: DirtyLogShare | undefined): void {
    if (share !== undefined && DIRTY_LOG_BUFFERS_SKIPPED) {
      this.warn('VHOSTD_TEST_NO_DIRTY_LOG (tests only): request buffers are not marked in the dirty log; a migration will copy stale pages');
    }
    this.dirtyLog = share === undefined ? undefined : new DirtyLog(share);
    for (const slot of this.queues.values()) slot.runner.setDirtyLog(this.dirtyLog);
  }

  setCoalescing(c: Coalescing): void {
    for (const slot of this.queues.values()) slot.runner.setCoalescing(c);
  }

  setCallFd(qid: number, fd: number): void {
    const slot = this.queues.get(qid);
    if (!slot) return;
    slot.runner.callFd = fd;
    // Completions published while the front-end was swapping call fds signalled the old (or no)
    // fd; one extra interrupt on the new one makes the driver look at the used ring again.
    if (fd >= 0) native.eventfdWrite(fd);
  }

  runners(): QueueRunner[] {
    return [...this.queues.values()].map((s) => s.runner);
  }

  /**
   * Reaps completions of backends that poll (io_uring, rbd). Such backends also watch their own
   * completion fd, so a sleeping reactor still completes their I/O.
   */
  pollBackends(): number {
    return this.device.poll();
  }

  /** Why the device must stop because a region of its guest memory shrank under its mapping, if one did. */
  memoryLost(): string | undefined {
    const r = this.memory.lostRegion();
    if (r === undefined) return undefined;
    return `guest memory region gpa 0x${r.gpa.toString(16)} (+0x${r.size.toString(16)}) shrank under its mapping: the front-end truncated its memory file`;
  }

  /** Stops every queue at once after a protocol violation; requests in flight still complete. */
  fail(): void {
    this.broken = true;
    for (const slot of this.queues.values()) {
      slot.watch.stop();
      slot.runner.stopped = true;
    }
    this.host.queuesChanged();
  }

  async close(): Promise<void> {
    // stopQueue is bounded: a hung backend cannot keep the device, or the daemon's shutdown, open.
    for (const qid of [...this.queues.keys()]) await this.stopQueue(qid);
    await this.device.close();
    this.memory.update([]);
  }

  control(action: string, arg: unknown): void | Promise<void> {
    return this.device.control(action, arg);
  }

  stats(): QueueStats[] {
    return [...this.queues.values()].map((s) => ({
      devId: this.devId,
      device: this.spec.name,
      qid: s.runner.qid,
      inFlight: s.runner.inFlight,
      completed: s.runner.completed,
    }));
  }
}
