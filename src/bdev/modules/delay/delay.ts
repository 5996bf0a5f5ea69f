// delay vbdev (SPDK module/bdev/delay): a bdev over a base bdev that completes each READ/WRITE a
// configured latency after the base completed it; 1 in 100 (chosen at random at submission) gets
// the "p99" latency instead of the average one. Other I/O types pass straight through. The
// latencies live in a small SharedArrayBuffer in the channel spec, so bdev_delay_update_latency on
// the control thread changes them on every reactor at once; like SPDK, a changed latency applies
// to I/O completing at the base from then on, and each latency class completes in FIFO order.
//
// Reactor side: four FIFO rings (avg/p99 × read/write) of held child I/O with their deadlines and
// one timer per channel armed for the earliest head (setTimeout, or setImmediate under a
// millisecond); poll() also completes what is due, so a polling reactor keeps µs precision.
import { performance } from 'node:perf_hooks';
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall } from '../../bdev.js';
import type { OpenSpec } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType } from '../../io.js';
import { type ChildIo, PassThroughBdev, PassThroughChannel, type PassThroughSpec, uuidBytes, uuidSha1 } from '../../vbdev.js';

/** SPDK's BDEV_DELAY_NAMESPACE_UUID (module/bdev/delay/vbdev_delay.c). */
export const DELAY_NAMESPACE_UUID = '4009b574-6430-4f1b-bc40-ace811091027';
export const DELAY_PRODUCT_NAME = 'delay';

/** SPDK's enum delay_io_type order; also the index into the latency buffer. */
export const DelayType = { AVG_READ: 0, P99_READ: 1, AVG_WRITE: 2, P99_WRITE: 3 } as const;
export type DelayType = (typeof DelayType)[keyof typeof DelayType];
export const DELAY_TYPE_NAMES: Record<string, DelayType> = {
  avg_read: DelayType.AVG_READ,
  p99_read: DelayType.P99_READ,
  avg_write: DelayType.AVG_WRITE,
  p99_write: DelayType.P99_WRITE,
};

export interface DelayLatencies {
  avgReadUs: number;
  p99ReadUs: number;
  avgWriteUs: number;
  p99WriteUs: number;
}

export interface DelaySpec extends PassThroughSpec {
  module: 'delay';
  /** Float64Array(4) of latencies in µs, indexed by DelayType. */
  latencies: SharedArrayBuffer;
}

export class DelayBdev extends PassThroughBdev {
  readonly module = 'delay';
  readonly productName = DELAY_PRODUCT_NAME;
  private readonly latencyBuf = new SharedArrayBuffer(4 * 8);
  private readonly lat = new Float64Array(this.latencyBuf);

  /**
   * `releaseBase` lets go of the claim on `base` (called once, by destroy). Without `uuid`, the
   * UUID is SPDK's: SHA-1 name-based on the delay namespace and the base bdev's UUID bytes.
   */
  constructor(name: string, base: Bdev, latencies: DelayLatencies, uuid: string | undefined, releaseBase: () => void) {
    super(name, base, uuid ?? uuidSha1(DELAY_NAMESPACE_UUID, uuidBytes(base.uuid)), releaseBase);
    this.lat[DelayType.AVG_READ] = latencies.avgReadUs;
    this.lat[DelayType.P99_READ] = latencies.p99ReadUs;
    this.lat[DelayType.AVG_WRITE] = latencies.avgWriteUs;
    this.lat[DelayType.P99_WRITE] = latencies.p99WriteUs;
  }

  latency(type: DelayType): number {
    return this.lat[type];
  }

  /** bdev_delay_update_latency: every channel sees it from its next completion on. */
  setLatency(type: DelayType, us: number): void {
    // A Float64 store: no Atomics for floats, and an aligned 8-byte store does not tear on the
    // platforms Node runs on; a reactor reads either the old or the new value.
    this.lat[type] = us;
  }

  channelSpec(open: (base: Bdev) => OpenSpec): DelaySpec {
    return { ...this.passThroughSpec(open), module: 'delay', latencies: this.latencyBuf };
  }

  /** SPDK's _delay_write_conf_values, shared by dump_info_json and the config. */
  private confValues(): Record<string, unknown> {
    return {
      name: this.name,
      base_bdev_name: this.base.name,
      uuid: this.uuid,
      avg_read_latency: Math.round(this.lat[DelayType.AVG_READ]),
      p99_read_latency: Math.round(this.lat[DelayType.P99_READ]),
      avg_write_latency: Math.round(this.lat[DelayType.AVG_WRITE]),
      p99_write_latency: Math.round(this.lat[DelayType.P99_WRITE]),
    };
  }

  driverSpecific(): Record<string, unknown> {
    return { delay: this.confValues() };
  }

