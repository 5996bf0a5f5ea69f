// The many-controllers section (`--only manyctrl`): N blk controllers on the target's one core,
// each over its own null bdev, and one bdevperf (SPDK's initiator, one virtio-user bdev per
// controller, 1 queue each, QD 8 each, 4 KiB randread) driving all of them from the initiator
// core. Per target and N: total IOPS, the least and most served controller (fairness), the
// target's CPU per I/O. Needs an SPDK build (--spdk-dir) for bdevperf; skipped without one.
// QSD: N vhost-user-blk exports of one null-co node (its null driver keeps no state), one iothread.
import Table from 'cli-table3';
import { join } from 'node:path';
import type { RwMode } from '../../src/initiator/load.js';
import { type BdevperfResult, runBdevperf } from './bdevperf.js';
import { median } from './report.js';
import { SpdkTarget, spdkMissing } from './spdk.js';
import { QsdTarget, type Target, type TargetKind, VhostdTarget } from './targets.js';

export interface ManyCtrlParams {
  spdkDir?: string;
  targets: TargetKind[];
  controllers: number[];
  qd: number;
  rw: RwMode;
  core: number;
  initiatorCore: number;
  sizeBytes: number;
  durationS: number;
  repeat: number;
  dist?: boolean | string;
}

export interface ManyCtrlRow {
  controllers: number;
  target: TargetKind;
  status: 'ok' | 'unavailable' | 'error';
  reason?: string;
  /** Medians over the repeats. */
  iops: number;
  /** Least and most served controller's IOPS (of the median run). */
  minCtrlIops: number;
  maxCtrlIops: number;
  targetCpuPct?: number;
  cpuUsPerIo?: number;
  avgLatencyUs: number;
  p99Us: number;
  samples: BdevperfResult[];
}

export interface ManyCtrlReport {
  params: ManyCtrlParams;
  skipped?: string;
  rows: ManyCtrlRow[];
}

/** The target on its core with `n` blk controllers, each over its own null bdev (QSD: `n` exports of one null-co node). */
export async function startTarget(kind: TargetKind, n: number, p: Pick<ManyCtrlParams, 'spdkDir' | 'core' | 'sizeBytes' | 'dist'>): Promise<{ t: Target; sockets: string[] }> {
  const numBlocks = Math.floor(p.sizeBytes / 512);
  if (kind === 'qsd') {
    if (!QsdTarget.available()) throw new Error('qemu-storage-daemon is not installed');
    const t = await QsdTarget.start({ core: p.core, files: { sizeBytes: p.sizeBytes }, bdevs: ['null'], queues: [1], copies: n });
    const sockets: string[] = [];
    for (let i = 0; i < n; i++) {
      const ep = t.endpoint('null', 1, i);
      if ('unavailable' in ep) throw new Error(ep.unavailable);
      sockets.push(ep.socket);
    }
    return { t, sockets };
  }
  const t = kind === 'spdk' ? await SpdkTarget.launch({ spdkDir: p.spdkDir ?? '', core: p.core, memMiB: 256 }) : await VhostdTarget.start({ core: p.core, files: { sizeBytes: p.sizeBytes }, bdevs: [], dist: p.dist });
  try {
    const sockets: string[] = [];
    const cpumask = `0x${(1 << p.core).toString(16)}`;
    for (let i = 0; i < n; i++) {
      const name = `Null${i}`;
      const ctrlr = `many.${i}`;
      await t.rpc('bdev_null_create', { name, num_blocks: numBlocks, block_size: 512 });
      if (t instanceof SpdkTarget) sockets.push(await t.controller(ctrlr, name));
      else {
        await t.rpc('vhost_create_blk_controller', { ctrlr, dev_name: name, cpumask });
        sockets.push(join(t.dir, ctrlr));
      }
    }
    return { t, sockets };
  } catch (e) {
    await t.stop();
    throw e;
  }
}

