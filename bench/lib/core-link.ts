// How fast a cache line travels between the target's core and the initiator's core, measured
// around every run. On a VM the host moves vCPUs between physical cores: measured here, a line's
// round trip between the two vCPUs is ~110 ns in some minutes (same core complex, shared L3)
// and ~550 ns in others, and a QD 32 ping-pong between target and initiator (descriptors,
// headers, status bytes, ring indexes all cross per request) follows it. Each sample records the
// round trip before and after it, so rows can be read per phase and noisy ratios explained.
//
// A worker thread pinned to the target's core answers a main-thread ping through one shared word
// (Atomics, spinning); between probes it sleeps in Atomics.wait and takes no CPU.
import { Worker } from 'node:worker_threads';
import { nativePath } from '../../src/native/index.js';

const ROUNDS = 20_000;
/** Control words: [0] command (0 idle, 1 probe, 2 exit), [16] ping, [32] pong (own cache lines). */
const CMD = 0;
const PING = 16;
const PONG = 32;

const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { native, cpu } = workerData;
const addon = require(native);
addon.setAffinity([cpu]);
const w = new Int32Array(workerData.buffer);
for (;;) {
  Atomics.wait(w, ${CMD}, 0);
  const cmd = Atomics.load(w, ${CMD});
  if (cmd === 2) break;
  for (let i = 1; i <= ${ROUNDS}; i++) {
    while (Atomics.load(w, ${PING}) !== i);
    Atomics.store(w, ${PONG}, i);
  }
  Atomics.store(w, ${CMD}, 0);
}
`;

export class CoreLink {
  private readonly words = new Int32Array(new SharedArrayBuffer(256));
  private readonly worker: Worker;

  constructor(targetCore: number) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { native: nativePath, cpu: targetCore, buffer: this.words.buffer } });
    this.worker.unref();
  }

  /** Mean round trip (ns) of a cache line between this thread's core and the target's; NaN if the worker does not answer. */
  probe(): number {
    const w = this.words;
    // The worker clears the command once it has answered the previous probe's last ping.
    const ready = performance.now();
    while (Atomics.load(w, CMD) !== 0) if (performance.now() - ready > 5000) return Number.NaN;
    Atomics.store(w, PING, 0);
    Atomics.store(w, PONG, 0);
    Atomics.store(w, CMD, 1);
    Atomics.notify(w, CMD);
    // The first answer also shows the worker is up (it may still be starting).
    const start = performance.now();
    Atomics.store(w, PING, 1);
    while (Atomics.load(w, PONG) !== 1) if (performance.now() - start > 5000) return Number.NaN;
    const t0 = performance.now();
    for (let i = 2; i <= ROUNDS; i++) {
      Atomics.store(w, PING, i);
      for (let spins = 1; Atomics.load(w, PONG) !== i; spins++) {
        if ((spins & 0xfffff) === 0 && performance.now() - t0 > 5000) return Number.NaN; // the worker is gone
      }
    }
    return ((performance.now() - t0) * 1e6) / (ROUNDS - 1);
  }

  close(): void {
    Atomics.store(this.words, CMD, 2);
    Atomics.notify(this.words, CMD);
  }
}
