// The bench's migration row: live migration of the e2e test guest (TCG) whose one disk is a
// vhost-user-blk device served by vhostd or by qemu-storage-daemon, from one controller / export
// of the target to a second one onto the same bdev / node, once with the guest idle and once with
// fio busy on the disk. Numbers are QEMU's own (`query-migrate` on the source): total-time,
// downtime, setup-time, status.
//
// Per repeat and target (alternating, like the I/O rows): boot a guest running
// test/e2e/guest-scripts/migrate-busy.sh on controller A; idle: wait until it is quiet, migrate to
// B; busy: start fio (4 KiB random read/write, QD 16, O_DIRECT) in the guest, let it run, migrate
// back to A while it runs; stop fio, collect its numbers, power off. The migration harness is the
// e2e one (test/e2e/lib/migration.ts: destination QEMU with `-incoming defer`, migrate over a unix
// socket, poll query-migrate).
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import Table from 'cli-table3';
import { GuestSession, TIMEOUT_SCALE, buildGuest, guestScript, vhostUserBlkArgs } from '../../test/e2e/lib/guest.js';
import { type MigrationResult, migrateGuest } from '../../test/e2e/lib/migration.js';
import { createShmImage, removeImage } from './files.js';
import { ForeignLoad } from './noise.js';
import { median } from './report.js';
import { QsdTarget, type Target, type TargetKind, VhostdTarget, hasCommand } from './targets.js';

export type MigrationCase = 'idle' | 'busy';
export const MIGRATION_CASES: readonly MigrationCase[] = ['idle', 'busy'];

const MiB = 1024 * 1024;

export interface MigrationParams {
  cases: MigrationCase[];
  repeat: number;
  /** Guest RAM (MiB) and vCPUs; TCG. */
  memMiB: number;
  smp: number;
  /** virtio-blk queues of the disk (device num-queues, QSD export num-queues). */
  queues: number;
  /** The disk: a raw file on /dev/shm this big, written in full first, served by both targets as their shm row serves it. */
  diskBytes: number;
  /** migrate-set-parameters, the same for both targets. */
  maxBandwidth: number;
  downtimeLimitMs: number;
  /** Quiet time after the guest is up, before the idle migration. */
  idleSettleMs: number;
  /** fio time before the busy migration. */
  busySettleMs: number;
  fio: { rw: 'randrw'; rwmixread: number; bs: number; iodepth: number };
  /** Core both targets are pinned to; QEMU and the bench share the others (`qemuCpus`). */
  targetCore: number;
  qemuCpus: string;
  /** Wait up to this long (s) for other processes to leave the cores before each guest. */
  quietWaitS: number;
  dist?: boolean | string;
}

export function defaultMigrationParams(p: Partial<MigrationParams> & Pick<MigrationParams, 'targetCore' | 'repeat'>): MigrationParams {
  return {
    cases: [...MIGRATION_CASES],
    memMiB: 384,
    smp: 1,
    queues: 1,
    diskBytes: 256 * MiB,
    maxBandwidth: 8 * 1024 * MiB,
    // QEMU pauses the guest once what is left to send fits in bandwidth x downtime-limit: at 500 ms
    // that is right after the first RAM pass, and the downtime is then mostly RAM copied while
    // paused (~400-480 ms here for both targets); at 50 ms it iterates until a round is small and
    // the downtime is the switch-over itself (last dirty pages, device state, vhost-user rings).
    downtimeLimitMs: 50,
    idleSettleMs: 2000,
    busySettleMs: 2000,
    fio: { rw: 'randrw', rwmixread: 50, bs: 4096, iodepth: 16 },
    qemuCpus: processCpus(),
    quietWaitS: 10,
    ...p,
  };
}

