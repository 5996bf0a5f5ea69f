// A load generator for vhost-user-blk targets (vhostd, qemu-storage-daemon, SPDK, ...): N queues,
// queue depth D per queue, fixed-size random or sequential reads/writes, for a time or a number
// of requests, with optional data verification.
//
// Built to measure fast targets from one JS thread: request slots and their descriptor chains are
// preallocated (LoadRing), there is no Promise or closure per request, queues are refilled as soon
// as completions are reaped, kicks are batched and honour the device's notification suppression,
// and used rings are polled with calls suppressed. After `spinUs` without progress the generator
// re-arms the call eventfds and returns to the event loop until a call (or the deadline) wakes it.
// Latency goes into a fixed-size log-linear histogram; CPU time of the initiator
// (process.cpuUsage) and of the target (/proc/<pid>/stat) is sampled around the measurement.
//
//   const gen = await LoadGenerator.connect({ socketPath, queues: 2, iodepth: 32, cpu: 1 });
//   const r = await gen.run({ rw: 'randread', durationMs: 5000, warmupMs: 500, targetPid });
//   gen.close();
import { PerformanceObserver } from 'node:perf_hooks';
import { BlkReqType } from '../devices/blk/blk-spec.js';
import { clock, clockMs, tick } from '../native/clock.js';
import { type FdWatchHandle, check, native } from '../native/index.js';
import { VirtioFeature } from '../virtio/features.js';
import { BlkInitiator } from './blk-initiator.js';
import { LatencyHistogram, type LatencySummary } from './histogram.js';
import { type LoadRing, PACKED_INITIAL_BASE, type RingKind, createLoadRing, loadRingBytes } from './load-ring.js';
import { type ProcSample, sampleProc } from './procstat.js';

export type RwMode = 'randread' | 'randwrite' | 'randrw' | 'read' | 'write' | 'rw';
export const RW_MODES: readonly RwMode[] = ['randread', 'randwrite', 'randrw', 'read', 'write', 'rw'];

/** Connection-time options: what the rings look like. */
export interface LoadConnectOptions {
  socketPath: string;
  /** Driver memory on this hugetlbfs mount instead of a memfd (SPDK's vhost target needs hugepage memory). */
  hugetlbfs?: string;
  /** Request queues (default 1). The target must offer at least this many. */
  queues?: number;
  /** Requests in flight per queue (default 32). */
  iodepth?: number;
  /** Bytes per request (default 4096); a multiple of the device's block size. */
  ioBytes?: number;
  /** Ring layout (default split; packed needs VIRTIO_F_RING_PACKED from the target). */
  ring?: RingKind;
  /** Ring size; default the smallest power of two holding the chains (at least 64). */
  queueSize?: number;
  /** Indirect descriptor tables, one ring descriptor per request (default false). */
  indirect?: boolean;
  /** Negotiate VIRTIO_RING_F_EVENT_IDX when offered (default true, as Linux guests do). */
  eventIdx?: boolean;
  /** Busy-poll this long without progress before sleeping on the call eventfds (default 50 µs). */
  spinUs?: number;
  /**
   * Asleep with requests in flight and no call for this long, kick every busy queue again and
   * poll (default 2 ms; 0 disables). Counted as rescueKicks: each one is a stall of the target
   * (lost notification, or the target not running at all) that a real driver would simply sit out.
   */
  rescueMs?: number;
  /** Pin the calling thread to this CPU (native.setAffinity). */
  cpu?: number;
  /** Limit the LBA range to the first rangeBytes of the device (default: whole device). */
  rangeBytes?: number;
  /** PRNG seed (default fixed, for reproducible LBA sequences). */
  seed?: number;
}

/** Per-run options (a connection can run several times, e.g. warm-up then measurements). */
export interface LoadRunOptions {
  rw?: RwMode;
  /** Percentage of reads for randrw/rw (default 50). */
  rwMixRead?: number;
  /** Measurement length (default 5000 ms unless `requests` is given). */
  durationMs?: number;
  /** Measure exactly this many completions instead of a duration. */
  requests?: number;
  /** Run this long before measuring (not counted; default 0). */
  warmupMs?: number;
  /**
   * Write a pattern encoding LBA and a write generation; check it on reads of blocks written in
   * this connection. One request per LBA in flight at a time. Not meaningful on a null device.
   */
  verify?: boolean;
  /** Stop at the first error (default: true when verifying). */
  stopOnError?: boolean;
  /** Target process for CPU accounting. */
  targetPid?: number;
  /** Called about every progressMs (default 1000) with a snapshot of the run so far. */
  onProgress?: (p: LoadProgress) => void;
  progressMs?: number;
  /** Give up when nothing completes for this long (default 10 s). */
  stallTimeoutMs?: number;
  /** Keep the histogram's buckets in the result. */
  keepHistogram?: boolean;
}

