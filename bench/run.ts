// npm run bench: vhostd against qemu-storage-daemon (QSD) on the same machine, same run, same
// initiator (src/initiator/load.ts). Each target is pinned to one core (default 0), the
// initiator to another (default 1). Rows: bdev (null, malloc, shm file, disk file, block device,
// qcow2 fully allocated and empty: bench/lib/qcow2.ts) x rw
// (4 KiB randread, randwrite) x queue depth (1, 32, 128) x queues (1, 2). Then the allocation
// check, the wake-up latency, the bdev layer's cost (bench/lib/layer.ts: vhostd null QD 32 with
// QoS, histograms, metrics on and off) and the migration row (bench/lib/migration.ts: a TCG guest
// whose disk each target serves, live-migrated idle and busy; QEMU's total time and downtime).
//
//   npm run bench                       full matrix, 3 s per row
//   npm run bench -- --quick            QD 1 and 32, one queue, 1 s per row
//   npm run bench -- --bdev null --qd 32 --duration 2
//   npm run bench -- --rows 'null/randread/*' --profile
//   npm run bench -- --only migration   the migration row alone (--no-migration: without it)
//   npm run bench -- --only layer       the bdev layer's cost alone (--no-layer: without it)
//   npm run bench -- --help
//
// Output: a table on stdout, bench/results/<timestamp>.json and .svg (IOPS vs queue depth).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, InvalidArgumentError } from 'commander';
import { LoadGenerator, type LoadResult, RW_MODES, type RwMode } from '../src/initiator/load.js';
import { pinProcess } from '../src/initiator/pin.js';
import { type AllocReport, formatAlloc, measureAllocation } from './lib/alloc.js';
import { type WakeupResult, formatWakeup, measureWakeup } from './lib/wakeup.js';
import { type LayerReport, formatLayer, runLayer } from './lib/layer.js';
import { MIGRATION_CASES, type MigrationCase, type MigrationReport, defaultMigrationParams, formatMigration, runMigrations } from './lib/migration.js';
import { CoreLink } from './lib/core-link.js';
import { formatProfile, summarizeProfile } from './lib/cpuprofile.js';
import { ForeignLoad } from './lib/noise.js';
import { createShmImage, ensureDiskImage, removeImage } from './lib/files.js';
import { QCOW2_CLUSTER, createFullImage, qcow2Missing } from './lib/qcow2.js';
import { type BlockDevice, setupBlockDevice } from './lib/blockdev.js';
import { SpdkTarget, ensureHugepages, spdkMissing } from './lib/spdk.js';
import { INITIATORS, type InitiatorKind, asLoadResult, bdevperfWorkload, runBdevperf } from './lib/bdevperf.js';
import { type ManyCtrlReport, formatManyCtrl, runManyCtrl } from './lib/manyctrl.js';
import { type RssReport, formatRss, runRss } from './lib/rss.js';
import { type HotPathReport, formatHotPath, runHotPath } from './lib/hotpath.js';
import type { GuestSession } from '../test/e2e/lib/guest.js';
import { FAR_LINK_NS, type RowResult, type RowSpec, SATURATED_BUSY_PCT, pairs, renderTable, summarize } from './lib/report.js';
import { renderChart } from './lib/svg.js';
import { BDEV_KINDS, type BdevKind, type BenchFiles, QsdTarget, ROOT, TARGET_KINDS, type Target, type TargetKind, VhostdTarget } from './lib/targets.js';

const env = process.env;

function list<T extends string>(allowed: readonly T[], what: string) {
  return (v: string): T[] => {
    const items = v.split(',').map((s) => s.trim()).filter(Boolean) as T[];
    for (const i of items) if (!allowed.includes(i)) throw new InvalidArgumentError(`unknown ${what} ${i} (one of ${allowed.join(', ')})`);
    return items;
  };
}

function intList(v: string): number[] {
  const items = v.split(',').map((s) => Number(s.trim()));
  for (const n of items) if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${v} is not a list of positive integers`);
  return items;
}

function seconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${v} is not a number of seconds`);
  return n;
}

function size(v: string): number {
  const m = /^(\d+)([kmg]?)$/i.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`invalid size ${v}`);
  return Number(m[1]) * { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
}

/** `null/randread/qd32/q1` against patterns with `*` wildcards (or plain substrings). */
export function rowMatches(id: string, patterns: string[]): boolean {
  if (patterns.length === 0) return true;
  return patterns.some((p) => {
    if (!p.includes('*')) return id.includes(p);
    const re = new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
    return re.test(id);
  });
}

interface BenchOptions {
  duration: number;
  warmup: number;
  quick?: boolean;
  bdev: BdevKind[];
  rw: RwMode[];
  qd: number[];
  queues: number[];
  targets: TargetKind[];
  rows: string[];
  repeat: number;
  size: number;
  diskDir: string;
  qcow2Dir: string;
  outDir: string;
  targetCore: number;
  initiatorCore: number;
  spinUs: number;
  allocRequests: number;
  wakeupTries: number;
  profile?: boolean;
  dist?: boolean | string;
  histogram?: boolean;
  quietWait: number;
  only: Section[];
  migration: boolean;
  migrationCases: MigrationCase[];
  migrationRepeat?: number;
  migrationBandwidth: number;
  migrationDowntimeLimit: number;
  layer: boolean;
  layerRepeat?: number;
  spdkDir?: string;
  vhostdArgs: string;
  initiator: InitiatorKind[];
  manyctrl: number[];
  manyctrlQd: number;
  initiatorMemory: 'hugepages' | 'memfd';
}