/** This process's CPU affinity list (QEMU children inherit it), e.g. "1". */
function processCpus(): string {
  try {
    return /list:\s*(\S+)/.exec(execFileSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' }))?.[1] ?? '?';
  } catch {
    return '?';
  }
}

export interface MigrationSample {
  target: TargetKind;
  case: MigrationCase;
  repeat: number;
  /** query-migrate's final status ('completed', 'failed', 'cancelled'), or 'error' (the harness gave up: see reason). */
  status: string;
  /** Which controller / export the guest moved between (a = copy 0, b = copy 1). */
  from: string;
  to: string;
  totalTimeMs?: number;
  downtimeMs?: number;
  setupTimeMs?: number;
  /** RAM the source sent (MiB), dirty-bitmap syncs (1 + iterations), its throughput. */
  ramMiB?: number;
  ramPasses?: number;
  mbps?: number;
  /** The destination's run state once the switch was done ('running'). */
  destStatus?: string;
  reason?: string;
  /** busy: fio's IOPS (reads + writes) over its whole run in the guest, migration included, and its error count. */
  guestIops?: number;
  guestFioErrors?: number;
  /** Cores' worth of CPU used by processes other than the bench, its targets and its QEMUs during the migration. */
  foreignCores: number;
  /** When something went wrong: the guest's last lines (ttyS1 script output, ttyS0 console) and QEMU's stderr. */
  guestTail?: { output: string[]; console: string[]; qemuStderr: string[] };
}

export interface MigrationSummary {
  target: TargetKind;
  case: MigrationCase;
  status: 'ok' | 'unavailable' | 'error';
  reason?: string;
  runs: number;
  completed: number;
  /** Medians over the completed migrations, and their ranges. */
  totalTimeMs?: number;
  totalTimeRange?: [number, number];
  downtimeMs?: number;
  downtimeRange?: [number, number];
  setupTimeMs?: number;
  ramMiB?: number;
  ramPasses?: number;
  guestIops?: number;
  foreignCoresMax: number;
}

export interface MigrationPair {
  case: MigrationCase;
  /** vhostd median / QSD median (lower: vhostd migrates faster / with less downtime). */
  totalTimeRatio?: number;
  downtimeRatio?: number;
}

export interface MigrationReport {
  params: MigrationParams;
  /** The section did not run at all (no QEMU, no guest image, ...). */
  skipped?: string;
  targets: Partial<Record<TargetKind, { description: string; source?: string; destination?: string; unavailable?: string; logTail?: string[] }>>;
  samples: MigrationSample[];
  summary: MigrationSummary[];
  pairs: MigrationPair[];
}

const errText = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';

/** Why the section cannot run here, or undefined. Builds (or reuses) the guest image. */
export async function migrationUnavailable(log: (m: string) => void): Promise<string | undefined> {
  if (!hasCommand('qemu-system-x86_64')) return 'qemu-system-x86_64 is not installed';
  if (!hasCommand('bash')) return 'bash is not installed (test/guest/mkguest.sh)';
  try {
    const image = await buildGuest();
    log(`migration: guest image ${image.kernel}, ${image.initrd}`);
  } catch (e) {
    const lines = (e instanceof Error ? e.message : String(e)).split('\n').filter((l) => l.trim());
    return `no guest image (test/guest/mkguest.sh build failed: ${lines.at(-1) ?? ''})`;
  }
  return undefined;
}

export interface MigrationRun {
  targets: TargetKind[];
  params: MigrationParams;
  log: (m: string) => void;
  /** Targets, guests and image files alive right now, for the bench's SIGINT handler. */
  live: { targets: Set<Target>; guests: Set<GuestSession>; files: Set<string>; stopping?: boolean };
}

/** Runs the migration section: starts its own targets (one shm bdev/node, two controllers/exports each). */
export async function runMigrations(run: MigrationRun): Promise<MigrationReport> {
  const { params: p, log, live } = run;
  const report: MigrationReport = { params: p, targets: {}, samples: [], summary: [], pairs: [] };
  const why = await migrationUnavailable(log);
  if (why) {
    report.skipped = why;
    log(`migration: skipped: ${why}`);
    return report;
  }
  const image = createShmImage(p.diskBytes, 'migration');
  live.files.add(image);
  const targets = new Map<TargetKind, Target>();
  const unavailable = new Map<TargetKind, string>();
  try {
    const files = { shm: image, sizeBytes: p.diskBytes };
    for (const kind of run.targets) {
      try {
        let t: Target;
        if (kind === 'qsd') {
          if (!QsdTarget.available()) throw new Error('qemu-storage-daemon is not installed');
          t = await QsdTarget.start({ core: p.targetCore, files, bdevs: ['shm'], queues: [p.queues], copies: 2 });
        } else {
          t = await VhostdTarget.start({ core: p.targetCore, files, bdevs: ['shm'], dist: p.dist, copies: 2 });
        }
        targets.set(kind, t);
        live.targets.add(t);
        const [a, b] = [t.endpoint('shm', p.queues, 0), t.endpoint('shm', p.queues, 1)];
        report.targets[kind] = {
          description: t.description,
          source: 'socket' in a ? `${a.socket} (${a.label})` : a.unavailable,
          destination: 'socket' in b ? `${b.socket} (${b.label})` : b.unavailable,
        };
        log(`migration: ${kind} started (pid ${t.pid})`);
      } catch (e) {
        unavailable.set(kind, `not available: ${errText(e)}`);
        report.targets[kind] = { description: kind, unavailable: unavailable.get(kind) };
        log(`migration: ${kind}: ${unavailable.get(kind)}`);
      }
    }
    const noise = new ForeignLoad(() => [...targets.values()].map((t) => t.pid), { withChildren: true });
    for (let rep = 0; rep < p.repeat; rep++) {
      const seq = rep % 2 === 0 ? run.targets : [...run.targets].reverse();
      for (const kind of seq) {
        const t = targets.get(kind);
        if (!t || live.stopping) continue;
        if (p.quietWaitS > 0) await noise.waitQuiet(0.15, p.quietWaitS * 1000, log);
        report.samples.push(...(await oneGuest(kind, t, rep, p, noise, log, live.guests)));
      }
    }
  } finally {
    for (const t of targets.values()) {
      const info = report.targets[t.kind];
      // Warnings and errors the target logged (vhostd: JSON lines above info; QSD: plain text).
      if (info) info.logTail = t.output.filter((l) => l && !/^\[\d+:0x[0-9a-f]+\]/.test(l) && !/"level":(10|20|30)\b/.test(l)).slice(-30);
      await t.stop().catch(() => undefined);
      live.targets.delete(t);
    }
    removeImage(image);
    live.files.delete(image);
  }
  report.summary = summarizeMigrations(report.samples, run.targets, p.cases, unavailable);
  report.pairs = migrationPairs(report.summary, p.cases);
  return report;
}

/** One guest on target `t`: boot on copy 0, the idle migration, the busy one, power off. */
async function oneGuest(
  kind: TargetKind,
  t: Target,
  rep: number,
  p: MigrationParams,
  noise: ForeignLoad,
  log: (m: string) => void,
  live: Set<GuestSession>,
): Promise<MigrationSample[]> {
  const samples: MigrationSample[] = [];
  const eps = [t.endpoint('shm', p.queues, 0), t.endpoint('shm', p.queues, 1)];
  const sockets: string[] = [];
  for (const ep of eps) {
    if ('unavailable' in ep) {
      for (const c of p.cases) samples.push({ target: kind, case: c, repeat: rep, status: 'error', from: 'a', to: 'b', reason: ep.unavailable, foreignCores: 0 });
      return samples;
    }
    sockets.push(ep.socket);
  }
  const devices = (side: number) => vhostUserBlkArgs(sockets[side] as string, { id: 'disk0', numQueues: p.queues });
  const names = ['a', 'b'];
  let side = 0;
  let g: GuestSession | undefined;
  let pending = [...p.cases];
  const fail = (reason: string) => {
    for (const c of pending) samples.push({ target: kind, case: c, repeat: rep, status: 'error', from: names[side] as string, to: names[1 - side] as string, reason, foreignCores: 0 });
    pending = [];
  };
  try {
    g = await GuestSession.start({
      name: `bench-mig-${kind}-${rep}`,
      memMiB: p.memMiB,
      smp: p.smp,
      timeoutMs: 600_000,
      script: guestScript('migrate-busy.sh'),
      env: { IODEPTH: String(p.fio.iodepth), RWMIX: String(p.fio.rwmixread), MAX_S: '600' },
      devices: devices(0),
    });
    live.add(g);
    const guest = g;
    await guest.waitForMark('ready', 120_000);
    const migrate = async (c: MigrationCase): Promise<MigrationSample> => {
      const from = names[side] as string;
      const to = names[1 - side] as string;
      noise.begin();
      let m: MigrationResult;
      try {
        m = await migrateGuest(guest, { devices: devices(1 - side), maxBandwidth: p.maxBandwidth, downtimeLimitMs: p.downtimeLimitMs, timeoutMs: 180_000 });
      } catch (e) {
        // The harness gave up (timeout, destination would not start): where the guest is now is unknown.
        throw new Error(`${c} migration ${from}->${to}: ${errText(e)}`);
      }
      const foreignCores = noise.end();
      if (m.status === 'completed') side = 1 - side;
      const ram = m.info.ram;
      const s: MigrationSample = {
        target: kind,
        case: c,
        repeat: rep,
        status: m.status,
        from,
        to,
        totalTimeMs: m.totalTimeMs,
        downtimeMs: m.downtimeMs,
        setupTimeMs: m.setupTimeMs,
        ramMiB: ram ? Math.round((ram.transferred / MiB) * 10) / 10 : undefined,
        ramPasses: ram?.['dirty-sync-count'],
        mbps: ram ? Math.round(ram.mbps) : undefined,
        destStatus: m.destStatus,
        reason: m.status === 'completed' ? (m.destStatus === 'running' ? undefined : `destination ${m.destStatus}`) : (m.error ?? m.status),
        foreignCores,
      };
      log(
        `migration [${rep + 1}/${p.repeat}] ${kind.padEnd(6)} ${c}: ${s.status}, total ${s.totalTimeMs} ms, downtime ${s.downtimeMs} ms, setup ${s.setupTimeMs} ms, ` +
          `${s.ramMiB} MiB in ${s.ramPasses} passes${s.reason ? ` (${s.reason})` : ''}`,
      );
      pending = pending.filter((x) => x !== c);
      samples.push(s);
      return s;
    };
    if (p.cases.includes('idle')) {
      await sleep(p.idleSettleMs);
      await migrate('idle');
    }
    let busy: MigrationSample | undefined;
    /**
     * Sends `line` until the guest answers with `answer` (15 s each, 4 tries). Before
     * migrate-busy.sh kept partial reads, a line sent right after a migration was now and then
     * lost (bash's `read -t` on the raw port drops what it read when it times out mid-line): if
     * that comes back, it shows here and in the sample's reason.
     */
    const tell = async (line: string, answer: RegExp): Promise<void> => {
      for (let tries = 1; ; tries++) {
        guest.send(line);
        try {
          await guest.waitFor(answer, 15_000);
          if (tries > 1) {
            const last = samples.at(-1);
            if (last) last.reason = [last.reason, `'${line}' sent ${tries} times after the migration`].filter(Boolean).join('; ');
          }
          return;
        } catch (e) {
          if (!guest.running || tries >= 4) throw e;
          log(`migration [${rep + 1}/${p.repeat}] ${kind}: the guest did not answer '${line}' within 15 s; sending it again`);
        }
      }
    };
    if (p.cases.includes('busy')) {
      await tell('busy', /^MARK fio-running$/);
      await sleep(p.busySettleMs);
      busy = await migrate('busy');
    }
    await tell('stop', /^RESULT (busy|fio_rc)=/);
    const r = await guest.waitExit(60_000);
    const partial = r.output.split('\n').filter((l) => l.startsWith('# partial line from the host'));
    if (partial.length > 0) log(`migration [${rep + 1}/${p.repeat}] ${kind}: the guest read a line from the host in pieces (kept): ${partial.join(' | ')}`);
    if (busy) {
      const iops = Number(r.results.fio_read_iops) + Number(r.results.fio_write_iops);
      if (Number.isFinite(iops)) busy.guestIops = Math.round(iops);
      if (r.results.fio_errors !== undefined) busy.guestFioErrors = Number(r.results.fio_errors);
      if (r.exitCode !== 0) busy.reason = [busy.reason, `guest script exited ${r.exitCode}: ${r.output.split('\n').filter((l) => l.startsWith('FAIL')).join('; ')}`].filter(Boolean).join('; ');
    }
  } catch (e) {
    log(`migration [${rep + 1}/${p.repeat}] ${kind}: ${errText(e)}`);
    const tailOf = (text: string, n: number) => text.trimEnd().split('\n').slice(-n);
    const guestTail = g ? { output: tailOf(g.output, 20), console: tailOf(g.console, 20), qemuStderr: tailOf(g.stderr, 20) } : undefined;
    if (guestTail) log(`  guest output (last lines): ${guestTail.output.slice(-6).join(' | ')}`);
    // After the last migration (the guest did not finish cleanly): the numbers stand, noted.
    const last = samples.at(-1);
    if (pending.length === 0 && last) {
      last.reason = [last.reason, `afterwards: ${errText(e)}`].filter(Boolean).join('; ');
      last.guestTail = guestTail;
    }
    fail(errText(e));
    for (const s of samples) if (s.status === 'error' && !s.guestTail) s.guestTail = guestTail;
  } finally {
    await g?.kill();
    if (g) live.delete(g);
  }
  return samples;
}

const range = (xs: number[]): [number, number] | undefined => (xs.length ? [Math.min(...xs), Math.max(...xs)] : undefined);
const defined = (xs: Array<number | undefined>): number[] => xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));