export interface LoadProgress {
  phase: 'warmup' | 'measure' | 'drain';
  elapsedMs: number;
  ios: number;
  iops: number;
}

export interface LoadResult {
  target: {
    socketPath: string;
    features: string;
    capacityBytes: number;
    blockSize: number;
    numQueues?: number;
    eventIdx: boolean;
  };
  config: Required<Pick<LoadConnectOptions, 'queues' | 'iodepth' | 'ioBytes' | 'ring' | 'queueSize' | 'indirect' | 'spinUs' | 'rescueMs'>> &
    Required<Pick<LoadRunOptions, 'rw' | 'rwMixRead' | 'verify' | 'warmupMs'>> & {
      durationMs?: number;
      requests?: number;
      cpu?: number;
      rangeBlocks: number;
    };
  /** Requests completed in the measurement window. */
  ios: number;
  /** Requests completed in the whole run (warm-up and drain included). */
  iosTotal: number;
  reads: number;
  writes: number;
  errors: number;
  verifyErrors: number;
  firstError?: string;
  seconds: number;
  iops: number;
  mibps: number;
  latency: LatencySummary;
  histogram?: Array<[number, number]>;
  perQueueIos: number[];
  initiator: {
    userSec: number;
    sysSec: number;
    /** Initiator process CPU over wall time, in % of one core (all its threads). */
    cpuPct: number;
    /** Wall time spent in loop iterations that reaped or submitted something, in %. */
    busyPct: number;
    /** Time the initiator thread visibly did not run (passes or clock gaps over 1 ms): preemption, GC. */
    hiccupMs: number;
    /** Garbage collections of the initiator process during the measurement, and their total pause. */
    gcCount: number;
    gcMs: number;
    kicks: number;
    /** Times the generator slept on the call eventfds. */
    sleeps: number;
    /** Kicks sent because the target stayed silent with requests in flight (see rescueMs). */
    rescueKicks: number;
  };
  targetProc?: {
    pid: number;
    cpuSec: number;
    /** Target CPU over wall time, in % of one core. */
    cpuPct: number;
    iopsPerCpuSec: number;
    before: ProcSample;
    after: ProcSample;
  };
}

const Phase = { IDLE: 0, WARMUP: 1, MEASURE: 2, DRAIN: 3 } as const;
/** Longest stretch of busy polling before yielding to the event loop once. */
const SLICE_MS = 20;
/** A polling pass (or idle stretch between clock reads) this long means the thread did not run. */
const HICCUP_MS = 1;
/** Idle polling passes between clock reads. */
const CLOCK_EVERY = 16;
/** Slots of LoadGenerator.times. */
const BUSY_MS = 0;
const HICCUP_MS_SUM = 1;
const LAST_PROGRESS_AT = 2;
const PATTERN_MAGIC = 0x76686c64;

class LoadQueue {
  readonly free: Int32Array;
  freeCount: number;
  inFlight = 0;
  readonly busy: Uint8Array;
  readonly submitTime: Float64Array;
  readonly slotLba: Float64Array;
  readonly slotWrite: Uint8Array;
  readonly slotGen: Float64Array;
  cursor = 0;
  ios = 0;
  kickFd = -1;
  callFd = -1;
  watch: FdWatchHandle | undefined;

  constructor(
    readonly index: number,
    readonly ring: LoadRing,
  ) {
    const n = ring.slots;
    this.free = new Int32Array(n);
    for (let i = 0; i < n; i++) this.free[i] = n - 1 - i;
    this.freeCount = n;
    this.busy = new Uint8Array(n);
    this.submitTime = new Float64Array(n);
    this.slotLba = new Float64Array(n);
    this.slotWrite = new Uint8Array(n);
    this.slotGen = new Float64Array(n);
  }
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Fills a block with the verification pattern for (lba, gen). */
export function fillPattern(m32: Uint32Array, index32: number, words: number, lba: number, gen: number): void {
  m32[index32] = PATTERN_MAGIC;
  m32[index32 + 1] = lba >>> 0;
  m32[index32 + 2] = Math.floor(lba / 4294967296);
  m32[index32 + 3] = gen >>> 0;
  const seed = (Math.imul(lba >>> 0, 0x9e3779b1) ^ gen) >>> 0;
  for (let k = 4; k < words; k++) m32[index32 + k] = (seed + Math.imul(k, 0x85ebca6b)) >>> 0;
}

/** Index of the first word that differs from the pattern, or -1. */
export function checkPattern(m32: Uint32Array, index32: number, words: number, lba: number, gen: number): number {
  if (m32[index32] !== PATTERN_MAGIC) return 0;
  if (m32[index32 + 1] !== lba >>> 0) return 1;
  if (m32[index32 + 2] !== Math.floor(lba / 4294967296)) return 2;
  if (m32[index32 + 3] !== gen >>> 0) return 3;
  const seed = (Math.imul(lba >>> 0, 0x9e3779b1) ^ gen) >>> 0;
  for (let k = 4; k < words; k++) if (m32[index32 + k] !== (seed + Math.imul(k, 0x85ebca6b)) >>> 0) return k;
  return -1;
}

export class LoadGenerator {
  readonly queues: LoadQueue[] = [];
  readonly hist = new LatencyHistogram();
  readonly rangeBlocks: number;
  private readonly opts: Required<Omit<LoadConnectOptions, 'cpu' | 'rangeBytes' | 'hugetlbfs'>> & Pick<LoadConnectOptions, 'cpu' | 'rangeBytes' | 'hugetlbfs'>;
  private readonly m32: Uint32Array;
  private readonly u8: Uint8Array;
  private readonly sectorsPerIo: number;
  private readonly reapSlots: Int32Array;
  private readonly reapLens: Uint32Array;
  /** The PRNG state, in a typed array: a u32 above 2^31 stored in a field is a new heap number (per request). */
  private readonly rng = new Uint32Array(1);
  private closed = false;

