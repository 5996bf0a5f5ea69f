// Bench rows, their summaries over repeats, vhostd/QSD and vhostd/SPDK pairs and the printed table.
import Table from 'cli-table3';
import type { LoadResult, RwMode } from '../../src/initiator/load.js';
import type { BdevKind, TargetKind } from './targets.js';

/** The initiator is the bottleneck when it spends this share of wall time doing work (not polling idle). */
export const SATURATED_BUSY_PCT = 90;

export interface RowSpec {
  id: string;
  bdev: BdevKind;
  rw: RwMode;
  qd: number;
  queues: number;
  /** Who drives the row (default `load`, this process's load generator; `bdevperf`: SPDK's). */
  initiator?: 'load' | 'bdevperf';
}

export interface RowResult extends RowSpec {
  target: TargetKind;
  bdevLabel: string;
  status: 'ok' | 'unavailable' | 'error';
  reason?: string;
  /** Another row's measurement of the very same export (QSD's malloc stand-in is its shm file). */
  sameAs?: string;
  samples: LoadResult[];
  /** Cores' worth of CPU other processes used during each sample. */
  foreignCores: number[];
  /** Per sample: a cache line's round trip (ns) between the target's and the initiator's core, before and after it (lib/core-link.ts). */
  coreLinkNs: Array<[number, number]>;
  /** qcow2-fresh rows, per sample: the share (%) of the run's writes that allocated a cluster (the image file's growth / cluster size / writes). */
  allocatingPct?: number[];
  // Medians over samples:
  iops: number;
  p50Us: number;
  p99Us: number;
  targetCpuPct?: number;
  iopsPerTargetCpuSec?: number;
  /**
   * µs per I/O of CPU that neither the bench nor a target used, median over samples: on block
   * device rows the device's kernel threads (a loop device's workers, block softirqs), which run
   * on the same two cores and are part of what an I/O costs the machine.
   */
  otherCpuUsPerIo?: number;
  initiatorCpuPct: number;
  initiatorBusyPct: number;
  initiatorSaturated: boolean;
  /** Target stalls the initiator had to re-kick (sum over samples). */
  stalls: number;
  /** Time the initiator thread visibly did not run (sum over samples, ms). */
  initiatorHiccupMs: number;
  errors: number;
}

export interface PairResult {
  id: string;
  /** The target vhostd is compared with (qsd, spdk). */
  other: TargetKind;
  /**
   * vhostd / QSD of IOPS per target CPU-second: the median of the ratios of the runs taken side by
   * side (repeat i of both targets, adjacent in time), so a machine that drifts between fast and
   * slow phases during the bench moves both sides of each ratio together.
   */
  iopsPerCoreRatio?: number;
  /** Each repeat's vhostd / QSD IOPS per target CPU-second. */
  iopsPerCoreRatios?: number[];
  /**
   * The median over the repeats in which the core-to-core link stayed in one phase (near or far,
   * FAR_LINK_NS) for both runs of the pair, probed before and after each: a pair that straddles a
   * change of the host's vCPU placement compares one target's fast minutes with the other's slow
   * ones. Undefined when no repeat qualifies.
   */
  samePhaseRatio?: number;
  /** Repeats that qualified for samePhaseRatio. */
  samePhasePairs?: number;
  iopsRatio?: number;
  /** vhostd / QSD of p99 latency (lower is better for vhostd). */
  p99Ratio?: number;
}

const round2 = (v: number) => Math.round(v * 100) / 100;

export function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function summarize(row: Omit<RowResult, 'iops' | 'p50Us' | 'p99Us' | 'otherCpuUsPerIo' | 'initiatorCpuPct' | 'initiatorBusyPct' | 'initiatorSaturated' | 'stalls' | 'initiatorHiccupMs' | 'errors'>): RowResult {
  const s = row.samples;
  const tgt = s.filter((x) => x.targetProc);
  const busy = median(s.map((x) => x.initiator.busyPct));
  const other = s.flatMap((x, i) => (x.iops > 0 && row.foreignCores[i] !== undefined ? [(row.foreignCores[i] * 1e6) / x.iops] : []));
  return {
    ...row,
    iops: median(s.map((x) => x.iops)),
    p50Us: round2(median(s.map((x) => x.latency.p50Us))),
    p99Us: round2(median(s.map((x) => x.latency.p99Us))),
    targetCpuPct: tgt.length ? median(tgt.map((x) => x.targetProc?.cpuPct ?? 0)) : undefined,
    iopsPerTargetCpuSec: tgt.length ? median(tgt.map((x) => x.targetProc?.iopsPerCpuSec ?? 0)) : undefined,
    otherCpuUsPerIo: other.length ? median(other) : undefined,
    initiatorCpuPct: median(s.map((x) => x.initiator.cpuPct)),
    initiatorBusyPct: busy,
    initiatorSaturated: s.length > 0 && busy >= SATURATED_BUSY_PCT,
    stalls: s.reduce((n, x) => n + x.initiator.rescueKicks, 0),
    initiatorHiccupMs: s.reduce((n, x) => n + x.initiator.hiccupMs, 0),
    errors: s.reduce((n, x) => n + x.errors + x.verifyErrors, 0),
  };
}