export function summarizeMigrations(samples: MigrationSample[], targets: TargetKind[], cases: MigrationCase[], unavailable: Map<TargetKind, string>): MigrationSummary[] {
  const out: MigrationSummary[] = [];
  for (const c of cases) {
    for (const target of targets) {
      const mine = samples.filter((s) => s.target === target && s.case === c);
      const ok = mine.filter((s) => s.status === 'completed');
      const why = unavailable.get(target);
      const bad = mine.filter((s) => s.status !== 'completed');
      out.push({
        target,
        case: c,
        status: why ? 'unavailable' : bad.length > 0 || mine.length === 0 ? 'error' : 'ok',
        reason: why ?? (bad.length ? [...new Set(bad.map((s) => `${s.status}: ${s.reason ?? ''}`))].join('; ') : mine.length === 0 ? 'no run' : undefined),
        runs: mine.length,
        completed: ok.length,
        totalTimeMs: ok.length ? median(defined(ok.map((s) => s.totalTimeMs))) : undefined,
        totalTimeRange: range(defined(ok.map((s) => s.totalTimeMs))),
        downtimeMs: ok.length ? median(defined(ok.map((s) => s.downtimeMs))) : undefined,
        downtimeRange: range(defined(ok.map((s) => s.downtimeMs))),
        setupTimeMs: ok.length ? median(defined(ok.map((s) => s.setupTimeMs))) : undefined,
        ramMiB: ok.length ? median(defined(ok.map((s) => s.ramMiB))) : undefined,
        ramPasses: ok.length ? median(defined(ok.map((s) => s.ramPasses))) : undefined,
        guestIops: defined(mine.map((s) => s.guestIops)).length ? median(defined(mine.map((s) => s.guestIops))) : undefined,
        foreignCoresMax: Math.max(0, ...mine.map((s) => s.foreignCores)),
      });
    }
  }
  return out;
}

