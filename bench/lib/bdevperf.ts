// SPDK's bdevperf as a second initiator (`--initiator bdevperf`): its virtio-user bdev driver
// (vhost-user-blk) against whatever socket a row's target exposes, pinned to the initiator core.
// One bdevperf process per run: a --json config attaching one virtio-user controller per socket
// (vq_count = queues), a job file with one job per (controller, queue) on the initiator core (each
// job is an SPDK thread with its own I/O channel, so its own virtqueue), started with -z so the
// target's CPU is sampled around the measured window only (perform_tests RPC), -l for the
// latency percentiles.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoadResult, RwMode } from '../../src/initiator/load.js';
import { sampleProc } from '../../src/initiator/procstat.js';
import { ensureHugepages, mask, spdkRpc, waitSpdkInit } from './spdk.js';

export const INITIATORS = ['load', 'bdevperf'] as const;
export type InitiatorKind = (typeof INITIATORS)[number];

/** bdevperf's workload names for the bench's rw modes (undefined: bdevperf has none). */
const WORKLOADS: Partial<Record<RwMode, string>> = { randread: 'randread', randwrite: 'randwrite', randrw: 'randrw', read: 'read', write: 'write' };

export function bdevperfWorkload(rw: RwMode): string | undefined {
  return WORKLOADS[rw];
}

/**
 * Virtqueue size: 128, or enough for QD requests of 3 descriptors each (SPDK's virtio-blk
 * driver uses no indirect tables: header, data, status), a power of two up to 1024.
 */
export function vqSizeFor(qd: number): number {
  let n = 128;
  while (n < qd * 3 && n < 1024) n *= 2;
  return n;
}

export interface BdevperfJob {
  name: string;
  iops: number;
  avgLatencyUs: number;
  minLatencyUs: number;
  maxLatencyUs: number;
  ioFailed: number;
  /** From `-l`: "p50", "p99", ... in µs, when printed. */
  percentilesUs: Record<string, number>;
}

export interface BdevperfRun {
  spdkDir: string;
  sockets: string[];
  queues: number;
  qd: number;
  rw: RwMode;
  /** Whole seconds (bdevperf's -t); at least 1. */
  durationS: number;
  core: number;
  targetPid?: number;
  /** Hugepage memory for bdevperf (-s, MiB); default 1024 (its bdev_io and message pools do not fit in 256). */
  memMiB?: number;
  ioBytes?: number;
}

export interface BdevperfResult {
  iops: number;
  avgLatencyUs: number;
  p50Us: number;
  p99Us: number;
  ioFailed: number;
  seconds: number;
  jobs: BdevperfJob[];
  /** Per controller (socket order): IOPS summed over its jobs. */
  perController: number[];
  vqSize: number;
  initiatorCpuPct: number;
  targetProc?: { pid: number; cpuSec: number; cpuPct: number; iopsPerCpuSec: number };
  cmdline: string;
  logTail: string[];
}

const CUTOFF_NAMES: Record<string, string> = { '50.00000': 'p50', '90.00000': 'p90', '99.00000': 'p99', '99.90000': 'p999' };

/**
 * Parses `-l`'s "Latency summary" blocks, in job order: per "Job: NAME (Core Mask ...)" (NAME is
 * the job's bdev: the jobs of one controller's queues share it), lines " 99.00000% :  12.345us".
 */
