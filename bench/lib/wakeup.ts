// Wake-up latency: how long the first request takes after the target has been idle (its poll loop
// asleep, kicks re-enabled), against the same request while the queue is warm. Each target serves
// its null export on one queue; the initiator is a plain event-driven driver (BlkInitiator: one
// request, a kick, a call eventfd wake-up), like a guest doing one read after a pause.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { median } from './report.js';

export interface WakeupResult {
  target: string;
  /** Idle time before each measured request (ms). */
  idleMs: number;
  /** Latency of the first request after each idle period (µs). */
  afterIdleUs: number[];
  /** Latency of back-to-back requests on the warm queue (µs). */
  warmUs: number[];
}

const WARMUP_REQUESTS = 200;
const WARM_SAMPLES = 50;

export async function measureWakeup(target: string, socket: string, idleMs: number, tries: number): Promise<WakeupResult> {
  const ini = await BlkInitiator.connect(socket, { queues: 1 });
  try {
    const time = async (): Promise<number> => {
      const t0 = performance.now();
      const r = await ini.read(0, 4096);
      const us = (performance.now() - t0) * 1000;
      if (r.status !== 0) throw new Error(`${target}: read failed with status ${r.status}`);
      return us;
    };
    for (let i = 0; i < WARMUP_REQUESTS; i++) await time();
    const warmUs: number[] = [];
    for (let i = 0; i < WARM_SAMPLES; i++) warmUs.push(await time());
    const afterIdleUs: number[] = [];
    for (let i = 0; i < tries; i++) {
      await sleep(idleMs);
      afterIdleUs.push(await time());
    }
    return { target, idleMs, afterIdleUs, warmUs };
  } finally {
    ini.close();
  }
}

export function formatWakeup(results: WakeupResult[]): string {
  const lines = [`Wake-up: one 4 KiB read on the null export after ${results[0]?.idleMs ?? 0} ms idle (${results[0]?.afterIdleUs.length ?? 0} tries), against back-to-back reads on the warm queue (event-driven initiator):`];
  for (const r of results) {
    const fmt = (v: number) => `${v.toFixed(0)} µs`;
    lines.push(
      `  ${r.target.padEnd(6)} after idle: median ${fmt(median(r.afterIdleUs))}, max ${fmt(Math.max(...r.afterIdleUs))}; warm: median ${fmt(median(r.warmUs))}, max ${fmt(Math.max(...r.warmUs))}`,
    );
  }
  return lines.join('\n');
}
