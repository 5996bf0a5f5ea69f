// The bdev layer's cost (issue #14): one vhostd serving null bdevs over blk controllers, 4 KiB, one
// queue, QD 32, measured by the same LoadGenerator as the I/O rows, with each of the layer's
// optional features on and off. Configurations alternate within each repeat (forward, then
// reversed), and the IOPS ratio to `off` is the median of the ratios within each repeat (this VM
// drifts between fast and slow phases; adjacent runs see the same phase).
//
//   off        nothing enabled (the baseline)
//   qos        bdev_set_qos_limit rw_ios_per_sec 100,000,000: never binding, so only the gate's cost
//   histogram  bdev_enable_histogram
//   metrics    the Prometheus endpoint scraped once per second during the run (node's fetch)
//   all        the three together
//
// vhostd runs with --metrics-listen for every configuration (the endpoint adds nothing to the I/O
// path until it is scraped); `off` and `metrics` use the same bdev and controller, `qos`,
// `histogram` and `all` their own bdev each, so no configuration is switched on and off.
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Table from 'cli-table3';
import { LoadGenerator, type LoadResult, type RwMode } from '../../src/initiator/load.js';
import { CoreLink } from './core-link.js';
import { ForeignLoad } from './noise.js';
import { type RowResult, median, summarize } from './report.js';
import { VhostdTarget } from './targets.js';

export const LAYER_CONFIGS = ['off', 'qos', 'histogram', 'metrics', 'all'] as const;
export type LayerConfig = (typeof LAYER_CONFIGS)[number];

/** Far above anything one core reaches: the QoS gate runs, never holds. A multiple of 1000 (SPDK rounds up to one). */
export const LAYER_QOS_IOS_PER_SEC = 100_000_000;
const QD = 32;
const QUEUES = 1;
const SCRAPE_MS = 1000;

export interface LayerParams {
  core: number;
  sizeBytes: number;
  rws: RwMode[];
  durationS: number;
  warmupS: number;
  repeat: number;
  spinUs: number;
  quietWaitS: number;
  dist?: boolean | string;
  log: (m: string) => void;
}

export interface LayerRow {
  workload: RwMode;
  config: LayerConfig;
  status: 'ok' | 'error';
  reason?: string;
  /** Medians over the repeats (report.ts summarize). */
  summary: RowResult;
  /** Per repeat: this configuration's IOPS / `off`'s IOPS in the same repeat. */
  ratios: number[];
  /** Median of `ratios`. */
  iopsRatio?: number;
  /** Per repeat: I/Os QoS held back during the run (bdev_get_iostat qos_held_ops; qos and all only). */
  qosHeld: number[];
  /** Per repeat: scrapes of /metrics during the run, their mean time (ms) and body size (bytes). */
  scrapes: Array<{ count: number; meanMs: number; bytes: number; errors: number }>;
}

export interface LayerReport {
  params: Omit<LayerParams, 'log'>;
  qd: number;
  queues: number;
  qosIosPerSec: number;
  target: string;
  rows: LayerRow[];
  skipped?: string;
}

/** A TCP port nothing listens on right now (the kernel's pick). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** GET /metrics now and every second until stopped. */
function scraper(port: number): { stop: () => Promise<LayerRow['scrapes'][number]> } {
  const times: number[] = [];
  let bytes = 0;
  let errors = 0;
  const pending = new Set<Promise<void>>();
  const once = () => {
    const t0 = performance.now();
    const p = fetch(`http://127.0.0.1:${port}/metrics`)
      .then(async (res) => {
        const body = await res.text();
        if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
        times.push(performance.now() - t0);
        bytes = body.length;
      })
      .catch(() => {
        errors++;
      })
      .finally(() => pending.delete(p));
    pending.add(p);
  };
  once();
  const timer = setInterval(once, SCRAPE_MS);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all(pending);
      return { count: times.length, meanMs: times.length ? times.reduce((a, b) => a + b, 0) / times.length : 0, bytes, errors };
    },
  };
}

