// Allocation evidence for vhostd's data path, per million requests: what can be seen from outside
// (RSS and minor page faults from /proc, GCs per isolate from `node --trace-gc`) and, when the
// daemon has it, the `vhostd_get_heap_stats` RPC (GC count and V8 heap used per reactor).
// QSD's RSS over the same requests is printed as a reference.
import { LoadGenerator } from '../../src/initiator/load.js';
import { type ProcSample, sampleProc } from '../../src/initiator/procstat.js';
import type { QsdTarget, VhostdTarget } from './targets.js';

/** The RPC the bench calls when vhostd offers it: GC count and heap use of each reactor. */
export const HEAP_STATS_METHOD = 'vhostd_get_heap_stats';

/**
 * Reply shape the bench understands: an array (or `{ reactors: [...] }`) of per-reactor entries
 * with `lcore`, `gc_count` and `heap_used` (bytes); `completed_ios` when present normalises.
 */
export interface HeapStatsEntry {
  lcore?: number;
  gc_count?: number;
  heap_used?: number;
  completed_ios?: number;
  [k: string]: unknown;
}

export interface AllocSide {
  requests: number;
  /** Every request the load generator completed in the check, warm-up included. */
  requestsTotal: number;
  iops: number;
  before: ProcSample;
  after: ProcSample;
  rssDeltaBytesPerMillion: number;
  minorFaultsPerMillion: number;
}

export interface AllocReport {
  vhostd: AllocSide & {
    heapStats?: { before: HeapStatsEntry[]; after: HeapStatsEntry[] };
    heapStatsUnavailable?: string;
    /** GCs per V8 isolate (address) during the measured requests, from --trace-gc. */
    traceGc: Array<{ isolate: string; scavenges: number; markCompacts: number; pauseMs: number }>;
  };
  qsd?: AllocSide;
}

function entries(reply: unknown): HeapStatsEntry[] {
  if (Array.isArray(reply)) return reply as HeapStatsEntry[];
  if (reply && typeof reply === 'object' && Array.isArray((reply as { reactors?: unknown }).reactors)) return (reply as { reactors: HeapStatsEntry[] }).reactors;
  return [];
}

async function measure(socket: string, pid: number, requests: number, spinUs: number, between?: () => Promise<void>): Promise<AllocSide & { mid?: void }> {
  const gen = await LoadGenerator.connect({ socketPath: socket, queues: 1, iodepth: 32, spinUs });
  try {
    // Warm-up: JIT, pools, first-touch of buffers.
    const warm = await gen.run({ rw: 'randread', requests: Math.max(1000, Math.min(200_000, Math.floor(requests / 5))) });
    await between?.();
    const before = sampleProc(pid);
    const r = await gen.run({ rw: 'randread', requests });
    const after = sampleProc(pid);
    if (!before || !after) throw new Error(`process ${pid} is gone`);
    const perM = 1e6 / r.ios;
    return {
      requests: r.ios,
      requestsTotal: warm.iosTotal + r.iosTotal,
      iops: r.iops,
      before,
      after,
      rssDeltaBytesPerMillion: (after.rssBytes - before.rssBytes) * perM,
      minorFaultsPerMillion: (after.minorFaults - before.minorFaults) * perM,
    };
  } finally {
    gen.close();
  }
}

