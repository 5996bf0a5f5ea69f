// The reactor's backend-wait policy (src/reactor/backend-wait.ts): the latency it learns from
// poll passes (Little's law) and when it sleeps on the completions' eventfd instead of spinning.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BackendWait } from '../../src/reactor/backend-wait.js';

/**
 * Feeds passes of `passMs` for `ms` of a backend with latency `latencyMs` kept at `qd` requests:
 * completions arrive at qd / latency per ms (Little's law), spread over the passes.
 */
function drive(w: BackendWait, latencyMs: number, qd: number, ms: number, passMs = 0.002): void {
  const rate = qd / latencyMs;
  let due = 0;
  for (let t = 0; t < ms; t += passMs) {
    due += rate * passMs;
    const done = Math.floor(due);
    due -= done;
    w.sample(qd, passMs, done);
  }
}

describe('backend wait policy', () => {
  test('learns the backend latency from requests out and completions (Little)', () => {
    for (const [latency, qd] of [
      [0.015, 1],
      [0.16, 32],
      [1.2, 1],
    ] as const) {
      const w = new BackendWait(true);
      drive(w, latency, qd, 200);
      assert.ok(Math.abs(w.latencyMs - latency) / latency < 0.1, `latency ${latency} ms at QD ${qd}: estimated ${w.latencyMs}`);
    }
  });

  test('a fast device spins at any depth (15 µs, 40 µs)', () => {
    for (const latency of [0.015, 0.04]) {
      const w = new BackendWait(true);
      drive(w, latency, 4, 50);
      assert.equal(w.sleepNow(1), false);
      assert.equal(w.sleepNow(4), false);
    }
  });

  test('a disk at QD 32 (450 µs) sleeps at once; at QD 1 it takes a slower backend (RBD, 1.2 ms)', () => {
    const disk = new BackendWait(true);
    drive(disk, 0.45, 32, 50);
    assert.equal(disk.sleepNow(32), true);
    const mid = new BackendWait(true);
    drive(mid, 0.2, 1, 50);
    assert.equal(mid.sleepNow(1), false, '200 µs at QD 1: a wake-up would add 10-25% to every request');
    assert.equal(mid.sleepNow(8), true, 'the same latency with 8 out keeps the device busy meanwhile');
    const rbd = new BackendWait(true);
    drive(rbd, 1.2, 1, 300);
    assert.equal(rbd.sleepNow(1), true);
    assert.equal(rbd.stats().sleeps, 1);
  });

  test('hysteresis: asleep, it allows for its own wake-ups but does not keep itself asleep with them', () => {
    const w = new BackendWait(true);
    drive(w, 0.16, 8, 50);
    assert.equal(w.sleepNow(8), true);
    drive(w, 0.17, 8, 200); // asleep: the device's 130 µs plus a 40 µs wake-up
    assert.equal(w.sleepNow(8), true);
    drive(w, 0.14, 8, 200); // a 90 µs device plus the wake-up: spinning pays
    assert.equal(w.sleepNow(8), false);
    drive(w, 0.14, 8, 200);
    assert.equal(w.sleepNow(8), false, 'from spinning, 140 µs is below the threshold');
  });

  test('spin mode (--backend-wait spin) and an unmeasured backend never sleep early', () => {
    const spin = new BackendWait(false);
    drive(spin, 1.2, 1, 300);
    assert.equal(spin.sleepNow(1), false);
    assert.equal(new BackendWait(true).sleepNow(4), false);
  });
});
