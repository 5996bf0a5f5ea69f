// Drives one virtqueue on a reactor: pops avail chains, hands them to the device's request
// handler, collects completions, and publishes used entries + signals the guest once per batch.
import type { DirtyLog } from '../memory/dirty-log.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { native } from '../native/index.js';
import { clock, refreshClock } from '../native/clock.js';
import { Chain, ChainWalker } from './desc-chain.js';
import { QueueDirtyTracker } from './dirty-tracker.js';
import { PackedInflight, SplitInflight } from './inflight.js';
import { PackedQueue } from './packed-queue.js';
import { SplitQueue } from './split-queue.js';
import { QueueError, type RingAddresses, type Virtqueue } from './virtqueue.js';

export interface QueueConfig {
  qid: number;
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  packed: boolean;
  /** Vring base from SET_VRING_BASE (packed: index | wrap counter << 15). */
  lastAvail: number;
  addrs: RingAddresses;
  callFd: number;
  /** Scatter-list capacity of one chain (seg_max plus header/status room). */
  chainCapacity: number;
  /** This queue's region of the INFLIGHT_SHMFD buffer (split rings), when the front-end gave one. */
  inflight?: {
    buffer: SharedArrayBuffer;
    offset: number;
    /** The front-end reconnected: it handed over a buffer (SET_INFLIGHT_FD) this session never made (GET_INFLIGHT_FD). */
    resumed: boolean;
  };
  coalescing?: Coalescing;
}

/** SPDK's vhost_controller_set_coalescing: delay interrupts of queues above an IOPS threshold. */
export interface Coalescing {
  delayBaseUs: number;
  iopsThreshold: number;
}

/**
 * Completions a lone busy queue publishes (and signals, if the driver asks) while its batch is
 * still being taken: with backends that finish inside submit (memory, inline file I/O) the batch
 * would otherwise hold every completion to its end while the driver sits idle. With several busy
 * queues the driver works on the others meanwhile, and publishing in chunks only adds ring traffic.
 */
export const PUBLISH_CHUNK = 8;

/**
 * Requests one poll() takes at most before the reactor moves on to its other queues (SPDK takes
 * 32 per queue per poll): a driver that refills as fast as the queue completes must not keep the
 * reactor on one queue while the others wait.
 */
const BATCH = 32;

/** SPDK re-evaluates each queue's rate every 10 ms (SPDK_VHOST_STATS_CHECK_INTERVAL_MS). */
const STATS_INTERVAL_MS = 10;

/** Device-specific request handling, one instance per queue. */
export interface RequestHandler {
  /** Starts the request in `chain` (taken from slot `head`); must call runner.complete(head, len) once. */
  handle(head: number, chain: Chain): void;
  /** The queue is stopping: complete anything the handler holds on its own (event buffers). */
  stop?(): void;
}

export interface RunnerHost {
  /** The guest did something that requires stopping the device. */
  fail(runner: QueueRunner, reason: string): void;
  /** Coalescing held back an interrupt: flush the runner again after `ms`. */
  deferSignal(runner: QueueRunner, ms: number): void;
  /** A completion arrived outside poll(): flush the runner soon. */
  scheduleFlush(runner: QueueRunner): void;
}

export class QueueRunner {
  readonly qid: number;
  readonly queue: Virtqueue;
  private readonly chain: Chain;
  private readonly walker: ChainWalker;
  private readonly heads: Uint8Array;
  handler!: RequestHandler;
  callFd: number;
  inFlight = 0;
  private pendingUsed = 0;
  private polling = false;
  stopped = false;
  /** Requests completed since creation (reactor statistics). */
  completed = 0;
  /**
   * Requests completed outside the runner's own pass, i.e. by a backend (io_uring, librbd), since
   * the reactor last read and cleared it: what its backend-wait policy learns latency from.
   */
  backendCompleted = 0;
  /** [0]: Σ ms those completions took, from the poll pass that started each (for the reactor's backend-wait policy). */
  readonly backendLatencyMs = new Float64Array(1);
  /** Clock (ms) of the pass that started each head in flight. */
  private readonly startedAt: Float64Array;
  private drainWaiters: Array<() => void> = [];
  // Interrupt coalescing (all in ms / requests per stats interval).
  private irqDelayBaseMs = 0;
  private ioThreshold = 0;
  private irqDelayMs = 0;
  private reqCount = 0;
  private nextStatsAt = 0;
  /** Time of the last guest signal (ms), in a typed array: a double field store would allocate. */
  private readonly lastSignalAt = new Float64Array(1);
  private signalDeferred = false;
  private deferTimer = false;
  /** The dirty log this queue marks while migration logs (setDirtyLog), and its bookkeeping. */
  private activeLog: DirtyLog | undefined = undefined;
  private tracker: QueueDirtyTracker | undefined;
  private readonly cfg: QueueConfig;
  /** The front-end reconnected to a restarted back-end (QueueConfig.inflight.resumed). */
  readonly resumed: boolean;

