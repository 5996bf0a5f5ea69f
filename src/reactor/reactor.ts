// A reactor: one worker thread pinned to one core that serves the virtqueues assigned to it.
// Busy, it polls every queue in a setImmediate loop with guest kicks suppressed; idle for longer
// than the poll-idle time, it re-arms notifications and sleeps in epoll on the kick eventfds, so
// an idle target burns no CPU. Control requests arrive by message between passes.
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { type MessagePort, parentPort } from 'node:worker_threads';
import pino from 'pino';
import { qosHeldOnThread } from '../bdev/layer-channel.js';
import { mappingFaults, native } from '../native/index.js';
import { beginPass, clock, clockMs, endPass, tick } from '../native/clock.js';
import { toWireError } from '../util/errors.js';
import { PUBLISH_CHUNK, type QueueRunner } from '../virtio/queue-runner.js';
import { BackendWait } from './backend-wait.js';
import { type DeviceHost, DeviceInstance } from './device-instance.js';
import type { ReactorEvent, ReactorInit, ReactorReply, ReactorRequest, ReactorStats } from './messages.js';

/** Longest stretch of poll passes before the reactor yields to its event loop (see pass()). */
const TURN_MS = 0.5;
/**
 * Longest poll for backend completions alone, then the reactor sleeps on their eventfd. At 0.2 ms
 * a disk's slower requests (p99 of a VM disk at QD 1: 150-250 µs) paid a wake-up on top, and
 * vhostd's p99 at QD 1 came out 1.1-1.3x QSD's; at 1 ms it is 0.93-1.14x (bench, 5 repeats).
 */
const BACKEND_WAIT_MS = 1;
/**
 * Asleep on backend I/O with 2 or more requests out, the reactor leaves the driver's kicks off
 * while the next completion is due within this long (the backend's mean latency over the requests
 * out): that completion wakes it and it polls every queue, so a request the driver adds meanwhile
 * waits no longer than that, and the driver pays no kick for it (in a VM, an exit per kick).
 * SPDK's reactor never asks for kicks. Loop device at QD 32 (bench, our initiator): 12-49 kicks
 * per 1000 I/O armed, 0.5-7 kickless, IOPS and CPU per I/O alike.
 */
const KICKLESS_GAP_MS = 0.05;
/** Work-free time after which a kickless sleep ends: then the reactor polls, and sleeps with kicks armed. */
const KICKLESS_MAX_MS = 1;
const LAST_WORK_AT = 0;
const BUSY_MS = 1;
const LAST_SAMPLE_AT = 2;

export class Reactor implements DeviceHost {
  private readonly devices = new Map<number, DeviceInstance>();
  private devList: DeviceInstance[] = [];
  private runners: QueueRunner[] = [];
  private readonly toFlush = new Set<QueueRunner>();
  private flushScheduled = false;
  private readonly log: pino.Logger;
  private polling = false;
  /** Requests out at backends when the reactor last went to sleep: a wake-up tells from it whether the sleep was a backend wait. */
  private outAtSleep = 0;
  /** lastWorkAt, busy ms, last backend sample: doubles in a typed array, since field stores would allocate. */
  private readonly times = new Float64Array(3);
  private readonly idleMs: number;
  private readonly backendWaitMs: number;
  private readonly backendWait: BackendWait;
  private readonly startedAt = clockMs();
  private wakeups = 0;
  private gcCount = 0;
  private readonly loop = () => this.pass();
  /** Asleep without kicks armed (KICKLESS_GAP_MS): a backend completion or kicklessTimer wakes it. */
  private kickless = false;
  private kicklessSleeps = 0;
  private readonly kicklessTimer = setTimeout(() => this.kicklessTimeout(), KICKLESS_MAX_MS).unref();
  /** mappingFaults[0] as last checked. */
  private faultsSeen = mappingFaults[0];

  constructor(
    private readonly init: ReactorInit,
    private readonly port: MessagePort,
  ) {
    this.log = pino({ level: init.logLevel, base: { reactor: init.index } }, pino.destination({ fd: 2, sync: true }));
    this.idleMs = init.pollIdleUs / 1000;
    this.backendWaitMs = Math.min(this.idleMs, BACKEND_WAIT_MS);
    this.backendWait = new BackendWait(init.backendWait);
    const rc = native.setAffinity([init.core]);
    if (rc < 0) this.log.warn({ core: init.core, errno: -rc }, 'could not pin reactor to its core');
    new PerformanceObserver((list) => {
      this.gcCount += list.getEntries().length;
    }).observe({ entryTypes: ['gc'] });
    port.on('message', (msg: { id: number } & ReactorRequest) => this.onRequest(msg));
  }

  private reply(r: ReactorReply): void {
    this.port.postMessage(r);
  }

  private emit(e: ReactorEvent): void {
    this.port.postMessage(e);
  }

