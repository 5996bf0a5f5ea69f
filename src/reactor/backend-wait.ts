// How a polling reactor waits when it has nothing to do but wait for backend I/O (io_uring,
// librbd): spin, or sleep on the completions' eventfd. Spinning gives the lowest latency on a
// fast device but burns the core for the whole device time: on a device that is the bottleneck,
// a full core for what an event loop (QSD) serves with a fraction of one. The policy learns the
// backend's mean latency L, timed from the pass that started each request to the pass that saw it
// complete, and sleeps at once when waking costs little against it:
//   - with 2 or more requests out and L ≥ SLEEP_LATENCY_MS (a disk at QD 32: ~450 µs), the
//     device stays busy with the others while the reactor is off the CPU, and completions batch
//     up behind one wake-up: same IOPS, a third of the CPU (bench disk rows);
//   - with 1 request out, every wake-up (20-50 µs here) adds to each request's latency, so only
//     for L ≥ SLEEP_LATENCY_QD1_MS (RBD, a congested disk);
//   - otherwise (a fast device: L ≈ 15-40 µs) it tries both and keeps the faster. Spinning is
//     not always the faster: a loop device or an io_uring worker needs this very core to
//     complete the request, and a spinning reactor takes it from them (a loop device at QD 1:
//     30-40k IO/s spinning, 51-54k sleeping, QSD 46-52k). So the reactor measures windows spent
//     spinning and windows spent sleeping, keeps the mode with the shorter round trip (sleep on
//     a tie within 5%: it costs no CPU) and re-measures the other mode for EXPLORE_WINDOWS windows
//     every EXPLORE_MIN..EXPLORE_MAX windows, less often while it keeps losing (a device where a wake-up
//     costs more than it frees spends 4 windows in 260 measuring that).
//     The modes are compared by round trip, not by L: the window's wall time per completion
//     times the depth the driver keeps, so it counts what L leaves out, the time between a
//     completion and the driver's next request. Where the device's kernel thread runs decides
//     that part: a loop device at QD 1 writes had spinning's L at 27 µs and sleeping's at 33,
//     yet served 16-31k IO/s spinning and 36-38k sleeping (bench, 3 alternated runs).
// Tried and dropped: napping (clock_nanosleep) for half of L, as Linux's hybrid polling does: a
// nap on these VMs overshoots by 15-25 µs when the core is quiet and by hundreds of µs when the
// device's kernel threads share it, which ate the gain.
// All state is in a Float64Array: doubles stored in object fields would allocate per pass.

import type { BackendWaitMode } from './messages.js';

/** Backend latency from which the reactor sleeps at once while 2 or more requests are out. */
const SLEEP_LATENCY_MS = 0.15;
/** The same with a single request out (the wake-up adds to its latency). */
const SLEEP_LATENCY_QD1_MS = 0.3;
/**
 * Asleep, the latency the reactor measures includes its wake-ups (40-60 µs here): it stays asleep
 * while the estimate is at least STAY_ASLEEP of the threshold plus WAKE_MS, so that it neither
 * keeps itself asleep with its own wake-ups nor switches at every window around the threshold.
 */
const STAY_ASLEEP = 0.8;
const WAKE_MS = 0.04;
/** The latency estimate is refreshed after this many completions, or this long with fewer. */
const WINDOW_DONE = 64;
const WINDOW_MS = 5;
/** Weight of a new window in the moving average. */
const ALPHA = 0.25;

/** Weight of a new measurement block in a mode's round trip. */
const ALPHA_MODE = 0.5;
/** A window's round trip counts at most this many times the mode's figure (stalls). */
const STALL_CAP = 2;
/** Sleeping must be within this factor of spinning's round trip to be chosen (it saves the CPU). */
const SLEEP_TIE = 1.05;
/** The mode not chosen is measured every this many windows; doubled while it keeps losing. */
const EXPLORE_MIN = 16;
const EXPLORE_MAX = 256;
/** Windows in a row that measure the mode not chosen. */
const EXPLORE_WINDOWS = 4;

const LAT_SUM = 0; // Σ latency (ms) of the current window's completions
const DONE = 1; // backend completions in the current window
const SPAN = 2; // ms in the current window
const LATENCY = 3; // estimated backend latency (ms), 0 until measured
const ASLEEP = 4; // 1 while the latency says: sleep on the eventfd
const SLEEPS = 5; // times it chose to sleep
const SPIN_LATENCY = 6; // round trip (ms) measured in windows spent spinning, 0 until measured
const SLEEP_LATENCY = 7; // the same, sleeping
const WINDOW_SLEEPS = 8; // 1 while the current window, on a fast device, sleeps
const SINCE_EXPLORE = 9; // windows since the other mode was last measured
const EXPLORE_EVERY = 10; // current exploration interval (windows)
const EXPLORING = 11; // windows left in the current measurement of the mode not chosen
const MAX_OUT = 12; // most requests out at once in the current window: the depth the driver keeps
const BLOCK = 13; // round trips of that measurement's windows (EXPLORE_WINDOWS slots)

/** The median of the block's EXPLORE_WINDOWS (4) round trips: the mean of the middle two. */
function blockMedian(s: Float64Array): number {
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = BLOCK; i < BLOCK + EXPLORE_WINDOWS; i++) {
    sum += s[i];
    min = Math.min(min, s[i]);
    max = Math.max(max, s[i]);
  }
  return (sum - min - max) / 2;
}

export class BackendWait {
  private readonly s = new Float64Array(BLOCK + EXPLORE_WINDOWS);

  constructor(private readonly mode: BackendWaitMode) {
    this.s[EXPLORE_EVERY] = EXPLORE_MIN;
  }