export async function runLayer(p: LayerParams, live: { targets: Set<{ stop(): Promise<void> }> }): Promise<LayerReport> {
  const { log, ...params } = p;
  const port = await freePort();
  const t = await VhostdTarget.start({ core: p.core, files: { sizeBytes: p.sizeBytes }, bdevs: [], dist: p.dist, extraArgs: ['--metrics-listen', String(port)] });
  live.targets.add(t);
  const coreLink = new CoreLink(p.core);
  try {
    log(`layer: vhostd pid ${t.pid}, metrics on 127.0.0.1:${port}; ${p.repeat} repeat(s) of ${LAYER_CONFIGS.join(', ')}`);
    const cpumask = `0x${(1 << p.core).toString(16)}`;
    // One bdev and controller per state of the bdev layer; `metrics` scrapes while using off's.
    const bdevOf: Record<LayerConfig, string> = { off: 'LayerOff', qos: 'LayerQos', histogram: 'LayerHist', metrics: 'LayerOff', all: 'LayerAll' };
    for (const c of ['off', 'qos', 'histogram', 'all'] as const) {
      const name = bdevOf[c];
      await t.rpc('bdev_null_create', { name, num_blocks: Math.floor(p.sizeBytes / 512), block_size: 512 });
      if (c === 'qos' || c === 'all') await t.rpc('bdev_set_qos_limit', { name, rw_ios_per_sec: LAYER_QOS_IOS_PER_SEC });
      if (c === 'histogram' || c === 'all') await t.rpc('bdev_enable_histogram', { name, enable: true });
      await t.rpc('vhost_create_blk_controller', { ctrlr: `bench.layer.${name}`, dev_name: name, cpumask });
    }
    const held = async (name: string) =>
      (await t.rpc<{ bdevs: Array<{ qos_held_ops?: number }> }>('bdev_get_iostat', { name })).bdevs[0]?.qos_held_ops ?? 0;

    const noise = new ForeignLoad(() => [t.pid]);
    const rows: LayerRow[] = [];
    for (const rw of p.rws) {
      const byConfig = new Map<LayerConfig, LayerRow>(
        LAYER_CONFIGS.map((config) => [
          config,
          {
            workload: rw,
            config,
            status: 'ok',
            summary: summarize({ id: `layer/${rw}/${config}`, bdev: 'null', rw, qd: QD, queues: QUEUES, target: 'vhostd', bdevLabel: `null bdev ${bdevOf[config]}`, status: 'ok', samples: [], foreignCores: [], coreLinkNs: [] }),
            ratios: [],
            qosHeld: [],
            scrapes: [],
          },
        ]),
      );
      for (let rep = 0; rep < p.repeat; rep++) {
        const seq = rep % 2 === 0 ? LAYER_CONFIGS : [...LAYER_CONFIGS].reverse();
        for (const config of seq) {
          const row = byConfig.get(config) as LayerRow;
          if (row.status !== 'ok') continue;
          const name = bdevOf[config];
          const scrape = config === 'metrics' || config === 'all';
          const qos = config === 'qos' || config === 'all';
          try {
            if (p.quietWaitS > 0) await noise.waitQuiet(0.15, p.quietWaitS * 1000, log);
            const heldBefore = qos ? await held(name) : 0;
            const gen = await LoadGenerator.connect({ socketPath: `${t.dir}/bench.layer.${name}`, queues: QUEUES, iodepth: QD, ioBytes: 4096, spinUs: p.spinUs });
            let r: LoadResult;
            const linkBefore = coreLink.probe();
            noise.begin();
            const s = scrape ? scraper(port) : undefined;
            try {
              r = await gen.run({ rw, durationMs: p.durationS * 1000, warmupMs: p.warmupS * 1000, targetPid: t.pid });
            } finally {
              if (s) row.scrapes.push(await s.stop());
              gen.close();
            }
            row.summary.foreignCores.push(noise.end());
            row.summary.coreLinkNs.push([linkBefore, coreLink.probe()]);
            if (r.errors > 0) throw new Error(`${r.errors} I/O errors: ${r.firstError}`);
            row.summary.samples.push(r);
            if (qos) row.qosHeld.push((await held(name)) - heldBefore);
          } catch (e) {
            Object.assign(row, { status: 'error', reason: e instanceof Error ? e.message : String(e) });
          }
          await sleep(100);
        }
      }
      const off = byConfig.get('off') as LayerRow;
      for (const row of byConfig.values()) {
        row.summary = summarize(row.summary);
        if (row.status === 'ok' && off.status === 'ok' && row.summary.samples.length === off.summary.samples.length) {
          row.ratios = row.summary.samples.map((s, i) => s.iops / off.summary.samples[i].iops);
          row.iopsRatio = median(row.ratios);
        }
        rows.push(row);
        const s = row.summary;
        log(`layer ${rw} ${row.config}: ${row.status === 'ok' ? `${Math.round(s.iops)} IOPS, vhostd CPU ${s.targetCpuPct?.toFixed(0) ?? '?'}%${row.iopsRatio ? `, ${row.iopsRatio.toFixed(3)}x off` : ''}` : `${row.status}: ${row.reason}`}`);
      }
    }
    return { params, qd: QD, queues: QUEUES, qosIosPerSec: LAYER_QOS_IOS_PER_SEC, target: t.description, rows };
  } finally {
    coreLink.close();
    await t.stop();
    live.targets.delete(t);
  }
}

