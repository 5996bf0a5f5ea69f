// How a polling reactor waits when it has nothing to do but wait for backend I/O (io_uring,
// librbd): spin, or sleep on the completions' eventfd. Spinning gives the lowest latency on a
// fast device but burns the core for the whole device time: on a device that is the bottleneck,
// a full core for what an event loop (QSD) serves with a fraction of one. The policy learns the
// backend's mean latency L from what the reactor sees (Little's law: requests out × time /
// completions) and sleeps at once when waking costs little against it:
//   - with 2 or more requests out and L ≥ SLEEP_LATENCY_MS (a disk at QD 32: ~450 µs), the
//     device stays busy with the others while the reactor is off the CPU, and completions batch
//     up behind one wake-up: same IOPS, a third of the CPU (bench disk rows);
//   - with 1 request out, every wake-up (20-50 µs here) adds to each request's latency, so only
//     for L ≥ SLEEP_LATENCY_QD1_MS (RBD, a congested disk);
//   - otherwise (a fast device: L ≈ 15-40 µs) it spins as before, up to BACKEND_WAIT_MS.
// Tried and dropped: napping (clock_nanosleep) for half of L, as Linux's hybrid polling does: a
// nap on these VMs overshoots by 15-25 µs when the core is quiet and by hundreds of µs when the
// device's kernel threads share it, which ate the gain.
// All state is in a Float64Array: doubles stored in object fields would allocate per pass.

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

const AREA = 0; // Σ requests out × ms in the current window
const DONE = 1; // backend completions in the current window
const SPAN = 2; // ms in the current window
const LATENCY = 3; // estimated backend latency (ms), 0 until measured
const ASLEEP = 4; // 1 while the latency says: sleep on the eventfd
const SLEEPS = 5; // times it chose to sleep

export class BackendWait {
  private readonly s = new Float64Array(6);

  constructor(private readonly enabled: boolean) {}

  /** Estimated backend latency in ms (0 until measured). */
  get latencyMs(): number {
    return this.s[LATENCY];
  }

  /** For framework_get_reactors: the learned latency (µs) and how often it slept on it. */
  stats(): { latencyUs: number; sleeps: number } {
    return { latencyUs: Math.round(this.s[LATENCY] * 1000), sleeps: this.s[SLEEPS] };
  }

  /** `dtMs` of polling (or sleep) during which `out` requests were at backends, and `done` backend completions. */
  sample(out: number, dtMs: number, done: number): void {
    const s = this.s;
    if (out === 0 && done === 0) return;
    s[AREA] += out * dtMs;
    s[DONE] += done;
    s[SPAN] += dtMs;
    if (s[DONE] >= WINDOW_DONE || (s[SPAN] >= WINDOW_MS && s[DONE] > 0)) {
      const l = s[AREA] / s[DONE];
      s[LATENCY] = s[LATENCY] === 0 ? l : s[LATENCY] + ALPHA * (l - s[LATENCY]);
      s[AREA] = 0;
      s[DONE] = 0;
      s[SPAN] = 0;
    }
  }

  /** Whether a pass that found no work while `out` (> 0) requests are at backends should sleep at once. */
  sleepNow(out: number): boolean {
    const s = this.s;
    if (!this.enabled || s[LATENCY] === 0) return false;
    const base = out > 1 ? SLEEP_LATENCY_MS : SLEEP_LATENCY_QD1_MS;
    const threshold = s[ASLEEP] !== 0 ? base * STAY_ASLEEP + WAKE_MS : base;
    s[ASLEEP] = s[LATENCY] >= threshold ? 1 : 0;
    if (s[ASLEEP] !== 0) s[SLEEPS]++;
    return s[ASLEEP] !== 0;
  }
}