/** Parts of a bench run `--only` picks from. */
export const SECTIONS = ['io', 'alloc', 'wakeup', 'hotpath', 'layer', 'manyctrl', 'rss', 'migration'] as const;
export type Section = (typeof SECTIONS)[number];

function parseArgs(argv: string[]): BenchOptions {
  const program = new Command()
    .name('npm run bench --')
    .description('vhostd vs qemu-storage-daemon: IOPS, latency and CPU per I/O, same machine, same run, same initiator')
    .option('-d, --duration <s>', 'measured seconds per row [VHOSTD_BENCH_DURATION]', seconds, Number(env.VHOSTD_BENCH_DURATION ?? 3))
    .option('-w, --warmup <s>', 'unmeasured seconds before each row [VHOSTD_BENCH_WARMUP]', seconds, Number(env.VHOSTD_BENCH_WARMUP ?? 0.5))
    .option('--quick', 'QD 1 and 32, 1 queue, 1 s per row (0.25 s warm-up) [VHOSTD_BENCH_QUICK=1]', env.VHOSTD_BENCH_QUICK === '1')
    .option('--bdev <list>', `bdevs (${BDEV_KINDS.join(',')}) [VHOSTD_BENCH_BDEV]`, list(BDEV_KINDS, 'bdev'), list(BDEV_KINDS, 'bdev')(env.VHOSTD_BENCH_BDEV ?? BDEV_KINDS.join(',')))
    .option('--rw <list>', 'I/O patterns (randread,randwrite,randrw,...) [VHOSTD_BENCH_RW]', list(RW_MODES, 'rw mode'), list(RW_MODES, 'rw mode')(env.VHOSTD_BENCH_RW ?? 'randread,randwrite'))
    .option('--qd <list>', 'queue depths per queue [VHOSTD_BENCH_QD]', intList, env.VHOSTD_BENCH_QD ? intList(env.VHOSTD_BENCH_QD) : undefined)
    .option('--queues <list>', 'queue counts [VHOSTD_BENCH_QUEUES]', intList, env.VHOSTD_BENCH_QUEUES ? intList(env.VHOSTD_BENCH_QUEUES) : undefined)
    .option('--targets <list>', 'targets (qsd,vhostd,spdk; spdk needs --spdk-dir) [VHOSTD_BENCH_TARGETS]', list(TARGET_KINDS, 'target'), list(TARGET_KINDS, 'target')(env.VHOSTD_BENCH_TARGETS ?? 'qsd,vhostd'))
    .option('--rows <patterns>', "only rows whose id (bdev/rw/qdN/qN, e.g. 'null/randread/qd32/q1') matches one of these comma-separated patterns (* wildcard) [VHOSTD_BENCH_ROWS]", (v: string) => v.split(',').filter(Boolean), (env.VHOSTD_BENCH_ROWS ?? '').split(',').filter(Boolean))
    .option('--repeat <n>', 'runs per row and target, alternating targets; the table shows medians [VHOSTD_BENCH_REPEAT]', (v) => intList(v)[0], Number(env.VHOSTD_BENCH_REPEAT ?? 1))
    .option('--size <bytes>', 'size of every bdev and image (e.g. 1g)', size, size(env.VHOSTD_BENCH_SIZE ?? '1g'))
    .option('--disk-dir <dir>', 'directory for the disk image (kept between runs)', env.VHOSTD_BENCH_DISK_DIR ?? '/var/tmp')
    .option('--qcow2-dir <dir>', 'directory for the qcow2 rows\' images (one per target and row, removed afterwards) [VHOSTD_BENCH_QCOW2_DIR]', env.VHOSTD_BENCH_QCOW2_DIR ?? '/dev/shm')
    .option('--out-dir <dir>', 'where the JSON and SVG go', env.VHOSTD_BENCH_OUT ?? join(ROOT, 'bench/results'))
    .option('--target-core <n>', 'core both targets are pinned to', (v) => Number(v), 0)
    .option('--initiator-core <n>', 'core the initiator (this process) is pinned to', (v) => Number(v), 1)
    .option('--initiator-memory <kind>', "the load initiator's guest memory for every target: 'hugepages' (2 MiB pages on /dev/hugepages, as a VM's memory-backend-file on hugetlbfs; SPDK's target needs them) or 'memfd' (4 KiB pages; SPDK still gets hugepages) [VHOSTD_BENCH_INITIATOR_MEMORY]", (v: string) => {
      if (v !== 'hugepages' && v !== 'memfd') throw new Error(`--initiator-memory: ${v} is not hugepages or memfd`);
      return v;
    }, env.VHOSTD_BENCH_INITIATOR_MEMORY ?? 'hugepages')
    .option('--spin-us <us>', 'initiator busy-poll budget before sleeping on the call eventfd', (v) => Number(v), 50)
    .option('--alloc-requests <n>', 'requests for the vhostd allocation check (0: skip) [VHOSTD_BENCH_ALLOC]', (v) => Number(v), Number(env.VHOSTD_BENCH_ALLOC ?? 1_000_000))
    .option('--wakeup-tries <n>', 'first requests after 200 ms idle to time per target (0: skip) [VHOSTD_BENCH_WAKEUP]', (v) => Number(v), Number(env.VHOSTD_BENCH_WAKEUP ?? 10))
    .option('--profile', "run vhostd under node --cpu-prof and summarize where the reactor's time goes")
    .option('--vhostd-args <args>', "extra vhostd arguments, space-separated (e.g. '--backend-wait spin') [VHOSTD_BENCH_VHOSTD_ARGS]", env.VHOSTD_BENCH_VHOSTD_ARGS ?? '')
    .option('--dist [dir]', 'run vhostd from dist/ (npm run build), or from another tsc output directory under the project (A/B of two builds), instead of the sources through tsx')
    .option('--histogram', 'keep latency histogram buckets in the JSON')
    .option('--quiet-wait <s>', 'before each run, wait up to this long for other processes to leave the cores (0: do not wait) [VHOSTD_BENCH_QUIET_WAIT]', seconds, Number(env.VHOSTD_BENCH_QUIET_WAIT ?? 10))
    .option('--only <sections>', `run only these sections (${SECTIONS.join(',')}) [VHOSTD_BENCH_ONLY]`, list(SECTIONS, 'section'), list(SECTIONS, 'section')(env.VHOSTD_BENCH_ONLY ?? SECTIONS.join(',')))
    .option('--spdk-dir <dir>', 'an SPDK build (build/bin/vhost, build/examples/bdevperf): enables the spdk target, the bdevperf initiator and the manyctrl section; without it they are skipped [VHOSTD_BENCH_SPDK_DIR]', env.VHOSTD_BENCH_SPDK_DIR || undefined)
    .option('--initiator <list>', `initiators of the I/O rows (${INITIATORS.join(',')}; bdevperf needs --spdk-dir) [VHOSTD_BENCH_INITIATOR]`, list(INITIATORS, 'initiator'), list(INITIATORS, 'initiator')(env.VHOSTD_BENCH_INITIATOR ?? 'load'))
    .option('--manyctrl <list>', 'controller counts of the manyctrl section [VHOSTD_BENCH_MANYCTRL]', intList, intList(env.VHOSTD_BENCH_MANYCTRL ?? '1,8,32'))
    .option('--manyctrl-qd <n>', 'queue depth per controller in the manyctrl section', (v) => intList(v)[0], 8)
    .option('--no-migration', 'skip the migration row (it boots TCG guests: about 30 s per repeat) [VHOSTD_BENCH_MIGRATION=0]')
    .option('--no-layer', 'skip the bdev layer section (QoS, histogram, metrics on and off) [VHOSTD_BENCH_LAYER=0]')
    .option('--layer-repeat <n>', 'alternating runs per configuration in the layer section (default: --repeat when given, else 3; 1 with --quick) [VHOSTD_BENCH_LAYER_REPEAT]', (v) => intList(v)[0], env.VHOSTD_BENCH_LAYER_REPEAT ? intList(env.VHOSTD_BENCH_LAYER_REPEAT)[0] : undefined)
    .option('--migration-cases <list>', `migrations per guest (${MIGRATION_CASES.join(',')}) [VHOSTD_BENCH_MIGRATION_CASES]`, list(MIGRATION_CASES, 'migration case'), list(MIGRATION_CASES, 'migration case')(env.VHOSTD_BENCH_MIGRATION_CASES ?? MIGRATION_CASES.join(',')))
    .option('--migration-repeat <n>', 'guests per target for the migration row (default: --repeat; 1 with --quick) [VHOSTD_BENCH_MIGRATION_REPEAT]', (v) => intList(v)[0], env.VHOSTD_BENCH_MIGRATION_REPEAT ? intList(env.VHOSTD_BENCH_MIGRATION_REPEAT)[0] : undefined)
    .option('--migration-bandwidth <bytes>', 'migrate-set-parameters max-bandwidth, bytes/s (e.g. 1g)', size, size(env.VHOSTD_BENCH_MIGRATION_BANDWIDTH ?? '8g'))
    .option('--migration-downtime-limit <ms>', 'migrate-set-parameters downtime-limit, ms (at 500 the guest is paused right after the first RAM pass and the downtime is mostly RAM copy)', (v) => intList(v)[0], Number(env.VHOSTD_BENCH_MIGRATION_DOWNTIME_LIMIT ?? 50));
  program.parse(argv);
  const o = program.opts<BenchOptions>();
  if (env.VHOSTD_BENCH_MIGRATION === '0' && program.getOptionValueSource('migration') === 'default') o.migration = false;
  o.migrationRepeat ??= o.quick ? 1 : o.repeat;
  if (env.VHOSTD_BENCH_LAYER === '0' && program.getOptionValueSource('layer') === 'default') o.layer = false;
  const repeatGiven = program.getOptionValueSource('repeat') !== 'default' || env.VHOSTD_BENCH_REPEAT !== undefined;
  o.layerRepeat ??= repeatGiven ? o.repeat : o.quick ? 1 : 3;
  if (o.quick) {
    if (program.getOptionValueSource('duration') === 'default' && env.VHOSTD_BENCH_DURATION === undefined) o.duration = 1;
    if (program.getOptionValueSource('warmup') === 'default' && env.VHOSTD_BENCH_WARMUP === undefined) o.warmup = 0.25;
    o.qd ??= [1, 32];
    o.queues ??= [1];
  }
  o.qd ??= [1, 32, 128];
  o.queues ??= [1, 2];
  return o;
}