  /** Estimated backend latency in ms (0 until measured). */
  get latencyMs(): number {
    return this.s[LATENCY];
  }

  /** When the next of `out` requests at backends is expected to complete (ms from now; Infinity until measured). */
  nextCompletionMs(out: number): number {
    const l = this.s[LATENCY];
    return l === 0 ? Infinity : l / out;
  }

  /** For framework_get_reactors: the learned latency (µs) and how often it slept on it. */
  stats(): { latencyUs: number; sleeps: number; spinLatencyUs: number; sleepLatencyUs: number } {
    const s = this.s;
    return { latencyUs: us(s[LATENCY]), sleeps: s[SLEEPS], spinLatencyUs: us(s[SPIN_LATENCY]), sleepLatencyUs: us(s[SLEEP_LATENCY]) };
  }

  /**
   * `dtMs` of polling (or sleep) after which `out` requests are at backends, and `done` backend
   * completions that took `latencySumMs` in all (from the pass that started each to the pass that
   * saw it complete: a sleeping reactor's wake-up counts, as the guest waits for it too).
   */
  sample(out: number, dtMs: number, done: number, latencySumMs: number): void {
    const s = this.s;
    // Time with nothing out counts towards the window once it started: it is the driver's
    // turnaround, which the mode can slow down (its core's share of the device's kernel thread).
    if (out === 0 && done === 0) {
      if (s[MAX_OUT] !== 0) s[SPAN] += dtMs;
      return;
    }
    s[LAT_SUM] += latencySumMs;
    s[DONE] += done;
    s[SPAN] += dtMs;
    if (out > s[MAX_OUT]) s[MAX_OUT] = out;
    if (s[DONE] >= WINDOW_DONE || (s[SPAN] >= WINDOW_MS && s[DONE] > 0)) {
      const l = s[LAT_SUM] / s[DONE];
      // A window measuring the mode not chosen says nothing about the one the reactor runs in.
      if (s[EXPLORING] === 0 || s[ASLEEP] !== 0) s[LATENCY] = s[LATENCY] === 0 ? l : s[LATENCY] + ALPHA * (l - s[LATENCY]);
      // A window the threshold slept through measured no choice between the modes.
      if (s[ASLEEP] === 0) this.chooseFastMode((s[SPAN] * Math.max(1, s[MAX_OUT])) / s[DONE]);
      s[LAT_SUM] = 0;
      s[DONE] = 0;
      s[SPAN] = 0;
      s[MAX_OUT] = 0;
    }
  }

  /**
   * At the end of a window of round trip `l` on a fast device: records it for its mode and picks the
   * next window's. The mode not chosen is measured over EXPLORE_WINDOWS windows in a row: one
   * window of a loop device spinning is either ~2 µs or ~30 µs, by where the scheduler put the
   * device's kernel thread, and a single one would decide by chance.
   */
  private chooseFastMode(l: number): void {
    const s = this.s;
    const explored = s[WINDOW_SLEEPS] !== 0 ? SLEEP_LATENCY : SPIN_LATENCY;
    if (s[EXPLORING] === 0) {
      this.record(explored, l, ALPHA);
    } else {
      s[BLOCK + EXPLORE_WINDOWS - s[EXPLORING]] = l;
      if (--s[EXPLORING] > 0) return;
      this.record(explored, blockMedian(s), ALPHA_MODE);
      // The mode just measured lost again: measure it less often; it won: it is now chosen.
      const won = (s[WINDOW_SLEEPS] !== 0) === this.prefersSleep();
      s[EXPLORE_EVERY] = won ? EXPLORE_MIN : Math.min(EXPLORE_MAX, s[EXPLORE_EVERY] * 2);
    }
    const preferSleep = this.prefersSleep() ? 1 : 0;
    if (++s[SINCE_EXPLORE] >= s[EXPLORE_EVERY]) {
      s[SINCE_EXPLORE] = 0;
      s[EXPLORING] = EXPLORE_WINDOWS;
      s[WINDOW_SLEEPS] = 1 - preferSleep;
    } else {
      s[WINDOW_SLEEPS] = preferSleep;
    }
  }

  /**
   * Blends round trip `l` into the mode's figure at `slot` with weight `alpha`. A figure a stall
   * fell in (a VM disk's write taking milliseconds) counts at most STALL_CAP times the figure.
   */
  private record(slot: number, l: number, alpha: number): void {
    const s = this.s;
    s[slot] = s[slot] === 0 ? l : s[slot] + alpha * (Math.min(l, STALL_CAP * s[slot]) - s[slot]);
  }

  private prefersSleep(): boolean {
    const s = this.s;
    return s[SLEEP_LATENCY] !== 0 && s[SPIN_LATENCY] !== 0 && s[SLEEP_LATENCY] <= s[SPIN_LATENCY] * SLEEP_TIE;
  }

  /** Whether a pass that found no work while `out` (> 0) requests are at backends should sleep at once. */
  sleepNow(out: number): boolean {
    const s = this.s;
    if (this.mode !== 'adaptive') return this.mode === 'sleep';
    if (s[LATENCY] === 0) return false;
    const base = out > 1 ? SLEEP_LATENCY_MS : SLEEP_LATENCY_QD1_MS;
    const threshold = s[ASLEEP] !== 0 ? base * STAY_ASLEEP + WAKE_MS : base;
    s[ASLEEP] = s[LATENCY] >= threshold ? 1 : 0;
    const sleep = s[ASLEEP] !== 0 || s[WINDOW_SLEEPS] !== 0;
    if (sleep) s[SLEEPS]++;
    return sleep;
  }
}

function us(ms: number): number {
  return Math.round(ms * 1000);
}