  // Per-run state.
  private phase: number = Phase.IDLE;
  private run_: Required<Omit<LoadRunOptions, 'targetPid' | 'onProgress' | 'requests' | 'durationMs'>> &
    Pick<LoadRunOptions, 'targetPid' | 'onProgress' | 'requests' | 'durationMs'> = LoadGenerator.runDefaults({});
  private readPct = 100;
  private seq = false;
  private startMs = 0;
  /** The measurement window on performance.now()'s timeline (GC entries are stamped on it). */
  private gcT0 = 0;
  private gcT1 = 0;
  private warmupEnd = 0;
  private measureEnd = Number.POSITIVE_INFINITY;
  private t0 = 0;
  private t1 = 0;
  private submittedMeasure = 0;
  private ios = 0;
  private iosAll = 0;
  private reads = 0;
  private writes = 0;
  private errors = 0;
  private verifyErrors = 0;
  private firstError: string | undefined;
  private inFlight = 0;
  /** Some queue may take more requests (cleared when a fill attempt submits nothing). */
  private fillWanted = true;
  /** busy ms, hiccup ms, last progress (ms): updated per pass, so doubles in a typed array (a field store allocates). */
  private readonly times = new Float64Array(3);
  private gcCount = 0;
  private gcMs = 0;
  private gcObserver: PerformanceObserver | undefined;
  private kicks = 0;
  private sleeps = 0;
  private rescueKicks = 0;
  private sleeping = false;
  private rescueTimer: NodeJS.Timeout | undefined;
  private nextReportMs = 0;
  private cpu0: NodeJS.CpuUsage | undefined;
  private cpu1: NodeJS.CpuUsage | undefined;
  private proc0: ProcSample | undefined;
  private proc1: ProcSample | undefined;
  private resolve: ((r: LoadResult) => void) | undefined;
  private reject: ((e: Error) => void) | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private immediatePending = false;

  // Verification state (allocated on the first verifying run).
  private expectedGen: Float64Array | undefined;
  private lbaBusy: Uint8Array | undefined;
  private genCounter = 0;

  private constructor(
    readonly ini: BlkInitiator,
    opts: LoadConnectOptions,
    queueSize: number,
  ) {
    this.opts = {
      socketPath: opts.socketPath,
      queues: opts.queues ?? 1,
      iodepth: opts.iodepth ?? 32,
      ioBytes: opts.ioBytes ?? 4096,
      ring: opts.ring ?? 'split',
      queueSize,
      indirect: opts.indirect ?? false,
      eventIdx: opts.eventIdx ?? true,
      spinUs: opts.spinUs ?? 50,
      rescueMs: opts.rescueMs ?? 2,
      seed: opts.seed ?? 0x2545f491,
      cpu: opts.cpu,
      rangeBytes: opts.rangeBytes,
    };
    const capacity = ini.capacitySectors * 512;
    const range = Math.min(capacity, opts.rangeBytes ?? capacity);
    this.rangeBlocks = Math.floor(range / this.opts.ioBytes);
    this.sectorsPerIo = this.opts.ioBytes / 512;
    this.m32 = new Uint32Array(ini.mem.u8.buffer);
    this.u8 = ini.mem.u8;
    this.reapSlots = new Int32Array(this.opts.iodepth);
    this.reapLens = new Uint32Array(this.opts.iodepth);
    this.rng[0] = this.opts.seed >>> 0 || 1;
  }