/** Hugepage memory kept free for the load initiator's rings and buffers (QD 128 x 2 queues x 4 KiB is 1 MiB). */
const HUGEPAGE_INITIATOR_MIB = 64;
/** Where the load initiator's hugepage memory lives (SPDK's rows always, every row by default). */
const HUGETLBFS = '/dev/hugepages';

function timestamp(): string {
  return new Date().toISOString().replace(/[:]/g, '-').replace(/\.\d+Z$/, 'Z');
}

function gitDescribe(): string {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return `${rev}${dirty ? '+dirty' : ''}`;
  } catch {
    return 'unknown';
  }
}

const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);

/** Other processes using more than this many cores make a run wait (and get flagged). */
const QUIET_CORES = 0.15;

/** One row's run with SPDK's bdevperf as the initiator (bench/lib/bdevperf.ts), shaped like the load generator's. */
/**
 * SPDK's target busy-polls its core even with nothing to serve, and every target runs on the same
 * core: while another target is measured it is stopped (SIGSTOP), or it would take half that
 * core from the measured one (vhostd's null QD 1 rows fell from ~1.8 M to ~0.9 M IO/s beside it).
 * `measured` undefined: every target runs again (before they are stopped).
 */
function onlyMeasured(targets: Map<TargetKind, { pid: number }>, measured: TargetKind | undefined): void {
  for (const [kind, t] of targets) {
    if (kind !== 'spdk' || t.pid <= 0) continue;
    try {
      process.kill(t.pid, measured === undefined || measured === kind ? 'SIGCONT' : 'SIGSTOP');
    } catch {
      // already gone
    }
  }
}