  writeConfig(): ConfigCall {
    return { method: 'bdev_delay_create', params: this.confValues() };
  }
}

// ---------------------------------------------------------------------------------------------
// Reactor side.

/** A FIFO of held children (grows by doubling; never shrinks, so steady state allocates nothing). */
class Fifo {
  items: Array<ChildIo | undefined> = new Array<ChildIo | undefined>(16).fill(undefined);
  head = 0;
  count = 0;

  push(c: ChildIo): void {
    if (this.count === this.items.length) {
      const old = this.items;
      const next = new Array<ChildIo | undefined>(old.length * 2).fill(undefined);
      for (let i = 0; i < this.count; i++) next[i] = old[(this.head + i) % old.length];
      this.items = next;
      this.head = 0;
    }
    this.items[(this.head + this.count) % this.items.length] = c;
    this.count++;
  }

  peek(): ChildIo | undefined {
    return this.count > 0 ? this.items[this.head] : undefined;
  }

  shift(): ChildIo {
    const c = this.items[this.head] as ChildIo;
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.items.length;
    this.count--;
    return c;
  }
}

const P99_ONE_IN = 100;

export class DelayChannel extends PassThroughChannel {
  private readonly lat: Float64Array;
  private readonly queues = [new Fifo(), new Fifo(), new Fifo(), new Fifo()];
  private held = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  /** Deadline (ms) the armed timer fires at. */
  private armedFor = Infinity;
  private readonly fire = () => {
    this.timer = undefined;
    this.immediate = undefined;
    this.armedFor = Infinity;
    this.completeDue(performance.now());
    this.rearm();
  };

  constructor(spec: ChannelSpec, open: (spec: OpenSpec) => BdevChannel) {
    super(spec, open);
    this.lat = new Float64Array((spec as DelaySpec).latencies);
  }

  override submit(io: BdevIo): void {
    if (this.closed) return io.complete(IoStatus.FAILED);
    const c = this.pool.take(io);
    // SPDK draws avg or p99 at submission: rand_r() % 100 == 0 is p99.
    const p99 = Math.floor(Math.random() * P99_ONE_IN) === 0;
    if (io.type === IoType.READ) c.tag = p99 ? DelayType.P99_READ : DelayType.AVG_READ;
    else if (io.type === IoType.WRITE) c.tag = p99 ? DelayType.P99_WRITE : DelayType.AVG_WRITE;
    else c.tag = -1;
    this.base.submit(c);
  }

  override childDone(c: ChildIo, status: IoStatus): void {
    // NOMEM from the base is handed up at once: the layer above retries it.
    if (c.tag < 0 || status === IoStatus.NOMEM || this.closed) {
      this.pool.release(c).complete(status);
      return;
    }
    const now = performance.now();
    c.status = status;
    const deadline = now + this.lat[c.tag] / 1000;
    this.pool.times[c.timeAt] = deadline;
    this.queues[c.tag].push(c);
    this.held++;
    if (deadline < this.armedFor) this.arm(deadline, now);
  }

  /** When a held child is due (ms): kept in the pool's times, not in a field (see ChildIo.timeAt). */
  private deadlineOf(c: ChildIo): number {
    return this.pool.times[c.timeAt];
  }

  private arm(deadline: number, now: number): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    this.armedFor = deadline;
    const ms = deadline - now;
    // setTimeout cannot wait less than 1 ms; below that, look again on the next loop turn.
    if (ms < 1) this.immediate = setImmediate(this.fire);
    else this.timer = setTimeout(this.fire, Math.floor(ms));
  }

  private rearm(): void {
    if (this.held === 0 || this.closed) return;
    let next = Infinity;
    for (const q of this.queues) {
      const h = q.peek();
      if (h && this.deadlineOf(h) < next) next = this.deadlineOf(h);
    }
    if (next < Infinity) this.arm(next, performance.now());
  }

  /** Completes every held I/O whose deadline has passed, FIFO within each latency class. */
  private completeDue(now: number): number {
    let n = 0;
    for (let t = 0; t < 4; t++) {
      const q = this.queues[t];
      for (let h = q.peek(); h && this.deadlineOf(h) <= now; h = q.peek()) {
        q.shift();
        this.held--;
        n++;
        const status = h.status;
        this.pool.release(h).complete(status);
      }
    }
    return n;
  }

  /** Completions of the base (if it polls) plus delayed I/O that is due. */
  override poll(): number {
    let n = super.poll();
    // The armed timer may then find nothing due; it re-arms for what is left.
    if (this.held > 0) n += this.completeDue(performance.now());
    return n;
  }

  /** Completes what is still held at once (the base finished it); the base closes after. */
  protected override onClose(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    this.completeDue(Infinity);
  }
}