export function parsePercentiles(stdout: string): Array<{ name: string; pct: Record<string, number> }> {
  const out: Array<{ name: string; pct: Record<string, number> }> = [];
  let job: Record<string, number> | undefined;
  let inSummary = false;
  for (const raw of stdout.split(/\r|\n/)) {
    const l = raw.trim();
    // The results table has "Job: NAME (Core Mask ...)" lines too: only the summary's count.
    if (l === 'Latency summary') {
      inSummary = true;
      out.length = 0;
      continue;
    }
    const j = inSummary ? /^Job: (\S+) \(Core Mask/.exec(l) : null;
    if (j) {
      job = {};
      out.push({ name: j[1], pct: job });
      continue;
    }
    const m = /^([\d.]+)% :\s+([\d.]+)us$/.exec(l);
    if (m && job) {
      const name = CUTOFF_NAMES[m[1]];
      if (name && !(name in job)) job[name] = Number(m[2]);
    }
  }
  return out;
}

/** Runs bdevperf once against `sockets`; rejects with its output's tail when it fails. */
export async function runBdevperf(r: BdevperfRun): Promise<BdevperfResult> {
  const workload = bdevperfWorkload(r.rw);
  if (!workload) throw new Error(`bdevperf has no workload for ${r.rw}`);
  const dir = mkdtempSync(join(tmpdir(), 'vhostd-bench-bdevperf-'));
  const rpcSock = join(dir, 'bdevperf.sock');
  const vqSize = vqSizeFor(r.qd);
  const config = {
    subsystems: [
      {
        subsystem: 'bdev',
        config: [
          ...r.sockets.map((s, i) => ({
            method: 'bdev_virtio_attach_controller',
            params: { name: `VirtioBlk${i}`, trtype: 'user', traddr: s, dev_type: 'blk', vq_count: r.queues, vq_size: vqSize },
          })),
          { method: 'bdev_wait_for_examine' },
        ],
      },
    ],
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const jobs: string[] = ['[global]', `bs=${r.ioBytes ?? 4096}`, `iodepth=${r.qd}`, `rw=${workload}`, `cpumask=${mask(r.core)}`, ...(r.rw === 'randrw' ? ['rwmixread=50'] : []), ''];
  // The virtio-user bdev's name is VirtioBlk<i>; one job per virtqueue.
  for (let i = 0; i < r.sockets.length; i++) for (let q = 0; q < r.queues; q++) jobs.push(`[c${i}q${q}]`, `filename=VirtioBlk${i}`, '');
  writeFileSync(join(dir, 'jobs.conf'), jobs.join('\n'));
  const memMiB = r.memMiB ?? 1024;
  ensureHugepages(memMiB);
  const durationS = Math.max(1, Math.round(r.durationS));
  const args = [
    '-c', String(r.core), join(r.spdkDir, 'build/examples/bdevperf'),
    '-m', mask(r.core), '-s', String(memMiB), '-g', '--no-pci', '-d', '-r', rpcSock,
    '--json', join(dir, 'config.json'), '-j', join(dir, 'jobs.conf'), '-t', String(durationS), '-z', '-l',
  ];
  const cmdline = `taskset ${args.join(' ')}`;
  const proc: ChildProcess = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let exited = false;
  const exitP = new Promise<void>((res) =>
    proc.once('exit', () => {
      exited = true;
      res();
    }),
  );
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => {
    if (stdout.length < 4_000_000) stdout += d;
  });
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stdout.length < 4_000_000) stdout += d;
  });
  const tail = () => stdout.split(/\r|\n/).filter(Boolean).slice(-25);
  try {
    try {
      await waitSpdkInit(rpcSock, 60_000, () => exited);
    } catch (e) {
      throw new Error(`bdevperf did not start (${(e as Error).message}):\n${tail().join('\n')}`);
    }
    const tBefore = r.targetPid ? sampleProc(r.targetPid) : undefined;
    const iBefore = proc.pid ? sampleProc(proc.pid) : undefined;
    const t0 = performance.now();
    let reply: { results: Array<Record<string, unknown>> };
    try {
      reply = await spdkRpc(rpcSock, 'perform_tests', undefined, (durationS + 60) * 1000);
    } catch (e) {
      throw new Error(`bdevperf perform_tests failed (${(e as Error).message}):\n${tail().join('\n')}`);
    }
    const wall = (performance.now() - t0) / 1000;
    const tAfter = r.targetPid ? sampleProc(r.targetPid) : undefined;
    const iAfter = proc.pid ? sampleProc(proc.pid) : undefined;
    // The summary (-l) is printed right after the reply; give it a moment, then stop bdevperf.
    await new Promise((res) => setTimeout(res, 200));
    proc.kill('SIGINT');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exitP;
    clearTimeout(killer);
    const pct = parsePercentiles(stdout);
    // The reply and the summary list the jobs in the same order.
    const jobsOut: BdevperfJob[] = reply.results.map((j, i) => ({
      name: String(j.job),
      iops: Number(j.iops),
      avgLatencyUs: Number(j.avg_latency_us),
      minLatencyUs: Number(j.min_latency_us),
      maxLatencyUs: Number(j.max_latency_us),
      ioFailed: Number(j.io_failed ?? 0),
      percentilesUs: pct[i]?.name === String(j.job) ? pct[i].pct : {},
    }));
    const iops = jobsOut.reduce((n, j) => n + j.iops, 0);
    const avg = iops > 0 ? jobsOut.reduce((n, j) => n + j.avgLatencyUs * j.iops, 0) / iops : 0;
    // Percentiles of the jobs weighted by their IOPS (the jobs of a row are alike).
    const wpct = (k: string) => {
      const w = jobsOut.filter((j) => j.percentilesUs[k] !== undefined);
      const n = w.reduce((s, j) => s + j.iops, 0);
      return n > 0 ? w.reduce((s, j) => s + j.percentilesUs[k] * j.iops, 0) / n : Number.NaN;
    };
    const perController = r.sockets.map((_, i) => jobsOut.filter((j) => j.name === `VirtioBlk${i}`).reduce((n, j) => n + j.iops, 0));
    const seconds = Number(reply.results[0]?.runtime ?? wall);
    let targetProc: BdevperfResult['targetProc'];
    if (tBefore && tAfter) {
      const cpuSec = tAfter.cpuSec - tBefore.cpuSec;
      targetProc = { pid: tBefore.pid, cpuSec, cpuPct: (cpuSec / wall) * 100, iopsPerCpuSec: cpuSec > 0 ? (iops * wall) / cpuSec : 0 };
    }
    return {
      iops,
      avgLatencyUs: avg,
      p50Us: wpct('p50'),
      p99Us: wpct('p99'),
      ioFailed: jobsOut.reduce((n, j) => n + j.ioFailed, 0),
      seconds,
      jobs: jobsOut,
      perController,
      vqSize,
      initiatorCpuPct: iBefore && iAfter ? ((iAfter.cpuSec - iBefore.cpuSec) / wall) * 100 : Number.NaN,
      targetProc,
      cmdline,
      logTail: tail(),
    };
  } finally {
    if (!exited) {
      proc.kill('SIGKILL');
      await exitP;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A bdevperf run in the shape of the load generator's result, so the bench's rows, medians and
 * ratios treat both initiators alike. Fields bdevperf does not measure are 0 (busy%, kicks,
 * stalls); `bdevperf` keeps the original.
 */
export function asLoadResult(b: BdevperfResult, r: BdevperfRun): LoadResult & { bdevperf: BdevperfResult } {
  const ios = Math.round(b.iops * b.seconds);
  return {
    target: { socketPath: r.sockets.join(','), features: '', capacityBytes: 0, blockSize: 0, eventIdx: false },
    config: {
      queues: r.queues,
      iodepth: r.qd,
      ioBytes: r.ioBytes ?? 4096,
      ring: 'split',
      queueSize: b.vqSize,
      indirect: false,
      spinUs: 0,
      rescueMs: 0,
      rw: r.rw,
      rwMixRead: 50,
      verify: false,
      warmupMs: 0,
      durationMs: r.durationS * 1000,
      rangeBlocks: 0,
    } as LoadResult['config'],
    ios,
    iosTotal: ios,
    reads: r.rw.includes('read') ? ios : 0,
    writes: r.rw.includes('write') ? ios : 0,
    errors: b.ioFailed,
    verifyErrors: 0,
    seconds: b.seconds,
    iops: b.iops,
    mibps: (b.iops * (r.ioBytes ?? 4096)) / 1048576,
    latency: { count: ios, minUs: Math.min(...b.jobs.map((j) => j.minLatencyUs)), meanUs: b.avgLatencyUs, p50Us: b.p50Us, p90Us: Number.NaN, p99Us: b.p99Us, p999Us: Number.NaN, maxUs: Math.max(...b.jobs.map((j) => j.maxLatencyUs)) },
    perQueueIos: b.jobs.map((j) => Math.round(j.iops * b.seconds)),
    initiator: { userSec: 0, sysSec: 0, cpuPct: b.initiatorCpuPct, busyPct: 0, hiccupMs: 0, gcCount: 0, gcMs: 0, kicks: 0, sleeps: 0, rescueKicks: 0 },
    targetProc: b.targetProc
      ? { ...b.targetProc, before: undefined as never, after: undefined as never }
      : undefined,
    bdevperf: b,
  };
}