  private async onRequest(msg: { id: number } & ReactorRequest): Promise<void> {
    try {
      const result = await this.handle(msg);
      this.reply({ id: msg.id, ok: true, result });
    } catch (e) {
      this.reply({ id: msg.id, ok: false, error: toWireError(e) });
    }
  }

  private device(devId: number): DeviceInstance {
    const d = this.devices.get(devId);
    if (!d) throw new Error(`device ${devId} is not attached to reactor ${this.init.index}`);
    return d;
  }

  private async handle(msg: ReactorRequest): Promise<unknown> {
    switch (msg.op) {
      case 'attach': {
        const warn = (m: string) => this.log.warn({ dev: msg.spec.name }, m);
        const info = (m: string) => this.log.info({ dev: msg.spec.name }, m);
        this.devices.set(msg.devId, new DeviceInstance(msg.devId, msg.spec, this, warn, info));
        this.queuesChanged();
        return undefined;
      }
      case 'memory':
        this.device(msg.devId).setMemory(msg.regions);
        return undefined;
      case 'dirtyLog':
        this.device(msg.devId).setDirtyLog(msg.log);
        return undefined;
      case 'startQueue':
        this.device(msg.devId).startQueue(msg.cfg, msg.kickFd);
        return undefined;
      case 'stopQueue':
        return this.device(msg.devId).stopQueue(msg.qid);
      case 'coalescing':
        this.device(msg.devId).setCoalescing(msg.coalescing);
        return undefined;
      case 'setCall':
        this.device(msg.devId).setCallFd(msg.qid, msg.fd);
        return undefined;
      case 'detach': {
        const dev = this.devices.get(msg.devId);
        if (dev) {
          this.devices.delete(msg.devId);
          await dev.close();
          this.queuesChanged();
        }
        return undefined;
      }
      case 'fail':
        this.device(msg.devId).fail();
        return undefined;
      case 'control':
        await this.device(msg.devId).control(msg.action, msg.arg);
        return undefined;
      case 'stats':
        if (msg.gc) (globalThis as { gc?: () => void }).gc?.();
        return this.stats();
    }
  }

  private stats(): ReactorStats {
    const now = clockMs();
    const heap = getHeapStatistics();
    const stats: ReactorStats = {
      index: this.init.index,
      core: this.init.core,
      tid: native.getTid(),
      inInterrupt: !this.polling,
      busyUs: Math.round(this.times[BUSY_MS] * 1000),
      idleUs: Math.round((now - this.startedAt - this.times[BUSY_MS]) * 1000),
      wakeups: this.wakeups,
      backendWait: { mode: this.init.backendWait, ...this.backendWait.stats(), kicklessSleeps: this.kicklessSleeps },
      gcCount: this.gcCount,
      heapUsed: heap.used_heap_size,
      queues: [],
    };
    for (const d of this.devices.values()) stats.queues.push(...d.stats());
    return stats;
  }

  queuesChanged(): void {
    this.devList = [...this.devices.values()];
    this.runners = this.devList.flatMap((d) => d.runners());
  }

  kicked(): void {
    this.times[LAST_WORK_AT] = clockMs();
    if (!this.polling) this.resume();
  }

  /** Back to poll mode from either kind of sleep. */
  private resume(): void {
    this.polling = true;
    this.kickless = false;
    this.wakeups++;
    // Asleep with requests out, the sleep belongs to the backend-wait window under way; asleep
    // with none, the window's time starts again now.
    if (this.outAtSleep === 0) this.times[LAST_SAMPLE_AT] = clockMs();
    for (const r of this.runners) r.quiesce();
    setImmediate(this.loop);
  }

  /**
   * One turn of the event loop in poll mode: passes over every queue and polled backend for up
   * to TURN_MS, then back to the loop for control messages, fd watches and timers. Many passes
   * per turn spread the turn's cost (an Immediate object, an epoll_wait) over many requests.
   */
  private pass(): void {
    if (mappingFaults[0] !== this.faultsSeen) this.checkGuestMemory();
    const runners = this.runners;
    const devs = this.devList;
    const times = this.times;
    tick();
    let t0 = clock[0];
    const turnEnd = t0 + TURN_MS;
    let busyQueues = 0;
    for (;;) {
      // The pass runs at t0: the end of the previous pass, or the turn's first clock read.
      beginPass();
      let work = 0;
      // A queue that was the only busy one in the previous pass publishes in chunks.
      const publishEvery = busyQueues <= 1 ? PUBLISH_CHUNK : Number.MAX_SAFE_INTEGER;
      busyQueues = 0;
      for (let i = 0; i < runners.length; i++) {
        const n = runners[i].poll(publishEvery);
        if (n > 0) {
          work += n;
          busyQueues++;
        }
      }
      for (let i = 0; i < devs.length; i++) work += devs[i].pollBackends();
      endPass();
      tick();
      const t1 = clock[0];
      const out = this.sampleBackends(t1);
      if (work > 0) {
        times[BUSY_MS] += t1 - t0;
        times[LAST_WORK_AT] = t1;
      } else {
        const idle = t1 - times[LAST_WORK_AT];
        // Waiting only on storage slow enough (backend-wait.ts) the reactor sleeps; the
        // completion's eventfd wakes it. Never later than when idle altogether.
        if (idle > this.idleMs || (out > 0 && (idle > this.backendWaitMs || this.backendWait.sleepNow(out)))) {
          this.outAtSleep = out;
          if (out > 1 && idle < KICKLESS_MAX_MS && this.backendWait.nextCompletionMs(out) <= KICKLESS_GAP_MS) {
            this.sleepKickless();
            return;
          }
          if (this.sleep()) return;
          break;
        }
        // Nothing to do but wait for backend I/O, which kernel threads (io_uring's io-wq, librbd)
        // may be doing on this very core: let them run instead of spinning over their CPU time.
        if (out > 0) native.schedYield();
      }
      if (t1 >= turnEnd) break;
      t0 = t1;
    }
    setImmediate(this.loop);
  }

