// A device as one reactor sees it: its guest-memory view, bdev channel and the queues this
// reactor serves. Guest misbehaviour stops the whole device, never the reactor.
import type { BdevChannel } from '../bdev/bdev.js';
import { openChannel } from '../bdev/channels.js';
import { BlkHandler } from '../devices/blk/blk-handler.js';
import { ScsiDevice } from '../devices/scsi/scsi-device.js';
import type { ScsiTargetSpec } from '../devices/scsi/scsi-spec.js';
import { GuestMemory } from '../memory/guest-memory.js';
import type { RegionShare } from '../memory/region.js';
import { type FdWatchHandle, native } from '../native/index.js';
import { type Coalescing, type QueueConfig, QueueRunner, type RunnerHost } from '../virtio/queue-runner.js';
import type { DeviceSpec, QueueStats } from './messages.js';

interface QueueSlot {
  runner: QueueRunner;
  kickFd: number;
  watch: FdWatchHandle;
}

/** How long closing a device waits for its in-flight requests. */
const CLOSE_DRAIN_MS = 3000;

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
  /** blk: the bdev channel; scsi: the device with its targets (each LUN has its own channel). */
  private readonly channel: BdevChannel | undefined;
  private readonly scsi: ScsiDevice | undefined;
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
    if (spec.kind === 'blk') this.channel = openChannel(spec.bdev);
    else this.scsi = new ScsiDevice(spec, warn);
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
    if (this.scsi) runner.handler = this.scsi.handlerFor(runner);
    else if (this.spec.kind === 'blk' && this.channel) runner.handler = new BlkHandler(runner, this.channel, this.spec, this.warn);
    const watch = new native.FdWatch(kickFd, () => {
      native.eventfdRead(kickFd);
      // Serve the kicked queue at once (wake-up latency), then let the reactor poll.
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

  /** Stops a queue after its in-flight requests completed; returns the next avail index. */
  async stopQueue(qid: number): Promise<number> {
    const slot = this.queues.get(qid);
    if (!slot) throw new Error(`queue ${qid} is not running`);
    slot.watch.close();
    this.queues.delete(qid);
    this.host.queuesChanged();
    await slot.runner.stop();
    return slot.runner.queue.vringBase();
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
  pollChannel(): number {
    return this.channel?.poll ? this.channel.poll() : 0;
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
    for (const qid of [...this.queues.keys()]) {
      // A bdev that never completes (a hung backend, an error bdev holding I/O) must not keep the
      // device, or the daemon's shutdown, from finishing.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.warn(`queue ${qid}: requests still in flight after ${CLOSE_DRAIN_MS} ms; closing anyway`);
          resolve();
        }, CLOSE_DRAIN_MS);
      });
      await Promise.race([this.stopQueue(qid).then(() => undefined), timeout]);
      clearTimeout(timer);
      this.queues.delete(qid);
    }
    this.channel?.close();
    await this.scsi?.close();
  }

  scsiAttach(target: ScsiTargetSpec): void {
    if (!this.scsi) throw new Error(`device ${this.spec.name} is not a SCSI device`);
    this.scsi.attachTarget(target);
  }

  async scsiDetach(target: number): Promise<void> {
    if (!this.scsi) throw new Error(`device ${this.spec.name} is not a SCSI device`);
    await this.scsi.detachTarget(target);
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
