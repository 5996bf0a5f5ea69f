// QoS rate limits with SPDK's semantics (lib/bdev/bdev.c): per bdev, across every channel on
// every reactor, a budget per 1 ms time slice for each limit (I/O per second, read+write bytes,
// read bytes, write bytes). An I/O goes while every limit that applies to it has budget left in
// the slice (it may overrun the last bit; the overrun is taken from the next slice), otherwise it
// is held by its channel and released in a later slice, never failed. As in SPDK, only reads and
// writes are limited; FLUSH, UNMAP and WRITE_ZEROES pass.
//
// The budget lives in the layer's shared control words (layer-share.ts). There is no QoS thread:
// the first channel to see a new slice grants it (compare-exchange on the slice number), adding
// one slice's quota per elapsed slice to what was left, as SPDK's poller does. SPDK's poller runs
// every slice, so a late one (its reactor kept off the core) grants every slice it missed; ours
// runs when I/O asks, so it does the same only while I/O is held (every elapsed slice had a
// backlog: a hold always follows a grant), and grants at most MAX_IDLE_CATCH_UP slices otherwise
// (a bdev idle for seconds gets no burst).
import { Ctl } from './layer-share.js';
import { IoType } from './io.js';
import { clockMs } from '../native/clock.js';

/** The limits of bdev_set_qos_limit, in SPDK's order (enum spdk_bdev_qos_rate_limit_type). */
export const QOS_LIMIT_KEYS = ['rw_ios_per_sec', 'rw_mbytes_per_sec', 'r_mbytes_per_sec', 'w_mbytes_per_sec'] as const;
export type QosLimitKey = (typeof QOS_LIMIT_KEYS)[number];
export type QosLimits = Record<QosLimitKey, number>;

const RW_IOS = 0;
const RW_BYTES = 1;
const R_BYTES = 2;
const W_BYTES = 3;

/** SPDK_BDEV_QOS_TIMESLICE_IN_USEC. */
export const QOS_TIMESLICE_MS = 1;
/** SPDK_BDEV_QOS_MIN_IOS_PER_SEC, SPDK_BDEV_QOS_MIN_BYTES_PER_SEC (1 MiB/s). */
export const QOS_MIN_IOS_PER_SEC = 1000;
export const QOS_MIN_MBYTES_PER_SEC = 1;
/** SPDK's MB in these limits is MiB. */
const MB = 1024 * 1024;
/** SPDK_BDEV_QOS_MIN_IO_PER_TIMESLICE, SPDK_BDEV_QOS_MIN_BYTE_PER_TIMESLICE. */
const MIN_IO_PER_SLICE = 1;
const MIN_BYTES_PER_SLICE = 512;
/** Elapsed slices granted at once at most while no I/O is held (an idle bdev gets no burst). */
const MAX_IDLE_CATCH_UP = 4;
/** The same while I/O is held: every slice a late reactor missed, within reason. */
const MAX_CATCH_UP = 1000;
/** Largest limit accepted: a slice's budget must fit an int32 word with room for an overrun. */
export const QOS_MAX_IOS_PER_SEC = 1_000_000_000;
export const QOS_MAX_MBYTES_PER_SEC = 1_000_000;
const INT32_MAX = 0x7fffffff;

/** Control thread: the bdev's assigned limits, published into the shared control words. */
export class BdevQos {
  private readonly ctl: Int32Array;
  private readonly assigned: QosLimits = { rw_ios_per_sec: 0, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 };

  constructor(control: SharedArrayBuffer) {
    this.ctl = new Int32Array(control);
  }

  /** bdev_get_bdevs' assigned_rate_limits (0 = unlimited). */
  limits(): QosLimits {
    return { ...this.assigned };
  }

  get enabled(): boolean {
    return QOS_LIMIT_KEYS.some((k) => this.assigned[k] > 0);
  }