async function runBdevperfRow(socket: string, spec: RowSpec, o: BenchOptions, targetPid: number): Promise<LoadResult> {
  const run = { spdkDir: o.spdkDir ?? '', sockets: [socket], queues: spec.queues, qd: spec.qd, rw: spec.rw, durationS: o.duration, core: o.initiatorCore, targetPid };
  return asLoadResult(await runBdevperf(run), run);
}

async function runOne(socket: string, spec: RowSpec, o: BenchOptions, targetPid: number, hugetlbfs?: string): Promise<LoadResult> {
  const gen = await LoadGenerator.connect({ socketPath: socket, queues: spec.queues, iodepth: spec.qd, ioBytes: 4096, spinUs: o.spinUs, hugetlbfs });
  try {
    return await gen.run({
      rw: spec.rw,
      durationMs: o.duration * 1000,
      warmupMs: o.warmup * 1000,
      targetPid,
      keepHistogram: o.histogram,
    });
  } finally {
    gen.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  const started = new Date();
  const stamp = timestamp();
  if (cpus().length < 2 || o.targetCore === o.initiatorCore) log('WARNING: target and initiator share a core; the numbers measure both together');
  const loadBefore = readFileSync('/proc/loadavg', 'utf8').trim();
  if (Number(loadBefore.split(' ')[0]) > 0.5) log(`WARNING: load average ${loadBefore.split(' ').slice(0, 3).join(' ')} before the run: other processes compete for the cores`);
  const pin = pinProcess(o.initiatorCore);
  if (!pin.thread) log(`WARNING: could not pin the initiator to core ${o.initiatorCore}: ${pin.error}`);

  const sections = new Set<Section>(o.only);
  // SPDK's target and initiator need a build: without --spdk-dir they are left out (with a note).
  const noSpdk = spdkMissing(o.spdkDir);
  if (noSpdk && o.targets.includes('spdk')) {
    log(`spdk target: skipped (${noSpdk})`);
    o.targets = o.targets.filter((k) => k !== 'spdk');
  }
  if (noSpdk && o.initiator.includes('bdevperf')) {
    log(`bdevperf initiator: skipped (${noSpdk})`);
    o.initiator = o.initiator.filter((k) => k !== 'bdevperf');
  }
  if (!o.migration) sections.delete('migration');
  if (!o.layer) sections.delete('layer');
  const specs: RowSpec[] = [];
  if (sections.has('io'))
    for (const bdev of o.bdev)
      for (const rw of o.rw)
        for (const queues of o.queues)
          for (const qd of o.qd)
            for (const initiator of o.initiator) {
              if (initiator === 'bdevperf' && !bdevperfWorkload(rw)) continue;
              // An empty image reads zeros from unallocated clusters: its rows are the writing ones.
              if (bdev === 'qcow2-fresh' && (rw === 'randread' || rw === 'read')) continue;
              const id = `${bdev}/${rw}/qd${qd}/q${queues}${initiator === 'load' ? '' : `/${initiator}`}`;
              if (rowMatches(id, o.rows)) specs.push({ id, bdev, rw, qd, queues, initiator });
            }
  if (sections.has('io') && specs.length === 0) {
    log('no row matches the filters');
    return 2;
  }
  const bdevs = [...new Set(specs.map((s) => s.bdev))];
  const queueCounts = [...new Set(specs.map((s) => s.queues))];

  // Every target's rows with the same kind of guest memory: SPDK's target maps only hugepages, so
  // with memfd memory for the others they paid TLB misses SPDK did not (QD 128 randwrite, vhostd
  // alone, alternated: 5.9-8.0 M on memfd, 7.4-8.1 M on hugepages).
  let initiatorHugetlbfs: string | undefined;
  if (o.initiatorMemory === 'hugepages' && specs.some((s) => s.initiator === 'load')) {
    try {
      const mounted = readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === HUGETLBFS && l.split(' ')[2] === 'hugetlbfs');
      if (!mounted) throw new Error(`no hugetlbfs mounted on ${HUGETLBFS}`);
      ensureHugepages(HUGEPAGE_INITIATOR_MIB);
      initiatorHugetlbfs = HUGETLBFS;
    } catch (e) {
      log(`initiator memory: hugepages unavailable (${e instanceof Error ? e.message : String(e)}): memfd for vhostd and QSD, hugepages for SPDK`);
      o.initiatorMemory = 'memfd';
    }
  }
  const files: BenchFiles = { sizeBytes: o.size };
  const targets = new Map<TargetKind, Target>();
  const unavailable = new Map<TargetKind, string>();
  const rows: RowResult[] = [];
  let alloc: AllocReport | undefined;
  const wakeups: WakeupResult[] = [];
  const profiles: Array<{ title: string; summary: ReturnType<typeof summarizeProfile> }> = [];
  const profDir = o.profile ? resolve(o.outDir, `${stamp}-cpuprof`) : undefined;
  let vhostdRequests = 0;
  let migration: MigrationReport | undefined;
  let layer: LayerReport | undefined;
  let manyctrl: ManyCtrlReport | undefined;
  let rss: RssReport | undefined;
  let hotpath: HotPathReport | undefined;
  let blockdev: BlockDevice | undefined;
  if (sections.has('hotpath')) {
    // First, in a fresh process: measured after the I/O rows, the same code ran up to 2x slower
    // (QD 32: 232 against 139 ns) in this process; it only compares builds, so keep it clean.
    const rws = o.rw.filter((rw): rw is 'randread' | 'randwrite' => rw === 'randread' || rw === 'randwrite');
    hotpath = runHotPath({ rws, qds: o.qd.filter((q) => q <= 32), ms: Math.min(1000, o.duration * 1000), repeat: Math.max(3, o.repeat) }, log);
  }
  // The migration section's own targets and image while it runs.
  const migrationLive = { targets: new Set<Target>(), guests: new Set<GuestSession>(), files: new Set<string>(), stopping: false };
  // Ctrl-C / SIGTERM: stop the guests and targets and remove the RAM images and temp directories
  // instead of leaving them behind.
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping the targets`);
    migrationLive.stopping = true;
    Promise.allSettled([...migrationLive.guests].map((g) => g.kill()))
      .then(() => {
        onlyMeasured(targets, undefined);
        return Promise.allSettled([...targets.values(), ...migrationLive.targets].map((t) => t.stop()));
      })
      .finally(() => {
        removeImage(files.shm);
        removeImage(files.qcow2);
        blockdev?.cleanup();
        for (const f of migrationLive.files) removeImage(f);
        process.exit(130);
      });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Probes the target core <-> initiator core link around every run (pinned: this thread is on the initiator core).
  const coreLink = new CoreLink(o.targetCore);
  try {
    if (bdevs.includes('shm') || (bdevs.includes('malloc') && o.targets.includes('qsd'))) files.shm = createShmImage(o.size);
    if (bdevs.includes('disk')) files.disk = ensureDiskImage(o.diskDir, o.size, log);
    if (bdevs.includes('qcow2') || bdevs.includes('qcow2-fresh')) {
      files.qcow2Dir = o.qcow2Dir;
      files.qcow2Unavailable = qcow2Missing();
      if (!files.qcow2Unavailable && bdevs.includes('qcow2')) {
        try {
          files.qcow2 = createFullImage(o.qcow2Dir, o.size, log);
        } catch (e) {
          files.qcow2Unavailable = `not available: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
        }
      }
      if (files.qcow2Unavailable) log(`qcow2 rows: ${files.qcow2Unavailable}`);
    }
    if (bdevs.includes('blockdev')) {
      try {
        blockdev = setupBlockDevice(o.size, log);
        files.blockdev = blockdev.path;
      } catch (e) {
        log(`block device: not available (${e instanceof Error ? e.message : String(e)})`);
      }
    }
    const wantAlloc = sections.has('alloc') && o.allocRequests > 0 && o.targets.includes('vhostd');
    const wantWakeup = sections.has('wakeup') && o.wakeupTries > 0;
    // The allocation check and the wake-up measurement use each target's 1-queue null export.
    const withNull = (wantAlloc || wantWakeup) && !bdevs.includes('null') ? [...bdevs, 'null' as const] : bdevs;
    for (const kind of specs.length > 0 || wantAlloc || wantWakeup ? o.targets : []) {
      try {
        if (kind === 'qsd') {
          if (!QsdTarget.available()) throw new Error('qemu-storage-daemon is not installed');
          targets.set(kind, await QsdTarget.start({ core: o.targetCore, files, bdevs: withNull, queues: [...new Set([...queueCounts, 1])] }));
        } else if (kind === 'spdk') {
          targets.set(kind, await SpdkTarget.start({ spdkDir: o.spdkDir ?? '', core: o.targetCore, files, bdevs: withNull }));
        } else {
          targets.set(
            kind,
            await VhostdTarget.start({
              core: o.targetCore,
              files,
              bdevs: withNull,
              dist: o.dist,
              cpuProfDir: profDir,
              traceGc: wantAlloc,
              extraArgs: o.vhostdArgs.split(' ').filter((a) => a !== ''),
            }),
          );
        }
        log(`${kind} started (pid ${targets.get(kind)?.pid})`);
      } catch (e) {
        unavailable.set(kind, `not available: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
        log(`${kind}: ${unavailable.get(kind)}`);
      }
    }

    // Measurements already taken, by export: QSD's malloc stand-in is its shm export.
    const measured = new Map<string, { rowId: string; samples: LoadResult[]; foreignCores: number[]; coreLinkNs: Array<[number, number]> }>();
    const noise = new ForeignLoad(() => [...targets.values()].map((t) => t.pid), { withChildren: true });
    let n = 0;
    for (const spec of specs) {
      n++;
      const perTarget = new Map<TargetKind, RowResult>();
      const order = o.targets;
      for (let rep = 0; rep < o.repeat; rep++) {
        const seq = rep % 2 === 0 ? order : [...order].reverse();
        for (const kind of seq) {
          const t = targets.get(kind);
          let row = perTarget.get(kind);
          if (!row) {
            row = summarize({ ...spec, target: kind, bdevLabel: '', status: 'ok', samples: [], foreignCores: [], coreLinkNs: [] });
            perTarget.set(kind, row);
          }
          if (row.status !== 'ok') continue;
          if (!t) {
            Object.assign(row, { status: 'unavailable', reason: unavailable.get(kind) ?? 'not started' });
            continue;
          }
          const ep = t.endpoint(spec.bdev, spec.queues);
          if ('unavailable' in ep) {
            Object.assign(row, { status: 'unavailable', reason: ep.unavailable });
            continue;
          }
          row.bdevLabel = ep.label;
          const key = `${kind}|${ep.socket}|${spec.rw}|${spec.qd}|${spec.queues}|${spec.initiator ?? 'load'}`;
          const prior = measured.get(key);
          if (prior && prior.rowId !== spec.id) {
            row.sameAs = prior.rowId;
            row.samples = prior.samples;
            row.foreignCores = prior.foreignCores;
            row.coreLinkNs = prior.coreLinkNs;
            continue;
          }
          try {
            // The allocation row starts every run on an empty image (made outside the measured window).
            if (spec.bdev === 'qcow2-fresh') await t.renew?.(spec.bdev);
            const image = spec.bdev === 'qcow2-fresh' ? t.imagePath?.(spec.bdev) : undefined;
            const imageBytes = image ? statSync(image).size : 0;
            onlyMeasured(targets, kind);
            if (o.quietWait > 0) await noise.waitQuiet(QUIET_CORES, o.quietWait * 1000, log);
            const linkBefore = coreLink.probe();
            noise.begin();
            const r =
              spec.initiator === 'bdevperf'
                ? await runBdevperfRow(ep.socket, spec, o, t.pid)
                : // SPDK's target maps only hugepage memory (as a VM's memory-backend-file on hugetlbfs).
                  await runOne(ep.socket, spec, o, t.pid, kind === 'spdk' ? HUGETLBFS : initiatorHugetlbfs);
            row.foreignCores.push(noise.end());
            row.coreLinkNs.push([linkBefore, coreLink.probe()]);
            if (kind === 'vhostd') vhostdRequests += r.iosTotal;
            // Clusters are appended to the image file as they are allocated (both targets). The
            // file grew over the whole run; r.writes counts the measured window only.
            const runWrites = r.ios > 0 ? (r.iosTotal * r.writes) / r.ios : 0;
            if (image && runWrites > 0) (row.allocatingPct ??= []).push((100 * (statSync(image).size - imageBytes)) / QCOW2_CLUSTER / runWrites);
            row.samples.push(r);
            measured.set(key, { rowId: spec.id, samples: row.samples, foreignCores: row.foreignCores, coreLinkNs: row.coreLinkNs });
          } catch (e) {
            Object.assign(row, { status: 'error', reason: e instanceof Error ? e.message : String(e) });
          }
          await sleep(100);
        }
      }
      for (const kind of o.targets) {
        const row = perTarget.get(kind);
        if (!row) continue;
        const s = row.status === 'ok' ? summarize(row) : row;
        rows.push(s);
        const r = s.status === 'ok' ? `${Math.round(s.iops)} IOPS, p99 ${s.p99Us} µs, target CPU ${s.targetCpuPct?.toFixed(0) ?? '?'}%, initiator busy ${s.initiatorBusyPct.toFixed(0)}%${s.stalls ? `, ${s.stalls} stalls` : ''}` : `${s.status}: ${s.reason}`;
        log(`[${n}/${specs.length}] ${kind.padEnd(6)} ${spec.id}: ${r}`);
      }
    }

    onlyMeasured(targets, 'vhostd'); // the allocation and wake-up checks do not measure SPDK
    const vhostd = targets.get('vhostd');
    if (wantAlloc && vhostd instanceof VhostdTarget) {
      log(`allocation check: ${o.allocRequests} requests against vhostd's null bdev (QD 32, 1 queue)`);
      try {
        alloc = await measureAllocation(vhostd, targets.get('qsd') as QsdTarget | undefined, o.allocRequests, o.spinUs);
        vhostdRequests += alloc.vhostd.requestsTotal;
      } catch (e) {
        log(`allocation check failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (wantWakeup) {
      for (const [kind, t] of targets) {
        if (kind === 'spdk') continue; // its initiator has no hugepage memory
        const ep = t.endpoint('null', 1);
        if ('unavailable' in ep) continue;
        log(`wake-up: ${o.wakeupTries} reads after 200 ms idle against ${kind}`);
        try {
          wakeups.push(await measureWakeup(kind, ep.socket, 200, o.wakeupTries));
        } catch (e) {
          log(`wake-up measurement against ${kind} failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    }
  } finally {
    coreLink.close();
    onlyMeasured(targets, undefined);
    for (const t of targets.values()) await t.stop().catch(() => undefined);
    removeImage(files.shm);
    removeImage(files.qcow2);
    blockdev?.cleanup();
  }

  // The layer section and the migration row: their own targets (started after the others
  // stopped), guests, QEMUs.
  try {
    if (sections.has('layer') && o.targets.includes('vhostd')) {
      const params = { core: o.targetCore, sizeBytes: o.size, rws: o.rw, durationS: o.duration, warmupS: o.warmup, repeat: o.layerRepeat ?? 3, spinUs: o.spinUs, quietWaitS: o.quietWait, dist: o.dist };
      try {
        layer = await runLayer({ ...params, log }, migrationLive);
      } catch (e) {
        log(`layer section failed: ${e instanceof Error ? e.stack : String(e)}`);
        layer = { params, qd: 32, queues: 1, qosIosPerSec: 0, target: 'vhostd', rows: [], skipped: `failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}` };
      }
    } else if (sections.has('layer')) log('layer: skipped (it measures vhostd, which --targets leaves out)');
    if (sections.has('manyctrl')) {
      const params = { spdkDir: o.spdkDir, targets: o.targets, controllers: o.manyctrl, qd: o.manyctrlQd, rw: 'randread' as const, core: o.targetCore, initiatorCore: o.initiatorCore, sizeBytes: o.size, durationS: o.duration, repeat: o.repeat, dist: o.dist };
      try {
        manyctrl = await runManyCtrl(params, log, migrationLive);
      } catch (e) {
        log(`manyctrl section failed: ${e instanceof Error ? e.stack : String(e)}`);
        manyctrl = { params, rows: [], skipped: `failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}` };
      }
    }
    if (sections.has('rss')) {
      const params = { spdkDir: o.spdkDir, targets: o.targets, core: o.targetCore, sizeBytes: o.size, dist: o.dist };
      try {
        rss = await runRss(params, log, migrationLive);
      } catch (e) {
        log(`rss section failed: ${e instanceof Error ? e.stack : String(e)}`);
        rss = { params, rows: [{ target: 'vhostd', status: 'error', reason: e instanceof Error ? e.message.split('\n')[0] : String(e), rssBytes: 0, privateBytes: 0, hugetlbBytes: 0, rssBytesMany: 0, hugetlbBytesMany: 0, perControllerBytes: 0 }] };
      }
    }
    if (sections.has('migration')) {
      const params = defaultMigrationParams({
        targetCore: o.targetCore,
        repeat: o.migrationRepeat ?? 1,
        cases: o.migrationCases,
        maxBandwidth: o.migrationBandwidth,
        downtimeLimitMs: o.migrationDowntimeLimit,
        quietWaitS: o.quietWait,
        dist: o.dist,
      });
      log(
        `migration: ${params.repeat} guest(s) per target, ${params.cases.join(' + ')}; max-bandwidth ${(params.maxBandwidth / 1048576).toFixed(0)} MiB/s, downtime-limit ${params.downtimeLimitMs} ms`,
      );
      try {
        migration = await runMigrations({ targets: o.targets.filter((k) => k !== 'spdk'), params, log, live: migrationLive });
      } catch (e) {
        log(`migration failed: ${e instanceof Error ? e.stack : String(e)}`);
        migration = { params, skipped: `failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`, targets: {}, samples: [], summary: [], pairs: [] };
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  if (profDir && existsSync(profDir)) {
    // One file per thread: the main (control) thread and the reactor worker.
    for (const f of readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile'))) {
      const summary = summarizeProfile(join(profDir, f), vhostdRequests);
      profiles.push({ title: `vhostd thread profile (${vhostdRequests} requests served)`, summary });
    }
  }

  const pairList = pairs(rows);
  if (rows.length > 0) {
    const table = renderTable(rows, pairList);
    process.stdout.write(`\n${table}\n`);
    process.stdout.write(
      `IOPS and latency: medians over ${o.repeat} run(s) of ${o.duration} s (after ${o.warmup} s warm-up), 4 KiB requests, random offsets over ${o.size >> 20} MiB.\n` +
        `Target CPU%: utime+stime of the whole target process over wall time (100 = one core). Initiator: same for this process; busy% = share of wall time spent\n` +
        `in polling passes that found work ("!" and INITIATOR-BOUND when >= ${SATURATED_BUSY_PCT}%: the row then measures the initiator). Ratios are vhostd/QSD: IOPS per target\n` +
        `CPU-second (median of the ratios of runs taken side by side; higher is better for vhostd) and p99 (lower is better). QSD has no RAM disk: its malloc row is its /dev/shm file export.\n` +
        `Guest memory of the load initiator: ${o.initiatorMemory === 'hugepages' ? '2 MiB hugepages for every target' : 'memfd (4 KiB pages) for vhostd and QSD, hugepages for SPDK (it needs them)'}; bdevperf's is always hugepages.\n` +
        `Notes: "stalls N": times the target completed nothing for 2 ms with requests in flight (the initiator kicks again); "ini off-CPU": time the\n` +
        `initiator thread visibly did not run; "other load": cores used by processes other than the bench and its targets during the row (max over\n` +
        `runs); "= row": the same export measured for that row; "line": a cache line's round trip between the target's and the initiator's core, probed\n` +
        `before and after each run (on a VM it moves with the host's placement of the vCPUs, and QD 32 rows move with it). "same phase (pairs)": the\n` +
        `median ratio over the repeats whose four probes (both runs, before and after) were all near or all far (>= ${FAR_LINK_NS} ns), and how many qualified.\n`,
    );
    if (rows.some((r) => r.bdev === 'qcow2' || r.bdev === 'qcow2-fresh'))
      process.stdout.write(
        `qcow2 (${QCOW2_CLUSTER >> 10} KiB clusters, images in ${o.qcow2Dir}): each target serves its own copy of one fully allocated image (vhostd bdev_qcow2_create; QSD driver=qcow2 over\n` +
          `driver=file,aio=io_uring,cache.direct=on); qcow2-fresh starts every run on a new empty image (qemu-img create, before the run): its writes allocate clusters,\n` +
          `more of them the emptier the image ("allocating N% of writes": the image file's growth in clusters over the run's writes, warm-up included).\n`,
      );
  }
  if (alloc) process.stdout.write(`\n${formatAlloc(alloc)}\n`);
  if (wakeups.length > 0) process.stdout.write(`\n${formatWakeup(wakeups)}\n`);
  if (layer) process.stdout.write(`\n${formatLayer(layer)}\n`);
  if (manyctrl) process.stdout.write(`\n${formatManyCtrl(manyctrl)}\n`);
  if (hotpath) process.stdout.write(`\n${formatHotPath(hotpath)}\n`);
  if (rss) process.stdout.write(`\n${formatRss(rss)}\n`);
  if (migration) process.stdout.write(`\n${formatMigration(migration)}\n`);
  for (const p of profiles) {
    // The reactor is the data path; the control thread only matters when it is busy; the module
    // loader threads tsx adds are start-up noise.
    if (p.summary.role === 'reactor' || (p.summary.role === 'control' && p.summary.busyMs > 0.05 * p.summary.totalMs)) {
      process.stdout.write(`\n${formatProfile(p.summary, p.title)}\n`);
    } else {
      process.stdout.write(`\n${p.title} [${p.summary.role} thread] ${basename(p.summary.file)}: ${p.summary.busyMs.toFixed(0)} ms busy of ${p.summary.totalMs.toFixed(0)} ms (details in the JSON)\n`);
    }
  }

  mkdirSync(o.outDir, { recursive: true });
  const jsonPath = join(o.outDir, `${stamp}.json`);
  const svgPath = join(o.outDir, `${stamp}.svg`);
  const targetInfo: Record<string, unknown> = {};
  const report = {
    meta: {
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      host: hostname(),
      kernel: release(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      node: process.version,
      vhostdRevision: gitDescribe(),
      options: o,
      targets: targetInfo,
      initiatorPinned: pin,
      loadavgBefore: loadBefore,
      loadavgAfter: readFileSync('/proc/loadavg', 'utf8').trim(),
      unavailable: Object.fromEntries(unavailable),
    },
    rows: rows.map((r) => ({ ...r, samples: r.sameAs ? [] : r.samples })),
    pairs: pairList,
    alloc,
    wakeups,
    layer,
    manyctrl,
    rss,
    hotpath,
    migration,
    profiles: profiles.map((p) => p.summary),
  };
  for (const [k, t] of targets) {
    targetInfo[k] = {
      pid: t.pid,
      description: t.description,
      ...(t instanceof QsdTarget ? { cmdline: t.cmdline } : {}),
      // Warnings and errors the target logged (vhostd logs JSON lines; QSD plain text).
      logTail: t.output.filter((l) => l && !/^\[\d+:0x[0-9a-f]+\]/.test(l) && !/"level":(10|20|30)\b/.test(l)).slice(-50),
    };
  }
  writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  const okRows = rows.filter((r) => r.status === 'ok');
  const chart = renderChart(
    okRows.map((r) => ({ target: r.initiator === 'bdevperf' ? `${r.target}+bdevperf` : r.target, bdev: r.bdev, rw: r.rw, qd: r.qd, queues: r.queues, iops: r.iops })),
    {
      title: 'vhostd vs qemu-storage-daemon: IOPS vs queue depth (4 KiB)',
      subtitle: `${stamp}, ${cpus()[0]?.model ?? ''} x${cpus().length}, target on core ${o.targetCore}, initiator on core ${o.initiatorCore}, ${o.duration} s per point, vhostd ${gitDescribe()}`,
      bdevs: [...BDEV_KINDS],
      rws: o.rw,
      qds: o.qd,
    },
  );
  if (okRows.length > 0) writeFileSync(svgPath, chart);
  process.stdout.write(`\nresults: ${jsonPath}\n${okRows.length > 0 ? `chart:   ${svgPath}\n` : ''}`);
  if (profDir) process.stdout.write(`profiles: ${profDir}\n`);
  const migrationFailed = migration?.summary.some((s) => s.status === 'error') ?? false;
  const layerFailed = layer !== undefined && (layer.skipped !== undefined || layer.rows.some((r) => r.status === 'error'));
  const manyctrlFailed = manyctrl?.rows.some((r) => r.status === 'error') ?? false;
  const rssFailed = rss?.rows.some((r) => r.status === 'error') ?? false;
  return rows.some((r) => r.status === 'error') || migrationFailed || layerFailed || manyctrlFailed || rssFailed ? 1 : 0;
}

main(process.argv).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);