  constructor(
    readonly mem: GuestMemory,
    cfg: QueueConfig,
    readonly addrs: RingAddresses,
    private readonly host: RunnerHost,
  ) {
    this.cfg = cfg;
    this.resumed = cfg.inflight?.resumed === true;
    this.qid = cfg.qid;
    this.callFd = cfg.callFd;
    this.queue = cfg.packed
      ? new PackedQueue(cfg.size, cfg.eventIdx, cfg.lastAvail, cfg.inflight ? new PackedInflight(cfg.inflight.buffer, cfg.inflight.offset, cfg.size) : undefined)
      : new SplitQueue(cfg.size, cfg.eventIdx, cfg.lastAvail, cfg.inflight ? new SplitInflight(cfg.inflight.buffer, cfg.inflight.offset, cfg.size) : undefined);
    this.queue.bind(mem, addrs, true);
    this.chain = new Chain(cfg.chainCapacity);
    this.walker = new ChainWalker(mem, cfg.indirect);
    this.heads = new Uint8Array(cfg.size);
    this.startedAt = new Float64Array(cfg.size);
    if (cfg.coalescing) this.setCoalescing(cfg.coalescing);
  }

  setCoalescing(c: Coalescing): void {
    this.irqDelayBaseMs = c.delayBaseUs / 1000;
    this.ioThreshold = (c.iopsThreshold * STATS_INTERVAL_MS) / 1000;
    if (this.irqDelayBaseMs === 0 || this.ioThreshold <= 0) this.irqDelayMs = 0;
  }

  /** SPDK's check_session_vq_io_stats: the busier the queue above the threshold, the longer the delay. */
  private updateIoStats(now: number): void {
    if (now < this.nextStatsAt) return;
    this.irqDelayMs =
      this.irqDelayBaseMs > 0 && this.ioThreshold > 0 && this.reqCount > this.ioThreshold
        ? (this.irqDelayBaseMs * (this.reqCount - this.ioThreshold)) / this.ioThreshold
        : 0;
    this.reqCount = 0;
    this.nextStatsAt = now + STATS_INTERVAL_MS;
  }

  /** Re-resolves ring addresses after a memory-table change. */
  rebind(): void {
    this.queue.bind(this.mem, this.addrs, false);
  }

  /**
   * Processes the available requests (up to BATCH) and publishes the batch's completions with at
   * most one guest signal, or every `publishEvery` completions; returns how many requests were
   * started.
   */
  poll(publishEvery = BATCH): number {
    if (this.stopped) return 0;
    const q = this.queue;
    let started = 0;
    const log = this.activeLog;
    this.polling = true;
    try {
      while (!this.stopped && started < BATCH) {
        const head = q.pop(this.walker, this.chain);
        if (head < 0) break;
        if (log !== undefined) this.tracker!.taken(head);
        if (this.heads[head] !== 0) throw new QueueError(`descriptor head ${head} made available again while in flight`);
        this.heads[head] = 1;
        this.startedAt[head] = clock[0];
        this.inFlight++;
        started++;
        try {
          this.handler.handle(head, this.chain);
          if (this.pendingUsed >= publishEvery) this.flush();
        } catch (e) {
          // The request was refused before it started: it is not in flight (stop must not wait for it).
          if (this.heads[head] !== 0) {
            this.heads[head] = 0;
            this.inFlight--;
          }
          throw e;
        }
      }
    } catch (e) {
      this.polling = false;
      this.tracker?.abandonTake();
      this.host.fail(this, e instanceof Error ? e.message : String(e));
      return started;
    }
    this.polling = false;
    if (this.irqDelayBaseMs > 0) {
      this.reqCount += started;
      refreshClock();
      this.updateIoStats(clock[0]);
    }
    this.flush();
    return started;
  }

