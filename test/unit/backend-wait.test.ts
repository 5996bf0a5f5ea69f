// The reactor's backend-wait policy (src/reactor/backend-wait.ts): the latency it learns from
// poll passes (Little's law) and when it sleeps on the completions' eventfd instead of spinning.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BackendWait } from '../../src/reactor/backend-wait.js';

/**
 * Feeds passes of `passMs` for `ms` of a backend with latency `latencyMs` kept at `qd` requests:
 * completions arrive at qd / latency per ms (Little's law), spread over the passes. A latency
 * given as [spinning, sleeping] depends on what the reactor chooses to do in each pass; the
 * result is the share of passes it slept.
 */
function drive(w: BackendWait, latencyMs: number | readonly [number, number], qd: number, ms: number, passMs = 0.002): number {
  let due = 0;
  let passes = 0;
  let slept = 0;
  for (let t = 0; t < ms; t += passMs) {
    let latency = latencyMs as number;
    if (typeof latencyMs !== 'number') {
      const sleeps = w.sleepNow(qd);
      latency = latencyMs[sleeps ? 1 : 0];
      slept += sleeps ? 1 : 0;
    }
    passes++;
    due += (qd / latency) * passMs;
    const done = Math.floor(due);
    due -= done;
    w.sample(qd, passMs, done, done * latency);
  }
  return slept / passes;
}

/**
 * A driver at QD 1 for `ms`: each request spends a backend latency and then a turnaround (from
 * its completion to the driver's next request) that both depend on whether the reactor chose to
 * sleep on it, given as [spinning, sleeping]. Returns the share of requests served sleeping.
 */
function driveQd1(w: BackendWait, backendMs: readonly [number, number], turnaroundMs: readonly [number, number], ms: number, passMs = 0.002, stall = (_request: number) => 0): number {
  let requests = 0;
  let slept = 0;
  for (let t = 0; t < ms; ) {
    const sleeps = w.sleepNow(1) ? 1 : 0;
    requests++;
    slept += sleeps;
    const latency = backendMs[sleeps] + stall(requests);
    for (let left = latency; left > passMs; left -= passMs) w.sample(1, passMs, 0, 0);
    w.sample(0, passMs, 1, latency);
    for (let left = turnaroundMs[sleeps]; left > 0; left -= passMs) w.sample(0, passMs, 0, 0);
    t += latency + turnaroundMs[sleeps];
  }
  return slept / requests;
}

