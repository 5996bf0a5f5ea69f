// Reactor RPCs with SPDK's shapes (framework_get_reactors, thread_get_stats; ticks are µs, so
// tick_rate is 1e6) plus vhostd_get_heap_stats, the data-path allocation evidence the bench reads,
// and vhostd_get_memory_stats: the whole process (RSS, control thread's heap, each reactor's).
import { getHeapStatistics } from 'node:v8';
import type { ReactorInfoProvider, RpcContext } from '../../services/types.js';
import { VhostdError, invalidParams } from '../../util/errors.js';
import { decodeParams, optional } from '../decode.js';
import type { RpcMethodDef } from './types.js';

const TICK_RATE = 1_000_000;

function provider(ctx: RpcContext): ReactorInfoProvider {
  if (!ctx.reactors) throw VhostdError.errno('ENODEV', 'no reactors');
  return ctx.reactors;
}

function noParams(method: string, params: unknown): void {
  if (params !== undefined && !(typeof params === 'object' && params !== null && Object.keys(params).length === 0)) {
    throw invalidParams(`${method} requires no parameters`);
  }
}

export function reactorMethods(ctx: RpcContext): RpcMethodDef[] {
  return [
    {
      name: 'framework_get_reactors',
      async handler(params) {
        noParams('framework_get_reactors', params);
        const stats = await provider(ctx).stats();
        return {
          tick_rate: TICK_RATE,
          pid: process.pid,
          reactors: stats.map((r) => ({
            lcore: r.core,
            tid: r.tid,
            busy: r.busyUs,
            idle: r.idleUs,
            in_interrupt: r.inInterrupt,
            irq_count: r.wakeups,
            // vhostd extension: how the reactor waits for backend I/O (--backend-wait).
            backend_wait: {
              mode: r.backendWait.mode,
              latency_us: r.backendWait.latencyUs,
              sleeps: r.backendWait.sleeps,
              spin_latency_us: r.backendWait.spinLatencyUs,
              sleep_latency_us: r.backendWait.sleepLatencyUs,
              kickless_sleeps: r.backendWait.kicklessSleeps,
            },
            lw_threads: [{ name: `reactor_${r.core}`, id: r.index + 1, cpumask: (1n << BigInt(r.core)).toString(16), elapsed: r.busyUs + r.idleUs }],
            // vhostd extension: the virtqueues this reactor serves.
            queues: r.queues.map((q) => ({ device: q.device, queue: q.qid, in_flight: q.inFlight, completed: q.completed })),
          })),
        };
      },
    },
    {
      name: 'thread_get_stats',
      async handler(params) {
        noParams('thread_get_stats', params);
        const stats = await provider(ctx).stats();
        return {
          tick_rate: TICK_RATE,
          threads: stats.map((r) => ({
            name: `reactor_${r.core}`,
            id: r.index + 1,
            cpumask: (1n << BigInt(r.core)).toString(16),
            busy: r.busyUs,
            idle: r.idleUs,
            active_pollers_count: r.inInterrupt ? 0 : r.queues.length,
            timed_pollers_count: 0,
            paused_pollers_count: r.inInterrupt ? r.queues.length : 0,
            completed_ios: r.queues.reduce((n, q) => n + q.completed, 0),
          })),
        };
      },
    },
    {
      name: 'vhostd_get_heap_stats',
      async handler(params) {
        noParams('vhostd_get_heap_stats', params);
        const stats = await provider(ctx).stats();
        return stats.map((r) => ({
          lcore: r.core,
          gc_count: r.gcCount,
          heap_used: r.heapUsed,
          completed_ios: r.queues.reduce((n, q) => n + q.completed, 0),
        }));
      },
    },
    {
      // Memory of the whole daemon, for leak hunting: `gc: true` collects garbage on the control
      // thread and every reactor first (only when node runs with --expose-gc; `gc_forced` says).
      name: 'vhostd_get_memory_stats',
      async handler(params) {
        const p = decodeParams(params, { gc: optional('bool') }, { message: 'Invalid parameters', paramsOptional: true });
        const gc = (globalThis as { gc?: () => void }).gc;
        const force = p.gc === true && gc !== undefined;
        const reactors = await provider(ctx).stats({ gc: force });
        if (force) gc();
        const heap = getHeapStatistics();
        return {
          rss: process.memoryUsage.rss(),
          gc_forced: force,
          heap_used: heap.used_heap_size,
          heap_total: heap.total_heap_size,
          external: heap.external_memory,
          reactors: reactors.map((r) => ({ lcore: r.core, heap_used: r.heapUsed, gc_count: r.gcCount })),
        };
      },
    },
  ];
}