  /**
   * Sets the given limits (0 removes one), the others stay. Takes effect at once: the current
   * slice (at `nowMs`, the monotonic clock of native/clock.ts) starts with one slice's budget.
   */
  set(change: Partial<QosLimits>, nowMs = clockMs()): void {
    for (const k of QOS_LIMIT_KEYS) {
      const v = change[k];
      if (v !== undefined) this.assigned[k] = v;
    }
    const ctl = this.ctl;
    QOS_LIMIT_KEYS.forEach((k, i) => {
      const v = this.assigned[k];
      const quota = v === 0 ? 0 : i === RW_IOS ? Math.max(MIN_IO_PER_SLICE, Math.floor((v * QOS_TIMESLICE_MS) / 1000)) : Math.max(MIN_BYTES_PER_SLICE, Math.floor((v * MB * QOS_TIMESLICE_MS) / 1000));
      Atomics.store(ctl, Ctl.QOS_QUOTA + i, quota);
      // Every change starts the current slice afresh with one slice's budget, as SPDK's does.
      Atomics.store(ctl, Ctl.QOS_REMAINING + i, quota);
    });
    Atomics.store(ctl, Ctl.QOS_SLICE, Math.floor(nowMs / QOS_TIMESLICE_MS) | 0);
    Atomics.store(ctl, Ctl.QOS_ACTIVE, this.enabled ? 1 : 0);
  }
}

/** Reactor side: takes budget for I/O of one channel. */
export class QosGate {
  private readonly ctl: Int32Array;

  constructor(control: SharedArrayBuffer) {
    this.ctl = new Int32Array(control);
  }

  /** Whether any limit is set (one plain load per I/O when none is). */
  get active(): boolean {
    return this.ctl[Ctl.QOS_ACTIVE] !== 0;
  }

  /**
   * Takes the budget for one I/O at time `nowMs`; false when a limit that applies has none left
   * in this slice (the I/O must wait for a later one).
   */
  admit(type: IoType, length: number, nowMs: number): boolean {
    const ctl = this.ctl;
    const slice = Math.floor(nowMs / QOS_TIMESLICE_MS) | 0;
    const last = Atomics.load(ctl, Ctl.QOS_SLICE);
    if (slice !== last) this.grant(last, slice);
    const isRead = type === IoType.READ;
    if (!isRead && type !== IoType.WRITE) return true;
    const R = Ctl.QOS_REMAINING;
    const Q = Ctl.QOS_QUOTA;
    const ios = ctl[Q + RW_IOS] !== 0;
    const rw = ctl[Q + RW_BYTES] !== 0;
    const dir = isRead ? R_BYTES : W_BYTES;
    const one = ctl[Q + dir] !== 0;
    if ((ios && Atomics.load(ctl, R + RW_IOS) <= 0) || (rw && Atomics.load(ctl, R + RW_BYTES) <= 0) || (one && Atomics.load(ctl, R + dir) <= 0)) return false;
    if (ios) Atomics.sub(ctl, R + RW_IOS, 1);
    if (rw) Atomics.sub(ctl, R + RW_BYTES, length);
    if (one) Atomics.sub(ctl, R + dir, length);
    return true;
  }

  /** Grants the slices elapsed since `last` once, to the first channel that swaps the slice number. */
  private grant(last: number, slice: number): void {
    const ctl = this.ctl;
    const elapsed = (slice - last) | 0;
    if (elapsed <= 0 && elapsed > -INT32_MAX) return; // another channel is ahead of our clock read
    if (Atomics.compareExchange(ctl, Ctl.QOS_SLICE, last, slice) !== last) return;
    const most = Atomics.load(ctl, Ctl.QOS_WAITING) !== 0 ? MAX_CATCH_UP : MAX_IDLE_CATCH_UP;
    const n = elapsed > 0 && elapsed < most ? elapsed : most;
    for (let i = 0; i < 4; i++) {
      const quota = ctl[Ctl.QOS_QUOTA + i];
      if (quota === 0) continue;
      // Unused budget expires with its slice; an overrun is carried (SPDK's remaining_this_timeslice).
      const left = Atomics.exchange(ctl, Ctl.QOS_REMAINING + i, 0);
      Atomics.add(ctl, Ctl.QOS_REMAINING + i, Math.min((left < 0 ? left : 0) + n * quota, INT32_MAX));
    }
  }
}