export const LAYER_HEAD = ['workload', 'config', 'IOPS', 'vhostd CPU%', 'IOPS per vhostd CPU-s', 'p99 µs', 'IOPS / off', 'per repeat', 'notes'];

export function formatLayer(r: LayerReport): string {
  const p = r.params;
  if (r.skipped) return `Bdev layer: skipped (${r.skipped})`;
  const head =
    `Bdev layer: vhostd null bdevs, 4 KiB, ${r.queues} queue, QD ${r.qd}; medians over ${p.repeat} alternating run(s) of ${p.durationS} s (after ${p.warmupS} s warm-up).\n` +
    `qos: rw_ios_per_sec ${r.qosIosPerSec.toLocaleString('en-US')} (never binding: "held" counts I/Os it held back); histogram: bdev_enable_histogram;\n` +
    `metrics: GET /metrics once per second during the run ("scrapes": per run, mean time); all: the three together. IOPS / off: median of the per-repeat ratios.`;
  const t = new Table({ head: LAYER_HEAD, style: { head: [], border: [], compact: true } });
  let last = '';
  for (const row of r.rows) {
    if (last && row.workload !== last) t.push(LAYER_HEAD.map(() => ''));
    last = row.workload;
    const s = row.summary;
    if (row.status !== 'ok') {
      t.push([row.workload, row.config, '—', '—', '—', '—', '', '', `ERROR: ${row.reason ?? ''}`]);
      continue;
    }
    const notes: string[] = [];
    if (row.qosHeld.length > 0) notes.push(`held ${row.qosHeld.reduce((a, b) => a + b, 0)}`);
    if (row.scrapes.length > 0) {
      const n = row.scrapes.map((x) => x.count);
      notes.push(`scrapes ${Math.min(...n)}${Math.max(...n) !== Math.min(...n) ? `-${Math.max(...n)}` : ''}/run, ${median(row.scrapes.map((x) => x.meanMs)).toFixed(1)} ms, ${(median(row.scrapes.map((x) => x.bytes)) / 1024).toFixed(0)} KiB`);
      const errors = row.scrapes.reduce((a, x) => a + x.errors, 0);
      if (errors > 0) notes.push(`${errors} SCRAPE ERRORS`);
    }
    if (s.initiatorSaturated) notes.push('INITIATOR-BOUND');
    const foreign = Math.max(0, ...s.foreignCores);
    if (foreign >= 0.1) notes.push(`other load ${foreign.toFixed(1)}`);
    const link = s.coreLinkNs.flat().filter((v) => Number.isFinite(v));
    if (link.length > 0) notes.push(`line ${Math.round(Math.min(...link))}-${Math.round(Math.max(...link))} ns`);
    t.push([
      row.workload,
      row.config,
      Math.round(s.iops).toLocaleString('en-US'),
      s.targetCpuPct === undefined ? '?' : s.targetCpuPct.toFixed(0),
      s.iopsPerTargetCpuSec === undefined ? '?' : Math.round(s.iopsPerTargetCpuSec).toLocaleString('en-US'),
      s.p99Us >= 100 ? s.p99Us.toFixed(0) : s.p99Us.toFixed(1),
      row.iopsRatio === undefined ? '' : row.iopsRatio.toFixed(3),
      row.config === 'off' ? '' : row.ratios.map((x) => x.toFixed(2)).join(' '),
      notes.join('; '),
    ]);
  }
  return `${head}\n${t.toString()}`;
}