describe('backend wait policy', () => {
  test('learns the backend latency from the time its completions took', () => {
    for (const [latency, qd] of [
      [0.015, 1],
      [0.16, 32],
      [1.2, 1],
    ] as const) {
      const w = new BackendWait('adaptive');
      drive(w, latency, qd, 200);
      assert.ok(Math.abs(w.latencyMs - latency) / latency < 0.1, `latency ${latency} ms at QD ${qd}: estimated ${w.latencyMs}`);
    }
  });

  test('a fast device where a wake-up adds to the latency spins at any depth, and rarely measures sleeping', () => {
    for (const [spin, sleep] of [
      [0.015, 0.045],
      [0.04, 0.07],
      [0.005, 0.02],
    ] as const) {
      for (const qd of [1, 4]) {
        const w = new BackendWait('adaptive');
        drive(w, [spin, sleep], qd, 200);
        const share = drive(w, [spin, sleep], qd, 2000);
        assert.ok(share < 0.06, `spin ${spin} ms, sleep ${sleep} ms, QD ${qd}: slept in ${(share * 100).toFixed(1)}% of passes`);
        assert.ok(Math.abs(w.stats().spinLatencyUs - spin * 1000) <= spin * 100, `spin latency ${w.stats().spinLatencyUs} µs`);
      }
    }
  });

  test('a device that completes faster while the reactor sleeps (a loop device needs its core) is served sleeping', () => {
    for (const qd of [1, 2]) {
      const w = new BackendWait('adaptive');
      const share = drive(w, [0.028, 0.018], qd, 500);
      assert.ok(share > 0.85, `QD ${qd}: slept in ${(share * 100).toFixed(1)}% of passes`);
      assert.ok(Math.abs(w.stats().sleepLatencyUs - 18) <= 2, `sleep latency ${w.stats().sleepLatencyUs} µs`);
      // ...and goes back to spinning when that changes (the other load on the core left).
      drive(w, [0.012, 0.018], qd, 500);
      assert.ok(drive(w, [0.012, 0.018], qd, 500) < 0.1, 'spins again once spinning is faster');
    }
  });

  test('the modes are compared by round trip: a spinning reactor that slows the driver\'s turnaround loses though its backend latency is lower', () => {
    // Loop device at QD 1, writes (bench): backend 27 µs spinning, 33 µs sleeping, yet the driver
    // is served faster while the reactor sleeps, as the device's kernel thread then leaves its core.
    const w = new BackendWait('adaptive');
    driveQd1(w, [0.027, 0.033], [0.03, 0.005], 300);
    const share = driveQd1(w, [0.027, 0.033], [0.03, 0.005], 1000);
    assert.ok(share > 0.85, `slept for ${(share * 100).toFixed(1)}% of requests`);
    assert.ok(Math.abs(w.stats().sleepLatencyUs - 38) <= 4, `sleeping round trip ${w.stats().sleepLatencyUs} µs`);
    assert.ok(Math.abs(w.stats().spinLatencyUs - 57) <= 6, `spinning round trip ${w.stats().spinLatencyUs} µs`);
    // The same backend with a turnaround that does not depend on the mode: spinning wins.
    const fair = new BackendWait('adaptive');
    driveQd1(fair, [0.027, 0.033], [0.01, 0.01], 300);
    assert.ok(driveQd1(fair, [0.027, 0.033], [0.01, 0.01], 1000) < 0.1, 'spins when its round trip is the shorter');
  });

  test('a stall now and then (a VM disk\'s write taking 2.6 ms) does not decide between the modes', () => {
    // One request in 100 stalls, whichever the mode: the window it falls in reads many times its
    // usual round trip, and a mean over windows would hand the choice to where stalls fell.
    const stall = (request: number) => (request % 100 === 0 ? 2.6 : 0);
    for (const [backend, turnaround, sleepWins] of [
      [[0.027, 0.033], [0.03, 0.005], true],
      [[0.012, 0.03], [0.005, 0.005], false],
      // A VM disk at QD 1: 130 µs either way, and a wake-up adds 45 µs to sleeping's turnaround.
      [[0.13, 0.13], [0.005, 0.05], false],
    ] as const) {
      const w = new BackendWait('adaptive');
      driveQd1(w, backend, turnaround, 300, 0.002, stall);
      const share = driveQd1(w, backend, turnaround, 3000, 0.002, stall);
      if (sleepWins) assert.ok(share > 0.85, `sleeping is faster: slept for ${(share * 100).toFixed(1)}% of requests`);
      else assert.ok(share < 0.1, `spinning is faster: slept for ${(share * 100).toFixed(1)}% of requests`);
    }
  });

  test('equal latencies: it sleeps, which costs no CPU', () => {
    const w = new BackendWait('adaptive');
    drive(w, [0.02, 0.0205], 1, 100);
    assert.ok(drive(w, [0.02, 0.0205], 1, 500) > 0.85);
  });

  test('a disk at QD 32 (450 µs) sleeps at once; at QD 1 it takes a slower backend (RBD, 1.2 ms)', () => {
    const disk = new BackendWait('adaptive');
    drive(disk, 0.45, 32, 50);
    assert.equal(disk.sleepNow(32), true);
    const mid = new BackendWait('adaptive');
    drive(mid, [0.2, 0.24], 1, 3000);
    assert.ok(drive(mid, [0.2, 0.24], 1, 2000) < 0.06, '200 µs at QD 1: a wake-up would add 10-25% to every request');
    assert.equal(mid.sleepNow(8), true, 'the same latency with 8 out keeps the device busy meanwhile');
    const rbd = new BackendWait('adaptive');
    drive(rbd, 1.2, 1, 300);
    assert.equal(rbd.sleepNow(1), true);
    assert.equal(rbd.stats().sleeps, 1);
  });

  test('hysteresis: asleep, it allows for its own wake-ups but does not keep itself asleep with them', () => {
    const w = new BackendWait('adaptive');
    drive(w, 0.16, 8, 50);
    assert.equal(w.sleepNow(8), true);
    // Asleep: the device's 130 µs plus a 40 µs wake-up.
    assert.equal(drive(w, [0.13, 0.17], 8, 200), 1);
    // A 90 µs device plus the wake-up: spinning pays.
    drive(w, [0.09, 0.14], 8, 200);
    assert.ok(drive(w, [0.09, 0.14], 8, 500) < 0.05);
    assert.ok(drive(w, [0.14, 0.18], 8, 500) < 0.05, 'from spinning, 140 µs is below the threshold');
  });

  test('spin mode (--backend-wait spin) and an unmeasured backend never sleep early', () => {
    const spin = new BackendWait('spin');
    drive(spin, 1.2, 1, 300);
    assert.equal(spin.sleepNow(1), false);
    assert.equal(new BackendWait('adaptive').sleepNow(4), false);
  });

  test('sleep mode (--backend-wait sleep) sleeps at once, even before a measurement and on a fast device', () => {
    const sleep = new BackendWait('sleep');
    assert.equal(sleep.sleepNow(1), true);
    drive(sleep, 0.01, 1, 300);
    assert.equal(sleep.sleepNow(1), true);
    assert.equal(sleep.sleepNow(32), true);
  });
  test('the next completion is due at the learned latency over the requests out (none until measured)', () => {
    const w = new BackendWait('adaptive');
    assert.equal(w.nextCompletionMs(32), Number.POSITIVE_INFINITY);
    drive(w, 0.4, 32, 50);
    assert.ok(Math.abs(w.latencyMs - 0.4) < 0.02, `latency ${w.latencyMs}`);
    assert.ok(Math.abs(w.nextCompletionMs(32) - 0.4 / 32) < 0.001);
    assert.ok(Math.abs(w.nextCompletionMs(2) - 0.2) < 0.01);
  });
});