/** Repeat-by-repeat ratios of IOPS per target CPU-second, when every repeat measured both targets. */
function pairedRatios(vhostd: RowResult['samples'], qsd: RowResult['samples']): number[] | undefined {
  if (vhostd.length === 0 || vhostd.length !== qsd.length) return undefined;
  const out: number[] = [];
  for (let i = 0; i < vhostd.length; i++) {
    const a = vhostd[i].targetProc?.iopsPerCpuSec ?? 0;
    const b = qsd[i].targetProc?.iopsPerCpuSec ?? 0;
    if (a <= 0 || b <= 0) return undefined;
    out.push(a / b);
  }
  return out;
}

/** A round trip at or above this is the far phase (vCPUs on different core complexes; ~550 ns here, ~110 ns near). */
export const FAR_LINK_NS = 300;

/** The repeats (indexes) whose four link probes (both runs, before and after) are all near or all far. */
function samePhaseRepeats(vhostd: RowResult, qsd: RowResult): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(vhostd.coreLinkNs.length, qsd.coreLinkNs.length); i++) {
    const probes = [...vhostd.coreLinkNs[i], ...qsd.coreLinkNs[i]];
    if (!probes.every((ns) => Number.isFinite(ns))) continue;
    const far = probes.map((ns) => ns >= FAR_LINK_NS);
    if (far.every((f) => f === far[0])) out.push(i);
  }
  return out;
}

/** The targets vhostd is compared with, in column order. */
export const OTHER_TARGETS: readonly TargetKind[] = ['qsd', 'spdk'];
const SHORT: Record<TargetKind, string> = { vhostd: 'vhostd', qsd: 'QSD', spdk: 'SPDK' };

/** vhostd against each other target, row by row (same id: same bdev, rw, QD, queues and initiator). */
export function pairs(rows: RowResult[]): PairResult[] {
  const out: PairResult[] = [];
  for (const v of rows) {
    if (v.target !== 'vhostd' || v.status !== 'ok') continue;
    for (const other of OTHER_TARGETS) {
      const q = rows.find((r) => r.target === other && r.id === v.id && r.status === 'ok');
      if (!q) continue;
      const perRepeat = pairedRatios(v.samples, q.samples);
      const same = perRepeat && v.coreLinkNs.length === perRepeat.length ? samePhaseRepeats(v, q) : [];
      out.push({
        id: v.id,
        other,
        iopsPerCoreRatio: perRepeat
          ? median(perRepeat)
          : v.iopsPerTargetCpuSec && q.iopsPerTargetCpuSec
            ? v.iopsPerTargetCpuSec / q.iopsPerTargetCpuSec
            : undefined,
        iopsPerCoreRatios: perRepeat,
        samePhaseRatio: perRepeat && same.length > 0 ? median(same.map((i) => perRepeat[i])) : undefined,
        samePhasePairs: same.length,
        iopsRatio: q.iops > 0 ? v.iops / q.iops : undefined,
        p99Ratio: q.p99Us > 0 && v.p99Us > 0 ? v.p99Us / q.p99Us : undefined,
      });
    }
  }
  return out;
}

const fmtInt = (v: number) => Math.round(v).toLocaleString('en-US');
const fmtUs = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const fmtRatio = (v: number | undefined) => (v === undefined ? '' : `${v >= 10 ? v.toFixed(0) : v.toFixed(2)}x`);

/** µs of target CPU time per I/O: the inverse of IOPS per target CPU-second. */
export function cpuUsPerIo(r: Pick<RowResult, 'iopsPerTargetCpuSec'>): number | undefined {
  return r.iopsPerTargetCpuSec && r.iopsPerTargetCpuSec > 0 ? 1e6 / r.iopsPerTargetCpuSec : undefined;
}

/**
 * The table's columns: an `initiator` column when a row is driven by bdevperf, and the three
 * ratio columns (IOPS per core, same phase, p99) for each other target present.
 */