  /**
   * Feeds the backend-wait policy the time since the last sample (event-loop turns included),
   * the requests out at backends now and the backend completions since; returns the requests out.
   */
  private sampleBackends(now: number): number {
    const runners = this.runners;
    let out = 0;
    let done = 0;
    let latencySum = 0;
    for (let i = 0; i < runners.length; i++) {
      const r = runners[i];
      out += r.inFlight;
      done += r.backendCompleted;
      latencySum += r.backendLatencyMs[0];
      r.backendCompleted = 0;
      r.backendLatencyMs[0] = 0;
    }
    // Requests QoS holds (a limited bdev's backlog) wait for the layer's timer, not for a
    // backend: they must not make the reactor sleep on every empty pass while it serves other
    // queues (a limited controller's backlog read as a 130 ms backend: 16k sleeps a second, each
    // costing the unlimited controller's driver a kick). While any are held, completions are not
    // sampled either: those released carry their wait in their latency.
    const held = qosHeldOnThread();
    if (held > 0) {
      out = Math.max(0, out - held);
      done = 0;
      latencySum = 0;
    }
    const times = this.times;
    this.backendWait.sample(out, now - times[LAST_SAMPLE_AT], done, latencySum);
    times[LAST_SAMPLE_AT] = now;
    return out;
  }

  /** Sleeps until a backend completion (or kicklessTimer) with the driver's kicks still off. */
  private sleepKickless(): void {
    this.polling = false;
    this.kickless = true;
    this.kicklessSleeps++;
    this.kicklessTimer.refresh();
  }

  /**
   * No completion came within KICKLESS_MAX_MS: poll the queues once more. The time of the last
   * work stays, so the next sleep, if any, arms kicks (a stalled backend must not leave the guest
   * polled only once a millisecond).
   */
  private kicklessTimeout(): void {
    if (!this.polling && this.kickless) this.resume();
  }

  /** Re-arms notifications; returns false (keep polling) if work raced in. */
  private sleep(): boolean {
    let raced = false;
    for (const r of this.runners) if (r.arm()) raced = true;
    if (raced) {
      for (const r of this.runners) r.quiesce();
      return false;
    }
    this.polling = false;
    return true;
  }

  deviceFailed(dev: DeviceInstance, qid: number | undefined, reason: string): void {
    this.log.error({ dev: dev.spec.name, queue: qid }, `device stopped: ${reason}`);
    this.emit({ event: 'deviceError', devId: dev.devId, reason: qid === undefined ? reason : `queue ${qid}: ${reason}` });
  }

  /**
   * A mapping faulted (SIGBUS: its file shrank) somewhere in the process: a device whose guest
   * memory it was stops, since the front-end truncated memory it had shared.
   */
  private checkGuestMemory(): void {
    this.faultsSeen = mappingFaults[0];
    for (const dev of this.devList) {
      const lost = dev.memoryLost();
      if (lost === undefined || dev.broken) continue;
      dev.fail();
      this.deviceFailed(dev, undefined, lost);
    }
  }

  deferSignal(runner: QueueRunner, ms: number): void {
    setTimeout(() => runner.deferredFlush(), ms);
  }

  scheduleFlush(runner: QueueRunner): void {
    // A backend completion reached a sleeping reactor (through its eventfd): the driver answers
    // a completion with its next request, so poll again now, as a kick would make it, instead of
    // paying a kick and a wake-up for it (QD 1 on a loop device: 30k -> ~60k IO/s).
    if (!this.polling) this.kicked();
    this.toFlush.add(runner);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      for (const r of this.toFlush) r.flush();
      this.toFlush.clear();
    });
  }
}

export function runReactorWorker(init: ReactorInit): void {
  if (!parentPort) throw new Error('reactor must run in a worker thread');
  new Reactor(init, parentPort);
}