export async function runManyCtrl(p: ManyCtrlParams, log: (m: string) => void, live: { targets: Set<Target> }): Promise<ManyCtrlReport> {
  const report: ManyCtrlReport = { params: p, rows: [] };
  const missing = spdkMissing(p.spdkDir);
  if (missing) {
    report.skipped = `needs bdevperf: ${missing}`;
    log(`manyctrl: skipped (${report.skipped})`);
    return report;
  }
  for (const n of p.controllers) {
    for (const kind of p.targets) {
      const row: ManyCtrlRow = { controllers: n, target: kind, status: 'ok', iops: 0, minCtrlIops: 0, maxCtrlIops: 0, avgLatencyUs: 0, p99Us: 0, samples: [] };
      report.rows.push(row);
      let started: { t: Target; sockets: string[] } | undefined;
      try {
        started = await startTarget(kind, n, p);
        live.targets.add(started.t);
      } catch (e) {
        Object.assign(row, { status: 'unavailable', reason: `not available: ${(e as Error).message.split('\n')[0]}` });
        log(`manyctrl: ${kind} x${n}: ${row.reason}`);
        continue;
      }
      try {
        for (let rep = 0; rep < p.repeat; rep++) {
          row.samples.push(
            await runBdevperf({ spdkDir: p.spdkDir ?? '', sockets: started.sockets, queues: 1, qd: p.qd, rw: p.rw, durationS: p.durationS, core: p.initiatorCore, targetPid: started.t.pid }),
          );
        }
        const byIops = [...row.samples].sort((a, b) => a.iops - b.iops);
        const mid = byIops[byIops.length >> 1];
        row.iops = median(row.samples.map((s) => s.iops));
        row.minCtrlIops = Math.min(...mid.perController);
        row.maxCtrlIops = Math.max(...mid.perController);
        row.avgLatencyUs = median(row.samples.map((s) => s.avgLatencyUs));
        row.p99Us = median(row.samples.map((s) => s.p99Us));
        const tp = row.samples.filter((s) => s.targetProc);
        if (tp.length) {
          row.targetCpuPct = median(tp.map((s) => s.targetProc?.cpuPct ?? 0));
          const perIo = tp.map((s) => (s.targetProc && s.targetProc.iopsPerCpuSec > 0 ? 1e6 / s.targetProc.iopsPerCpuSec : Number.NaN)).filter(Number.isFinite);
          row.cpuUsPerIo = perIo.length ? median(perIo) : undefined;
        }
        log(`manyctrl: ${kind} x${n}: ${Math.round(row.iops)} IOPS, controllers ${Math.round(row.minCtrlIops)}-${Math.round(row.maxCtrlIops)}, target CPU ${row.targetCpuPct?.toFixed(0) ?? '?'}%`);
      } catch (e) {
        Object.assign(row, { status: 'error', reason: (e as Error).message });
        log(`manyctrl: ${kind} x${n}: ${(e as Error).message}`);
      } finally {
        await started.t.stop().catch(() => undefined);
        live.targets.delete(started.t);
      }
    }
  }
  return report;
}

const fmtInt = (v: number) => Math.round(v).toLocaleString('en-US');

export const MANYCTRL_HEAD = ['controllers', 'target', 'total IOPS', 'target CPU µs/IO', 'per controller min-max IOPS', 'min/max', 'avg µs', 'p99 µs', 'target CPU%', 'vhostd/QSD', 'vhostd/SPDK', 'notes'];

export function formatManyCtrl(r: ManyCtrlReport): string {
  const p = r.params;
  const title = `Many controllers on one core: N blk controllers (each its own null bdev; QSD: N exports of one null-co node) on core ${p.core}; one bdevperf on core ${p.initiatorCore}, one virtio-user bdev per controller, 1 queue, QD ${p.qd} each, 4 KiB ${p.rw}, ${Math.max(1, Math.round(p.durationS))} s x ${p.repeat}`;
  if (r.skipped) return `${title}\n  skipped: ${r.skipped}`;
  const t = new Table({ head: MANYCTRL_HEAD, style: { head: [], border: [], compact: true } });
  for (const row of r.rows) {
    const ratio = (other: TargetKind) => {
      if (row.target !== 'vhostd' || row.status !== 'ok') return '';
      const o = r.rows.find((x) => x.controllers === row.controllers && x.target === other && x.status === 'ok');
      return o && o.iops > 0 ? `${(row.iops / o.iops).toFixed(2)}x` : '';
    };
    if (row.status !== 'ok') {
      t.push([String(row.controllers), row.target, '—', '—', '—', '—', '—', '—', '—', '', '', `${row.status === 'error' ? 'ERROR: ' : ''}${row.reason ?? ''}`]);
      continue;
    }
    t.push([
      String(row.controllers),
      row.target,
      fmtInt(row.iops),
      row.cpuUsPerIo === undefined ? '?' : row.cpuUsPerIo.toFixed(2),
      `${fmtInt(row.minCtrlIops)}-${fmtInt(row.maxCtrlIops)}`,
      row.maxCtrlIops > 0 ? (row.minCtrlIops / row.maxCtrlIops).toFixed(2) : '?',
      row.avgLatencyUs.toFixed(1),
      Number.isFinite(row.p99Us) ? row.p99Us.toFixed(1) : '?',
      row.targetCpuPct === undefined ? '?' : row.targetCpuPct.toFixed(0),
      ratio('qsd'),
      ratio('spdk'),
      row.samples.some((s) => s.ioFailed > 0) ? 'I/O ERRORS' : '',
    ]);
  }
  return `${title}\n${t.toString()}\nvhostd/X: total IOPS ratio (medians). min/max: the least served controller's IOPS over the most served one's (1.00: fair).`;
}