export function migrationPairs(summary: MigrationSummary[], cases: MigrationCase[]): MigrationPair[] {
  const out: MigrationPair[] = [];
  for (const c of cases) {
    const v = summary.find((s) => s.target === 'vhostd' && s.case === c);
    const q = summary.find((s) => s.target === 'qsd' && s.case === c);
    if (!v?.completed || !q?.completed) continue;
    out.push({
      case: c,
      totalTimeRatio: v.totalTimeMs && q.totalTimeMs ? v.totalTimeMs / q.totalTimeMs : undefined,
      downtimeRatio: v.downtimeMs && q.downtimeMs ? v.downtimeMs / q.downtimeMs : undefined,
    });
  }
  return out;
}

const fmtMs = (v: number | undefined, r?: [number, number]) =>
  v === undefined ? '—' : `${Math.round(v)}${r && r[0] !== r[1] ? ` (${Math.round(r[0])}-${Math.round(r[1])})` : ''}`;
const fmtRatio = (v: number | undefined) => (v === undefined ? '' : `${v.toFixed(2)}x`);

export const MIGRATION_HEAD = ['case', 'target', 'completed', 'total ms', 'downtime ms', 'setup ms', 'RAM MiB (passes)', 'guest fio IOPS', 'vhostd/QSD total', 'vhostd/QSD downtime', 'notes'];