export function tableHead(rows: Pick<RowResult, 'target' | 'initiator'>[]): string[] {
  const others = OTHER_TARGETS.filter((k) => rows.some((r) => r.target === k));
  if (others.length === 0) others.push('qsd');
  const withInitiator = rows.some((r) => (r.initiator ?? 'load') !== 'load');
  return [
    'target',
    'bdev',
    'rw',
    'QD',
    'queues',
    ...(withInitiator ? ['initiator'] : []),
    'IOPS',
    'target CPU µs/IO',
    'other CPU µs/IO',
    'p50 µs',
    'p99 µs',
    'target CPU%',
    'initiator CPU% (busy%)',
    'IOPS per target CPU-s',
    ...others.flatMap((k) => [`vhostd/${SHORT[k]} IOPS per core`, others.length === 1 ? 'same phase (pairs)' : `vs ${SHORT[k]} same phase (pairs)`, `vhostd/${SHORT[k]} p99`]),
    'notes',
  ];
}

/** The default head (vhostd and QSD, the load generator). */
export const TABLE_HEAD = tableHead([]);

export function renderTable(rows: RowResult[], pairList: PairResult[]): string {
  const head = tableHead(rows);
  const others = OTHER_TARGETS.filter((k) => rows.some((r) => r.target === k));
  if (others.length === 0) others.push('qsd');
  const withInitiator = head.includes('initiator');
  const t = new Table({ head, style: { head: [], border: [], compact: true } });
  const pairByKey = new Map(pairList.map((p) => [`${p.other}|${p.id}`, p]));
  let lastGroup = '';
  for (const r of rows) {
    const group = `${r.bdev}/${r.rw}/${r.initiator ?? 'load'}`;
    if (lastGroup && group !== lastGroup) t.push(head.map(() => ''));
    lastGroup = group;
    const base = [r.target, r.bdev, r.rw, String(r.qd), String(r.queues), ...(withInitiator ? [r.initiator ?? 'load'] : [])];
    if (r.status !== 'ok') {
      t.push([...base, '—', '—', '—', '—', '—', '—', '—', '—', ...others.flatMap(() => ['', '', '']), `${r.status === 'error' ? 'ERROR: ' : ''}${r.reason ?? 'n/a'}`]);
      continue;
    }
    const bdevperf = r.initiator === 'bdevperf';
    const notes: string[] = [];
    if (r.initiatorSaturated) notes.push('INITIATOR-BOUND');
    if (r.stalls > 0) notes.push(`stalls ${r.stalls}`);
    if (r.initiatorHiccupMs > 50) notes.push(`ini off-CPU ${r.initiatorHiccupMs.toFixed(0)} ms`);
    if (r.errors > 0) notes.push(`${r.errors} I/O ERRORS`);
    const foreign = Math.max(0, ...r.foreignCores);
    if (foreign >= 0.1) notes.push(`other load ${foreign.toFixed(1)}`);
    if (r.sameAs) notes.push(`= ${r.sameAs}`);
    if (r.allocatingPct?.length) notes.push(`allocating ${median(r.allocatingPct).toFixed(0)}% of writes`);
    const link = r.coreLinkNs.flat().filter((v) => Number.isFinite(v));
    if (link.length > 0) {
      const lo = Math.round(Math.min(...link));
      const hi = Math.round(Math.max(...link));
      notes.push(`line ${lo === hi ? lo : `${lo}-${hi}`} ns`);
    }
    const cpuUs = cpuUsPerIo(r);
    t.push([
      ...base,
      fmtInt(r.iops),
      cpuUs === undefined ? '?' : cpuUs.toFixed(2),
      r.otherCpuUsPerIo === undefined ? '?' : r.otherCpuUsPerIo.toFixed(2),
      Number.isFinite(r.p50Us) ? fmtUs(r.p50Us) : '?',
      Number.isFinite(r.p99Us) ? fmtUs(r.p99Us) : '?',
      r.targetCpuPct === undefined ? '?' : r.targetCpuPct.toFixed(0),
      // bdevperf busy-polls its core: CPU% only, no busy share.
      bdevperf ? `${Number.isFinite(r.initiatorCpuPct) ? r.initiatorCpuPct.toFixed(0) : '?'} (—)` : `${r.initiatorCpuPct.toFixed(0)} (${r.initiatorBusyPct.toFixed(0)})${r.initiatorSaturated ? ' !' : ''}`,
      r.iopsPerTargetCpuSec === undefined ? '?' : fmtInt(r.iopsPerTargetCpuSec),
      ...others.flatMap((k) => {
        const p = r.target === 'vhostd' ? pairByKey.get(`${k}|${r.id}`) : undefined;
        return [
          fmtRatio(p?.iopsPerCoreRatio),
          p?.samePhasePairs ? `${fmtRatio(p.samePhaseRatio)} (${p.samePhasePairs}/${p.iopsPerCoreRatios?.length ?? 0})` : '',
          fmtRatio(p?.p99Ratio),
        ];
      }),
      notes.join('; '),
    ]);
  }
  return t.toString();
}