  private static runDefaults(o: LoadRunOptions) {
    return {
      rw: o.rw ?? 'randread',
      rwMixRead: o.rwMixRead ?? 50,
      warmupMs: o.warmupMs ?? 0,
      verify: o.verify ?? false,
      stopOnError: o.stopOnError ?? o.verify ?? false,
      progressMs: o.progressMs ?? 1000,
      stallTimeoutMs: o.stallTimeoutMs ?? 10_000,
      keepHistogram: o.keepHistogram ?? false,
      targetPid: o.targetPid,
      onProgress: o.onProgress,
      requests: o.requests,
      durationMs: o.durationMs ?? (o.requests === undefined ? 5000 : undefined),
    };
  }

  /** Connects, negotiates, sets the memory table and starts every queue. */
  static async connect(opts: LoadConnectOptions): Promise<LoadGenerator> {
    const queues = opts.queues ?? 1;
    const iodepth = opts.iodepth ?? 32;
    const ioBytes = opts.ioBytes ?? 4096;
    const indirect = opts.indirect ?? false;
    const ringKind = opts.ring ?? 'split';
    if (!Number.isInteger(queues) || queues < 1) throw new Error(`queues must be a positive integer (got ${queues})`);
    if (!Number.isInteger(iodepth) || iodepth < 1) throw new Error(`iodepth must be a positive integer (got ${iodepth})`);
    if (!Number.isInteger(ioBytes) || ioBytes < 512 || ioBytes % 512 !== 0) throw new Error(`ioBytes must be a multiple of 512 (got ${ioBytes})`);
    const queueSize = opts.queueSize ?? Math.max(64, nextPow2(indirect ? iodepth : 3 * iodepth));
    const ringOpts = { size: queueSize, slots: iodepth, ioBytes, eventIdx: false, indirect };
    const memBytes = Math.ceil((queues * loadRingBytes(ringOpts) + (1 << 20)) / (2 << 20)) * (2 << 20);
    if (opts.cpu !== undefined) check('sched_setaffinity', native.setAffinity([opts.cpu]));

    const ini = await BlkInitiator.negotiate(opts.socketPath, memBytes, {
      eventIdx: opts.eventIdx ?? true,
      indirect,
      requireVersion1: true,
      packed: ringKind === 'packed',
      hugetlbfs: opts.hugetlbfs,
    });
    let gen: LoadGenerator | undefined;
    try {
      if (indirect && !ini.has(VirtioFeature.RING_INDIRECT_DESC)) throw new Error('the target does not offer VIRTIO_RING_F_INDIRECT_DESC');
      if (ringKind === 'packed' && !ini.has(VirtioFeature.RING_PACKED)) throw new Error('the target does not offer VIRTIO_F_RING_PACKED');
      const offered = ini.configNumQueues ?? ini.maxQueues ?? 1;
      if (queues > offered) throw new Error(`the target offers ${offered} queue(s), ${queues} requested`);
      if (ioBytes % ini.blockSize !== 0) throw new Error(`ioBytes ${ioBytes} is not a multiple of the block size ${ini.blockSize}`);
      gen = new LoadGenerator(ini, opts, queueSize);
      if (gen.rangeBlocks < 1) throw new Error(`the device (${ini.capacitySectors * 512} bytes) is smaller than one I/O`);
      await ini.setMemTable();
      const eventIdx = ini.has(VirtioFeature.RING_EVENT_IDX);
      for (let q = 0; q < queues; q++) {
        const ring = createLoadRing(ringKind, ini.mem, { ...ringOpts, eventIdx });
        const lq = new LoadQueue(q, ring);
        gen.queues.push(lq);
        // Non-zero, non-repeating payload for writes (targets may special-case zeros).
        for (let s = 0; s < ring.slots; s++) fillPattern(gen.m32, ring.dataOff[s] / 4, ioBytes / 4, s, q + 1);
        lq.kickFd = check('eventfd', native.eventfd(0));
        lq.callFd = check('eventfd', native.eventfd(0));
        const callFd = lq.callFd;
        lq.watch = new native.FdWatch(callFd, () => {
          native.eventfdRead(callFd);
          gen?.onCall();
        });
        lq.watch.start();
        await ini.setupVring(q, queueSize, { desc: ini.mem.gpaToUva(ring.descGpa), avail: ini.mem.gpaToUva(ring.availGpa), used: ini.mem.gpaToUva(ring.usedGpa) }, lq.kickFd, lq.callFd, { base: ringKind === 'packed' ? PACKED_INITIAL_BASE : 0 });
      }
      return gen;
    } catch (e) {
      if (gen) gen.close();
      else ini.close();
      throw e;
    }
  }

  get eventIdx(): boolean {
    return this.ini.has(VirtioFeature.RING_EVENT_IDX);
  }