export async function measureAllocation(vhostd: VhostdTarget, qsd: QsdTarget | undefined, requests: number, spinUs: number): Promise<AllocReport> {
  const ep = vhostd.endpoint('null', 1);
  if ('unavailable' in ep) throw new Error(`vhostd null bdev ${ep.unavailable}`);
  const hasHeapStats = vhostd.methods.has(HEAP_STATS_METHOD);
  let heapBefore: HeapStatsEntry[] = [];
  let gcBefore = vhostd.gc.snapshot();
  const side = await measure(ep.socket, vhostd.pid, requests, spinUs, async () => {
    gcBefore = vhostd.gc.snapshot();
    if (hasHeapStats) heapBefore = entries(await vhostd.rpc(HEAP_STATS_METHOD));
  });
  const heapAfter = hasHeapStats ? entries(await vhostd.rpc(HEAP_STATS_METHOD)) : [];
  const gcAfter = vhostd.gc.snapshot();
  const traceGc = [...gcAfter]
    .map(([isolate, a]) => {
      const b = gcBefore.get(isolate) ?? { scavenges: 0, markCompacts: 0, pauseMs: 0 };
      return { isolate, scavenges: a.scavenges - b.scavenges, markCompacts: a.markCompacts - b.markCompacts, pauseMs: a.pauseMs - b.pauseMs };
    })
    .filter((x) => x.scavenges + x.markCompacts > 0);
  const report: AllocReport = {
    vhostd: {
      ...side,
      traceGc,
      ...(hasHeapStats
        ? { heapStats: { before: heapBefore, after: heapAfter } }
        : { heapStatsUnavailable: `vhostd does not implement ${HEAP_STATS_METHOD} (expected reply: [{ lcore, gc_count, heap_used, completed_ios }] per reactor)` }),
    },
  };
  const qep = qsd?.endpoint('null', 1);
  if (qsd && qep && 'socket' in qep) report.qsd = await measure(qep.socket, qsd.pid, requests, spinUs);
  return report;
}

const mib = (b: number) => `${(b / (1 << 20)).toFixed(1)} MiB`;
const kib = (b: number) => `${b >= 0 ? '+' : ''}${(b / 1024).toFixed(0)} KiB`;

export function formatAlloc(a: AllocReport): string {
  const v = a.vhostd;
  const lines = [
    `Allocation check: vhostd null bdev, randread QD 32, 1 queue, ${v.requests.toLocaleString('en-US')} requests at ${Math.round(v.iops).toLocaleString('en-US')} IOPS (after a warm-up)`,
    `  vhostd RSS ${mib(v.before.rssBytes)} -> ${mib(v.after.rssBytes)}: ${kib(v.rssDeltaBytesPerMillion)} and ${Math.round(v.minorFaultsPerMillion)} minor faults per million requests`,
  ];
  if (v.heapStats) {
    for (const after of v.heapStats.after) {
      const before = v.heapStats.before.find((b) => b.lcore === after.lcore) ?? {};
      const dn = (after.completed_ios ?? 0) - (before.completed_ios ?? 0);
      const norm = dn > 0 ? 1e6 / dn : 1e6 / v.requests;
      const gcs = (after.gc_count ?? 0) - (before.gc_count ?? 0);
      const heap = (after.heap_used ?? 0) - (before.heap_used ?? 0);
      lines.push(
        `  ${HEAP_STATS_METHOD} reactor lcore ${after.lcore ?? '?'}: ${(gcs * norm).toFixed(1)} GCs and heap used ${kib(heap * norm)} per million requests` +
          ` (${gcs} GCs over ${dn > 0 ? dn.toLocaleString('en-US') : v.requests.toLocaleString('en-US')} requests; heap now ${mib(after.heap_used ?? 0)})`,
      );
    }
  } else if (v.heapStatsUnavailable) {
    lines.push(`  ${v.heapStatsUnavailable}`);
  }
  if (v.traceGc.length === 0) lines.push('  node --trace-gc: no garbage collection in any vhostd thread during the measured requests');
  for (const g of v.traceGc) {
    lines.push(
      `  node --trace-gc isolate ${g.isolate}: ${((g.scavenges * 1e6) / v.requests).toFixed(1)} scavenges + ${((g.markCompacts * 1e6) / v.requests).toFixed(1)} mark-compacts per million requests (${g.pauseMs.toFixed(1)} ms paused)`,
    );
  }
  if (a.qsd) {
    lines.push(
      `  reference: qemu-storage-daemon RSS ${mib(a.qsd.before.rssBytes)} -> ${mib(a.qsd.after.rssBytes)}: ${kib(a.qsd.rssDeltaBytesPerMillion)} per million requests (${a.qsd.requests.toLocaleString('en-US')} requests at ${Math.round(a.qsd.iops).toLocaleString('en-US')} IOPS)`,
    );
  }
  return lines.join('\n');
}