  /**
   * Asks the driver to kick again before the reactor sleeps; returns true when requests arrived
   * meanwhile (then the reactor must keep polling instead of sleeping).
   */
  arm(): boolean {
    if (this.stopped) return false;
    this.queue.enableNotifications();
    if (this.activeLog !== undefined) this.logRing();
    return this.queue.hasAvailable();
  }

  /** Tells the driver not to kick while the reactor polls. */
  quiesce(): void {
    if (this.stopped) return;
    this.queue.disableNotifications();
    if (this.activeLog !== undefined) this.logRing();
  }

  /**
   * Logging starts, stops (undefined), or moves to a new log (the front-end's memory grew). Called
   * on the reactor between passes, so no completion can slip between the switch and the queue.
   */
  setDirtyLog(log: DirtyLog | undefined): void {
    if (log !== undefined && this.tracker === undefined) {
      const c = this.cfg;
      this.tracker = new QueueDirtyTracker(this.mem, this.queue, this.addrs, c.packed, c.indirect, c.chainCapacity);
    }
    this.tracker?.setLog(log, this.heads);
    this.activeLog = log;
    this.walker.writableSink = this.tracker?.takeSink;
  }

  private logRing(): void {
    if (!this.tracker!.ringWritten()) this.host.fail(this, this.tracker!.failure!);
  }

  /** Records a finished request; `len` is the number of bytes written into guest buffers. */
  complete(head: number, len: number): void {
    if (this.heads[head] === 0) return;
    // The request's buffers are marked after the device wrote them, before the driver can see it used.
    if (this.activeLog !== undefined && !this.tracker!.completed(head)) this.host.fail(this, this.tracker!.failure!);
    this.heads[head] = 0;
    this.inFlight--;
    this.completed++;
    if (!this.polling) {
      this.backendCompleted++;
      this.backendLatencyMs[0] += clock[0] - this.startedAt[head];
    }
    this.queue.pushUsed(head, len);
    this.pendingUsed++;
    if (!this.polling) this.host.scheduleFlush(this);
    if (this.inFlight === 0 && this.drainWaiters.length > 0) {
      this.flush();
      for (const w of this.drainWaiters.splice(0)) w();
    }
  }

  /** Publishes pending used entries and signals the guest if it asked for it. */
  flush(): void {
    if (this.pendingUsed === 0 && !this.signalDeferred) return;
    const q = this.queue;
    if (this.pendingUsed > 0) {
      this.pendingUsed = 0;
      q.publishUsed();
      if (this.activeLog !== undefined) this.logRing();
    }
    if (this.irqDelayMs > 0) {
      refreshClock();
      const now = clock[0];
      const wait = this.lastSignalAt[0] + this.irqDelayMs - now;
      if (wait > 0) {
        this.signalDeferred = true;
        if (!this.deferTimer) {
          this.deferTimer = true;
          this.host.deferSignal(this, Math.ceil(wait));
        }
        return;
      }
      this.lastSignalAt[0] = now;
    }
    this.signalDeferred = false;
    if (this.callFd >= 0 && q.needsSignal()) native.eventfdWrite(this.callFd);
  }

  /** The coalescing timer fired. */
  deferredFlush(): void {
    this.deferTimer = false;
    this.flush();
  }

  /**
   * stop() gave up waiting: the requests still out are forgotten, so their late completions do not
   * touch a ring the front-end took back.
   */
  abandon(): void {
    this.heads.fill(0);
  }

  /** Stops taking new requests and resolves once every in-flight request completed. */
  stop(): Promise<void> {
    this.stopped = true;
    this.handler.stop?.();
    if (this.inFlight === 0) {
      this.flush();
      return Promise.resolve();
    }
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }
}