export function formatMigration(r: MigrationReport): string {
  const p = r.params;
  const head = `Migration: the test guest (TCG, ${p.memMiB} MiB RAM, ${p.smp} vCPU) live-migrated between two controllers (vhostd) / two exports (QSD) of one\n` +
    `${p.diskBytes / MiB} MiB raw file on /dev/shm (vhost-user-blk, ${p.queues} queue${p.queues > 1 ? 's' : ''}), per target and repeat: idle, then busy (guest fio ${p.fio.rw} ${p.fio.bs / 1024} KiB, ${p.fio.rwmixread}% reads, QD ${p.fio.iodepth}, O_DIRECT, running through the migration).`;
  if (r.skipped) return `${head}\n  skipped: ${r.skipped}`;
  const t = new Table({ head: MIGRATION_HEAD, style: { head: [], border: [], compact: true } });
  let last = '';
  for (const s of r.summary) {
    if (last && s.case !== last) t.push(MIGRATION_HEAD.map(() => ''));
    last = s.case;
    if (s.status === 'unavailable') {
      t.push([s.case, s.target, '—', '—', '—', '—', '—', '—', '', '', s.reason ?? '']);
      continue;
    }
    const pair = s.target === 'vhostd' ? r.pairs.find((x) => x.case === s.case) : undefined;
    const notes: string[] = [];
    if (s.status === 'error') notes.push(`ERROR: ${s.reason}`);
    if (s.foreignCoresMax >= 0.1) notes.push(`other load ${s.foreignCoresMax.toFixed(1)}`);
    const fioErr = r.samples.filter((x) => x.target === s.target && x.case === s.case).reduce((n, x) => n + (x.guestFioErrors ?? 0), 0);
    if (fioErr > 0) notes.push(`${fioErr} fio errors`);
    const after = r.samples.filter((x) => x.target === s.target && x.case === s.case && x.status === 'completed' && x.reason).length;
    if (after > 0) notes.push(`${after} run(s) with trouble after the migration (JSON: reason)`);
    t.push([
      s.case,
      s.target,
      `${s.completed}/${s.runs}`,
      fmtMs(s.totalTimeMs, s.totalTimeRange),
      fmtMs(s.downtimeMs, s.downtimeRange),
      fmtMs(s.setupTimeMs),
      s.ramMiB === undefined ? '—' : `${s.ramMiB.toFixed(0)} (${s.ramPasses ?? '?'})`,
      s.guestIops === undefined ? '' : Math.round(s.guestIops).toLocaleString('en-US'),
      fmtRatio(pair?.totalTimeRatio),
      fmtRatio(pair?.downtimeRatio),
      notes.join('; '),
    ]);
  }
  const legend =
    `QEMU's query-migrate on the source: total-time, downtime (guest paused: last RAM round, device state, vhost-user rings stopped) and setup-time; medians over\n` +
    `${p.repeat} repeat(s) (min-max in brackets), alternating targets; ratios are vhostd median / QSD median (lower is better for vhostd). Same parameters for both:\n` +
    `max-bandwidth ${(p.maxBandwidth / MiB).toFixed(0)} MiB/s, downtime-limit ${p.downtimeLimitMs} ms; idle migrated ${p.idleSettleMs / 1000} s after boot, busy ${p.busySettleMs / 1000} s after fio started. Targets on core ${p.targetCore}\n` +
    `(as the I/O rows), both QEMUs and the bench on CPU(s) ${p.qemuCpus}. "guest fio IOPS": reads+writes per second over fio's whole run (migration included). "other load":\n` +
    `cores used by processes other than the bench, its targets and its QEMUs during a migration (max).`;
  return `${head}\n${t.toString()}\n${legend}`;
}