  /** Runs one measurement; resolves with its result. Not reentrant. */
  run(options: LoadRunOptions = {}): Promise<LoadResult> {
    if (this.closed) return Promise.reject(new Error('load generator is closed'));
    if (this.phase !== Phase.IDLE) return Promise.reject(new Error('a run is already in progress'));
    const o = LoadGenerator.runDefaults(options);
    if (!RW_MODES.includes(o.rw)) return Promise.reject(new Error(`unknown rw mode ${o.rw}`));
    if (o.requests !== undefined && (!Number.isInteger(o.requests) || o.requests < 1)) return Promise.reject(new Error('requests must be a positive integer'));
    this.run_ = o;
    this.seq = o.rw === 'read' || o.rw === 'write' || o.rw === 'rw';
    this.readPct = o.rw === 'randread' || o.rw === 'read' ? 100 : o.rw === 'randwrite' || o.rw === 'write' ? 0 : Math.min(100, Math.max(0, o.rwMixRead));
    if (o.verify && !this.expectedGen) {
      this.expectedGen = new Float64Array(this.rangeBlocks);
      this.lbaBusy = new Uint8Array(this.rangeBlocks);
    }
    this.hist.reset();
    this.ios = this.reads = this.writes = this.errors = this.verifyErrors = this.iosAll = 0;
    this.firstError = undefined;
    this.times[BUSY_MS] = this.times[HICCUP_MS_SUM] = 0;
    this.gcCount = this.gcMs = 0;
    this.kicks = this.sleeps = this.rescueKicks = 0;
    this.submittedMeasure = 0;
    for (const q of this.queues) {
      q.ios = 0;
      q.cursor = Math.floor((q.index * this.rangeBlocks) / this.queues.length);
      q.ring.suppressCalls();
    }
    this.startMs = clockMs();
    this.times[LAST_PROGRESS_AT] = this.startMs;
    this.nextReportMs = this.startMs + o.progressMs;
    this.warmupEnd = this.startMs + o.warmupMs;
    this.measureEnd = Number.POSITIVE_INFINITY;
    this.phase = Phase.WARMUP;
    this.fillWanted = true;
    if (o.warmupMs <= 0) this.beginMeasure();
    if (!this.gcObserver) {
      // GC pauses of the initiator during the measurement (entries arrive asynchronously; their
      // startTime is on performance.now()'s clock, so the window decides: gcT0/gcT1).
      this.gcObserver = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) {
          if (e.startTime >= this.gcT0 && (this.gcT1 <= this.gcT0 || e.startTime <= this.gcT1)) {
            this.gcCount++;
            this.gcMs += e.duration;
          }
        }
      });
      this.gcObserver.observe({ entryTypes: ['gc'] });
    }
    return new Promise<LoadResult>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      this.watchdog = setInterval(() => this.checkStall(), 250);
      this.armDeadline();
      this.schedulePump();
    });
  }

  private armDeadline(): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    const at = this.phase === Phase.WARMUP ? this.warmupEnd : this.measureEnd;
    if (!Number.isFinite(at)) return;
    this.deadlineTimer = setTimeout(() => this.wake(), Math.max(0, at - clockMs()));
  }

  private beginMeasure(): void {
    this.phase = Phase.MEASURE;
    this.hist.reset();
    this.ios = this.reads = this.writes = 0;
    this.times[BUSY_MS] = this.times[HICCUP_MS_SUM] = 0;
    this.gcCount = this.gcMs = 0;
    this.kicks = this.sleeps = this.rescueKicks = 0;
    for (const q of this.queues) q.ios = 0;
    this.proc0 = this.run_.targetPid !== undefined ? sampleProc(this.run_.targetPid) : undefined;
    this.cpu0 = process.cpuUsage();
    this.t0 = clockMs();
    this.gcT0 = performance.now();
    if (this.run_.durationMs !== undefined) this.measureEnd = this.t0 + this.run_.durationMs;
    this.armDeadline();
  }

  private endMeasure(): void {
    this.t1 = clockMs();
    this.gcT1 = performance.now();
    this.cpu1 = process.cpuUsage(this.cpu0);
    this.proc1 = this.run_.targetPid !== undefined ? sampleProc(this.run_.targetPid) : undefined;
    this.phase = Phase.DRAIN;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
  }

  private onCall(): void {
    if (this.sleeping) this.wake();
  }

  private wake(): void {
    if (!this.sleeping || this.phase === Phase.IDLE) return;
    this.sleeping = false;
    for (const q of this.queues) q.ring.suppressCalls();
    this.pump();
  }

  private schedulePump(): void {
    if (this.immediatePending) return;
    this.immediatePending = true;
    setImmediate(() => {
      this.immediatePending = false;
      if (!this.sleeping && this.phase !== Phase.IDLE) this.pump();
    });
  }

  private checkStall(): void {
    if (this.phase === Phase.IDLE) return;
    if (this.ini.fe.closed) return this.fail(new Error('the target closed the vhost-user connection'));
    if (this.inFlight > 0 && clockMs() - this.times[LAST_PROGRESS_AT] > this.run_.stallTimeoutMs) {
      this.fail(new Error(`no completion for ${this.run_.stallTimeoutMs} ms with ${this.inFlight} request(s) in flight`));
    }
  }

  private fail(e: Error): void {
    const reject = this.reject;
    this.finishRun();
    reject?.(e);
  }

  private finishRun(): void {
    this.phase = Phase.IDLE;
    this.sleeping = false;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    if (this.rescueTimer) clearTimeout(this.rescueTimer);
    this.rescueTimer = undefined;
    if (this.watchdog) clearInterval(this.watchdog);
    this.deadlineTimer = this.watchdog = undefined;
    this.resolve = this.reject = undefined;
  }

  private random(): number {
    let x = this.rng[0];
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng[0] = x;
    return this.rng[0];
  }

  /**
   * The hot loop: reap, refill, kick; spin while there is progress, then sleep or yield.
   *
   * The loop reads the addon's clock cell (Node 20's own clocks allocate on every read): twice per
   * pass that finds completions (the pass's timestamp — completion time of what it reaps and
   * submission time of what it refills — and its end, for the busy share), and once every
   * CLOCK_EVERY passes that find nothing. Nothing in the loop allocates.
   */
  private pump(): void {
    tick();
    let now = clock[0];
    const sliceStart = now;
    let idleSince = now;
    let idlePasses = 0;
    const spinMs = this.opts.spinUs / 1000;
    const queues = this.queues;
    const nq = queues.length;
    for (;;) {
      if (this.phase === Phase.WARMUP && now >= this.warmupEnd) this.beginMeasure();
      if (this.phase === Phase.MEASURE && (now >= this.measureEnd || (this.run_.requests !== undefined && this.ios >= this.run_.requests))) {
        this.endMeasure();
      }
      if (this.phase === Phase.DRAIN && this.inFlight === 0) return this.complete();
      let ready = this.fillWanted && this.phase !== Phase.DRAIN;
      for (let i = 0; i < nq && !ready; i++) if (queues[i].inFlight > 0 && queues[i].ring.hasUsed()) ready = true;
      if (ready) {
        tick();
        now = clock[0];
        let reaped = 0;
        for (let i = 0; i < nq; i++) reaped += this.reapQueue(queues[i]);
        if (this.phase === Phase.IDLE) return; // failed while reaping
        if (reaped > 0) this.fillWanted = true;
        if (this.phase === Phase.MEASURE && this.run_.requests !== undefined && this.ios >= this.run_.requests) this.endMeasure();
        if (this.phase !== Phase.DRAIN && this.fillWanted) {
          let submitted = 0;
          for (let i = 0; i < nq; i++) submitted += this.fillQueue(queues[i]);
          // Nothing could be submitted (all slots busy, request budget spent, verify locks):
          // wait for a completion before trying again.
          if (submitted === 0) this.fillWanted = false;
        }
        tick();
        const t = clock[0];
        if (this.phase === Phase.MEASURE) {
          this.times[BUSY_MS] += t - now;
          if (t - now > HICCUP_MS) this.times[HICCUP_MS_SUM] += t - now;
        }
        now = t;
        idleSince = t;
        idlePasses = 0;
        this.times[LAST_PROGRESS_AT] = t;
      } else {
        if (++idlePasses % CLOCK_EVERY !== 0) continue;
        const prev = now;
        tick();
        now = clock[0];
        if (now - prev > HICCUP_MS && this.phase === Phase.MEASURE) this.times[HICCUP_MS_SUM] += now - prev;
        if (now - idleSince > spinMs) {
          if (this.sleep()) return;
          idleSince = now;
        }
      }
      if (now - sliceStart > SLICE_MS) {
        if (now >= this.nextReportMs) this.report(now);
        return this.schedulePump();
      }
    }
  }

  /** Re-arms calls; returns false (keep polling) when completions slipped in meanwhile. */
  private sleep(): boolean {
    let pending = false;
    for (const q of this.queues) if (q.ring.armCalls()) pending = true;
    if (pending) {
      for (const q of this.queues) q.ring.suppressCalls();
      return false;
    }
    this.sleeping = true;
    this.sleeps++;
    if (this.inFlight > 0 && this.opts.rescueMs > 0) {
      // One Timeout object per generator, re-armed with refresh(): nothing allocated per sleep.
      if (this.rescueTimer) this.rescueTimer.refresh();
      else this.rescueTimer = setTimeout(() => this.rescue(), this.opts.rescueMs);
    }
    return true;
  }

  private rescue(): void {
    if (!this.sleeping || this.inFlight === 0) return;
    for (const q of this.queues) {
      if (q.inFlight === 0) continue;
      if (q.ring.armCalls()) continue; // completed meanwhile: the wake below reaps it
      native.eventfdWrite(q.kickFd);
      this.rescueKicks++;
    }
    this.wake();
  }

  private report(t: number): void {
    this.nextReportMs = t + this.run_.progressMs;
    const cb = this.run_.onProgress;
    if (!cb) return;
    const phase = this.phase === Phase.WARMUP ? 'warmup' : this.phase === Phase.MEASURE ? 'measure' : 'drain';
    const base = this.phase === Phase.WARMUP ? this.startMs : this.t0;
    const el = t - base;
    cb({ phase, elapsedMs: el, ios: this.ios, iops: el > 0 ? (this.ios * 1000) / el : 0 });
  }

  // reapQueue and fillQueue take the pass's time from the clock cell, which pump() just ticked: a
  // double passed to a function V8 does not inline is a new heap number per call.
  private reapQueue(q: LoadQueue): number {
    const now = clock[0];
    if (q.inFlight === 0) return 0;
    const n = q.ring.reap(this.reapSlots, this.reapLens);
    if (n === 0) return 0;
    const measuring = this.phase === Phase.MEASURE;
    const ring = q.ring;
    for (let k = 0; k < n; k++) {
      const s = this.reapSlots[k];
      if (s < 0 || q.busy[s] === 0) {
        this.fail(new Error(`queue ${q.index}: the target completed a descriptor head that is not in flight`));
        return n;
      }
      q.busy[s] = 0;
      this.iosAll++;
      q.free[q.freeCount++] = s;
      q.inFlight--;
      this.inFlight--;
      const isWrite = q.slotWrite[s] === 1;
      const status = this.u8[ring.statusOff[s]];
      if (status !== 0) {
        this.errors++;
        this.firstError ??= `queue ${q.index}: ${isWrite ? 'write' : 'read'} of block ${q.slotLba[s]} completed with status ${status}`;
      }
      if (this.run_.verify) this.verifyCompletion(q, s, isWrite, status, this.reapLens[k]);
      if (measuring) {
        this.hist.record((now - q.submitTime[s]) * 1e6);
        this.ios++;
        q.ios++;
        if (isWrite) this.writes++;
        else this.reads++;
      }
    }
    if ((this.errors > 0 || this.verifyErrors > 0) && this.run_.stopOnError && this.phase !== Phase.DRAIN) {
      if (this.phase === Phase.WARMUP) this.beginMeasure();
      this.endMeasure();
    }
    return n;
  }

  private verifyCompletion(q: LoadQueue, s: number, isWrite: boolean, status: number, len: number): void {
    const lba = q.slotLba[s];
    const expected = this.expectedGen as Float64Array;
    (this.lbaBusy as Uint8Array)[lba] = 0;
    if (isWrite) {
      expected[lba] = status === 0 ? q.slotGen[s] : 0;
      return;
    }
    if (status !== 0 || expected[lba] === 0) return;
    const words = this.opts.ioBytes / 4;
    const bad = len < this.opts.ioBytes ? -2 : checkPattern(this.m32, q.ring.dataOff[s] / 4, words, lba, expected[lba]);
    if (bad !== -1) {
      this.verifyErrors++;
      this.firstError ??=
        bad === -2
          ? `queue ${q.index}: read of block ${lba} reported ${len} bytes written, expected at least ${this.opts.ioBytes}`
          : `queue ${q.index}: block ${lba} does not hold write generation ${expected[lba]} (first bad word ${bad}: 0x${this.m32[q.ring.dataOff[s] / 4 + bad].toString(16)})`;
    }
  }

  private fillQueue(q: LoadQueue): number {
    const now = clock[0];
    if (q.freeCount === 0) return 0;
    const ring = q.ring;
    const m32 = this.m32;
    const requests = this.run_.requests;
    const measuring = this.phase === Phase.MEASURE;
    const verify = this.run_.verify;
    let n = 0;
    while (q.freeCount > 0) {
      if (measuring && requests !== undefined && this.submittedMeasure >= requests) break;
      const isWrite = this.readPct === 100 ? false : this.readPct === 0 ? true : this.random() % 100 >= this.readPct;
      let lba: number;
      if (this.seq) {
        lba = q.cursor;
        q.cursor = q.cursor + 1 >= this.rangeBlocks ? 0 : q.cursor + 1;
      } else {
        lba = Math.floor((this.random() / 4294967296) * this.rangeBlocks);
      }
      if (verify) {
        const lbaBusy = this.lbaBusy as Uint8Array;
        let tries = 0;
        while (lbaBusy[lba] !== 0 && tries++ < 16) lba = Math.floor((this.random() / 4294967296) * this.rangeBlocks);
        if (lbaBusy[lba] !== 0) break;
        lbaBusy[lba] = 1;
      }
      const s = q.free[--q.freeCount];
      q.busy[s] = 1;
      q.slotLba[s] = lba;
      q.slotWrite[s] = isWrite ? 1 : 0;
      q.submitTime[s] = now;
      const h = ring.hdrIndex32[s];
      const sector = lba * this.sectorsPerIo;
      m32[h] = isWrite ? BlkReqType.OUT : BlkReqType.IN;
      m32[h + 1] = 0;
      m32[h + 2] = sector >>> 0;
      m32[h + 3] = Math.floor(sector / 4294967296);
      this.u8[ring.statusOff[s]] = 0xff;
      if (verify) {
        if (isWrite) {
          const g = ++this.genCounter;
          q.slotGen[s] = g;
          fillPattern(m32, ring.dataOff[s] / 4, this.opts.ioBytes / 4, lba, g);
        } else {
          m32[ring.dataOff[s] / 4] = 0xdeadbeef; // the target must overwrite it
        }
      }
      ring.enqueue(s, !isWrite);
      q.inFlight++;
      this.inFlight++;
      if (measuring) this.submittedMeasure++;
      n++;
    }
    if (n > 0 && ring.publish()) {
      native.eventfdWrite(q.kickFd);
      this.kicks++;
    }
    return n;
  }

  private complete(): void {
    const resolve = this.resolve;
    const result = this.result();
    this.finishRun();
    resolve?.(result);
  }

  private result(): LoadResult {
    const o = this.run_;
    const seconds = Math.max(1e-9, (this.t1 - this.t0) / 1000);
    const cpu = this.cpu1 ?? { user: 0, system: 0 };
    const userSec = cpu.user / 1e6;
    const sysSec = cpu.system / 1e6;
    const r: LoadResult = {
      target: {
        socketPath: this.opts.socketPath,
        features: `0x${this.ini.features.toString(16)}`,
        capacityBytes: this.ini.capacitySectors * 512,
        blockSize: this.ini.blockSize,
        numQueues: this.ini.configNumQueues,
        eventIdx: this.eventIdx,
      },
      config: {
        queues: this.opts.queues,
        iodepth: this.opts.iodepth,
        ioBytes: this.opts.ioBytes,
        ring: this.opts.ring,
        queueSize: this.opts.queueSize,
        indirect: this.opts.indirect,
        spinUs: this.opts.spinUs,
        rescueMs: this.opts.rescueMs,
        rw: o.rw,
        rwMixRead: this.readPct,
        verify: o.verify,
        warmupMs: o.warmupMs,
        durationMs: o.durationMs,
        requests: o.requests,
        cpu: this.opts.cpu,
        rangeBlocks: this.rangeBlocks,
      },
      ios: this.ios,
      iosTotal: this.iosAll,
      reads: this.reads,
      writes: this.writes,
      errors: this.errors,
      verifyErrors: this.verifyErrors,
      firstError: this.firstError,
      seconds,
      iops: this.ios / seconds,
      mibps: (this.ios * this.opts.ioBytes) / seconds / (1 << 20),
      latency: this.hist.summary(),
      histogram: o.keepHistogram ? this.hist.buckets() : undefined,
      perQueueIos: this.queues.map((q) => q.ios),
      initiator: {
        userSec,
        sysSec,
        cpuPct: ((userSec + sysSec) / seconds) * 100,
        busyPct: (this.times[BUSY_MS] / 1000 / seconds) * 100,
        hiccupMs: this.times[HICCUP_MS_SUM],
        gcCount: this.gcCount,
        gcMs: this.gcMs,
        kicks: this.kicks,
        sleeps: this.sleeps,
        rescueKicks: this.rescueKicks,
      },
    };
    if (this.proc0 && this.proc1) {
      const cpuSec = this.proc1.cpuSec - this.proc0.cpuSec;
      r.targetProc = {
        pid: this.proc0.pid,
        cpuSec,
        cpuPct: (cpuSec / seconds) * 100,
        iopsPerCpuSec: cpuSec > 0 ? this.ios / cpuSec : 0,
        before: this.proc0,
        after: this.proc1,
      };
    }
    return r;
  }

  /** Stops the queues' watches and closes the connection (the target stops the rings). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.phase !== Phase.IDLE) this.fail(new Error('load generator closed during a run'));
    this.gcObserver?.disconnect();
    for (const q of this.queues) {
      q.watch?.close();
      if (q.kickFd >= 0) native.close(q.kickFd);
      if (q.callFd >= 0) native.close(q.callFd);
      q.kickFd = q.callFd = -1;
    }
    this.ini.close();
  }
}

/** Connects, runs once, closes. */
export async function runLoad(opts: LoadConnectOptions & LoadRunOptions): Promise<LoadResult> {
  const gen = await LoadGenerator.connect(opts);
  try {
    return await gen.run(opts);
  } finally {
    gen.close();
  }
}
