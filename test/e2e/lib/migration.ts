// Live migration of a running test guest (GuestSession) to a second QEMU on the same host.
//
//   await using g = await GuestSession.start({ script, devices: vhostUserBlkArgs(sockA, { id: 'disk0' }) });
//   await g.waitForMark('fio-running');
//   const m = await migrateGuest(g, { devices: vhostUserBlkArgs(sockB, { id: 'disk0' }) });
//   assert.equal(m.status, 'completed');   // the session now talks to the destination
//   g.send('stop');                        // ttyS1 of the destination
//
// The destination is the source's machine (same QemuLaunchSpec: memory backend, kernel, initrd,
// command line) with its own devices, its own ttyS1 socket and QMP socket, started with
// `-incoming defer` and then `migrate-incoming unix:<dir>/mig.sock`. After `completed` the
// session adopts the destination (GuestSession.adoptQemu: output, QMP, send() go there) and the
// source, paused for good, is told to quit.
//
// Device ids and order must be the same on both sides: QEMU matches device state by bus
// address, and vhost-user state (ring positions, negotiated features) travels with the device.
import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type GuestSession, TIMEOUT_SCALE, makeTempDir, qemuArgs, shellQuote, spawnTied } from './guest.js';
import { QmpClient } from './qmp.js';

/** `query-migrate`'s reply (the fields the tests look at). */
export interface MigrationInfo {
  status: string;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    duplicate: number;
    normal: number;
    'dirty-sync-count': number;
    'dirty-pages-rate': number;
    mbps: number;
    'postcopy-requests'?: number;
  };
  blocked?: boolean;
  'blocked-reasons'?: string[];
}

export interface MigrationOptions {
  /** The destination's device args (same ids and order as the source's, other sockets). */
  devices: string[];
  /** migrate-set-parameters max-bandwidth in bytes/s (default 8 GiB/s; QEMU's own default, 32 MiB/s, is far too slow). */
  maxBandwidth?: number;
  /** migrate-set-parameters downtime-limit in ms (default 500: a TCG guest dirties memory fast). */
  downtimeLimitMs?: number;
  /** Whole migration, destination start to `completed` (default 120 s, scaled). */
  timeoutMs?: number;
  /**
   * Holds the migration in its iterative phase until this resolves, then lets it converge. Called
   * once QEMU's first full pass over RAM is done (dirty-sync-count 2: every page has been sent
   * once), with the source's QMP connection; e.g. change the disk and let the guest read it
   * (migrate-dirty-read.sh). Holding = downtime-limit 1 ms and max-bandwidth throttled to
   * `holdBandwidth` after the first pass: QEMU 7.2 completes when what is left after a
   * dirty-bitmap sync is below measured bandwidth x downtime-limit, so at ~1 MiB/s any dirty page
   * keeps it going, and a guest that keeps dirtying memory keeps it going for sure. Unthrottled,
   * a TCG guest cannot dirty memory as fast as a local migration sends it and it converges
   * within a second. (downtime-limit 0 does not hold at all: QEMU then never syncs the bitmap
   * while iterating and completes right after the first pass.) The hold fails with an error if
   * the migration left `active` while this ran.
   */
  hold?: (source: QmpClient) => Promise<void>;
  /**
   * max-bandwidth of the first RAM pass of a held migration (default 128 MiB/s, ~2 s for this
   * guest). Unthrottled, the rounds right after that pass take ~15 ms and the migration can
   * converge before we see the pass end and throttle it; at 128 MiB/s the first round after it
   * resends the guest's dirtied working set (16 MiB in migrate-dirty-read.sh) for ~100 ms.
   */
  holdFirstPassBandwidth?: number;
  /** max-bandwidth while held (default 1 MiB/s). */
  holdBandwidth?: number;
  /** QEMU trace patterns for the destination (e.g. ['vhost_user_*']); lines land in its stderr. */
  destTrace?: string[];
  /** Extra destination QEMU args. */
  destExtraArgs?: string[];
}

export interface MigrationResult {
  /** 'completed', or 'failed'/'cancelled' (the guest then still runs on the source) */
  status: string;
  /** ms, from query-migrate on the source */
  totalTimeMs?: number;
  downtimeMs?: number;
  setupTimeMs?: number;
  /** the source's last query-migrate reply */
  info: MigrationInfo;
  /** the destination's `query-status` after the switch ('running' when all went well) */
  destStatus?: string;
  /** the error QEMU gave (failed migrations) */
  error?: string;
  /** QEMU stderr of the source / destination up to the switch (vhost-user complaints show up here) */
  sourceStderr: string;
  destStderr: string;
}

/** A destination QEMU waiting for the guest (`-incoming defer`). */
export class IncomingQemu {
  private consoleText = '';
  private stderrText = '';
  private exited = false;
  private readonly onStdout = (d: string) => {
    this.consoleText += d;
  };
  private readonly onStderr = (d: string) => {
    this.stderrText += d;
  };

  private constructor(
    readonly child: ChildProcess,
    readonly dir: string,
    readonly server: net.Server,
    readonly chan: Promise<net.Socket>,
    readonly qmpSocket: string,
    readonly migSocket: string,
    readonly qmp: QmpClient,
  ) {
    child.stdout?.setEncoding('utf8').on('data', this.onStdout);
    child.stderr?.setEncoding('utf8').on('data', this.onStderr);
    child.once('close', () => {
      this.exited = true;
    });
  }

  get stderr(): string {
    return this.stderrText;
  }
  get running(): boolean {
    return !this.exited && this.child.exitCode === null;
  }

  /**
   * Starts the destination for `g`: the source's machine with `devices`, ttyS1 connecting to a
   * socket of its own, QMP, `-incoming defer`; then `migrate-incoming unix:<dir>/mig.sock`.
   * QEMU's vhost-user devices connect to their back-ends while starting (the back-end must be
   * listening), well before any migration data arrives.
   */
  static async start(
    g: GuestSession,
    opts: { devices: string[]; trace?: string[]; extraArgs?: string[]; timeoutMs?: number },
  ): Promise<IncomingQemu> {
    const spec = g.launch;
    const dir = await makeTempDir('vhostd-mig-');
    const chanPath = path.join(dir, 'chan.sock');
    const qmpSocket = path.join(dir, 'qmp.sock');
    const migSocket = path.join(dir, 'mig.sock');
    let resolveChan!: (s: net.Socket) => void;
    const chan = new Promise<net.Socket>((r) => {
      resolveChan = r;
    });
    const server = net.createServer((s) => {
      s.pause();
      resolveChan(s);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(chanPath, () => resolve());
    });
    const extra = ['-incoming', 'defer', ...(opts.extraArgs ?? [])];
    for (const t of opts.trace ?? []) extra.push('-trace', t);
    const args = qemuArgs({ ...spec, devices: opts.devices }, { chanPath, qmpPath: qmpSocket }, extra);
    await fsp.writeFile(path.join(dir, 'cmdline'), ['qemu-system-x86_64', ...args].map(shellQuote).join(' '));
    const child = spawnTied('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const died = new Promise<never>((_, reject) => {
      child.once('close', (code, signal) =>
        reject(new Error(`destination QEMU ended (${signal ?? code}) before accepting the migration:\n${stderr}`)),
      );
    });
    died.catch(() => {});
    try {
      const limit = (opts.timeoutMs ?? 30_000) * TIMEOUT_SCALE;
      const qmp = await Promise.race([QmpClient.connect(qmpSocket, limit), died]);
      await Promise.race([qmp.execute('migrate-incoming', { uri: `unix:${migSocket}` }), died]);
      const inc = new IncomingQemu(child, dir, server, chan, qmpSocket, migSocket, qmp);
      inc.stderrText = stderr;
      child.stderr?.removeAllListeners('data');
      child.stderr?.on('data', inc.onStderr);
      return inc;
    } catch (e) {
      child.kill('SIGKILL');
      server.close();
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
      throw e;
    }
  }

  /** Hands the destination over to the session (after `completed`). */
  async handOver(g: GuestSession): Promise<void> {
    const chan = await Promise.race([
      this.chan,
      sleep(10_000 * TIMEOUT_SCALE).then(() => {
        throw new Error('the destination QEMU never connected its ttyS1 socket');
      }),
    ]);
    this.child.stdout?.off('data', this.onStdout);
    this.child.stderr?.off('data', this.onStderr);
    this.qmp.close();
    g.adoptQemu({
      child: this.child,
      dir: this.dir,
      server: this.server,
      chan,
      qmpSocket: this.qmpSocket,
      consoleSoFar: this.consoleText,
      stderrSoFar: this.stderrText,
    });
    chan.resume();
  }

  /** Kills it (a failed migration) and removes its directory. */
  async discard(): Promise<void> {
    this.qmp.close();
    if (this.running) {
      const gone = new Promise<void>((r) => this.child.once('close', () => r()));
      this.child.kill('SIGKILL');
      await gone;
    }
    this.server.close();
    void this.chan.then((s) => s.destroy());
    await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }
}

/** Polls query-migrate until `dirty-sync-count` reaches `n` (n = 2: the first full pass over RAM is done). */
export async function waitForRamPasses(qmp: QmpClient, n: number, timeoutMs = 60_000, pollMs = 10): Promise<MigrationInfo> {
  const deadline = Date.now() + timeoutMs * TIMEOUT_SCALE;
  for (;;) {
    const info = await qmp.execute<MigrationInfo>('query-migrate');
    if ((info.ram?.['dirty-sync-count'] ?? 0) >= n) return info;
    if (['completed', 'failed', 'cancelled'].includes(info.status)) {
      throw new Error(`migration ${info.status} before RAM pass ${n}: ${info['error-desc'] ?? ''}`);
    }
    if (Date.now() > deadline) throw new Error(`migration did not reach RAM pass ${n}: ${JSON.stringify(info)}`);
    await sleep(pollMs);
  }
}

/**
 * Resolves with `work` while the migration stays `active` (for a `hold` callback: e.g. a guest
 * acknowledgement that can only arrive from the source); rejects as soon as it is not.
 */
export async function whileMigrating<T>(qmp: QmpClient, work: Promise<T>, pollMs = 100): Promise<T> {
  let done: { value: T } | undefined;
  const watched = work.then((value) => {
    done = { value };
    return done;
  });
  for (;;) {
    const r = await Promise.race([watched, sleep(pollMs).then(() => undefined)]);
    if (r) return r.value;
    if (done) return done.value;
    const info = await qmp.execute<MigrationInfo>('query-migrate');
    if (info.status !== 'active') throw new Error(`the migration went ${info.status} while it was meant to be held`);
  }
}

/**
 * Live-migrates the guest of `g` to a new QEMU with `opts.devices`. On `completed` the session
 * continues on the destination and the source quits; on failure the destination is killed and
 * the guest keeps running on the source. Resolves with QEMU's numbers either way; rejects only
 * when something outside QEMU's migration broke (destination would not start, timeout).
 */
export async function migrateGuest(g: GuestSession, opts: MigrationOptions): Promise<MigrationResult> {
  const limit = (opts.timeoutMs ?? 120_000) * TIMEOUT_SCALE;
  const deadline = Date.now() + limit;
  const dst = await IncomingQemu.start(g, { devices: opts.devices, trace: opts.destTrace, extraArgs: opts.destExtraArgs });
  const src = await QmpClient.connect(g.qmpSocket);
  try {
    await src.execute('migrate-set-parameters', {
      'max-bandwidth': opts.hold ? (opts.holdFirstPassBandwidth ?? 128 * 1024 * 1024) : (opts.maxBandwidth ?? 8 * 1024 ** 3),
      'downtime-limit': opts.hold ? 1 : (opts.downtimeLimitMs ?? 500),
    });
    await src.execute('migrate', { uri: `unix:${dst.migSocket}` });
    if (opts.hold) {
      await waitForRamPasses(src, 2, limit, 1);
      await src.execute('migrate-set-parameters', { 'max-bandwidth': opts.holdBandwidth ?? 1024 * 1024 });
      const held = await src.execute<MigrationInfo>('query-migrate');
      if (held.status !== 'active') throw new Error(`migration hold: the migration went ${held.status} right after its first RAM pass`);
      await opts.hold(src);
      const after = await src.execute<MigrationInfo>('query-migrate');
      if (after.status !== 'active') throw new Error(`migration hold: the migration went ${after.status} while held`);
      await src.execute('migrate-set-parameters', {
        'max-bandwidth': opts.maxBandwidth ?? 8 * 1024 ** 3,
        'downtime-limit': opts.downtimeLimitMs ?? 500,
      });
    }
    let info: MigrationInfo;
    let completedAt: number | undefined;
    for (;;) {
      info = await src.execute<MigrationInfo>('query-migrate');
      // QEMU 7.2 sets `completed` before it computes total-time and downtime
      // (migration_completion, then migration_iteration_finish): a query in between reads 0 for
      // both. Ask again until they are there (a few ms; at most 2 s).
      if (info.status === 'completed' && !((info['total-time'] ?? 0) > 0)) {
        completedAt ??= Date.now();
        if (Date.now() - completedAt < 2000) {
          await sleep(5);
          continue;
        }
      }
      if (['completed', 'failed', 'cancelled'].includes(info.status)) break;
      if (Date.now() > deadline) {
        await src.execute('migrate_cancel').catch(() => {});
        throw new Error(`migration still ${info.status} after ${limit} ms: ${JSON.stringify(info)}`);
      }
      await sleep(50);
    }
    const result: MigrationResult = {
      status: info.status,
      totalTimeMs: info['total-time'],
      downtimeMs: info.downtime,
      setupTimeMs: info['setup-time'],
      info,
      error: info['error-desc'],
      sourceStderr: g.stderr,
      destStderr: dst.stderr,
    };
    if (info.status !== 'completed') {
      await dst.discard();
      return result;
    }
    // The destination starts the guest once it has loaded the last of the state.
    for (;;) {
      const st = await dst.qmp.execute<{ status: string }>('query-status');
      result.destStatus = st.status;
      if (st.status !== 'inmigrate') break;
      if (Date.now() > deadline) break;
      await sleep(20);
    }
    result.destStderr = dst.stderr;
    result.sourceStderr = g.stderr;
    await dst.handOver(g);
    // The source stays paused (postmigrate); it has nothing left to do.
    await src.execute('quit').catch(() => {});
    return result;
  } catch (e) {
    await dst.discard();
    throw e;
  } finally {
    src.close();
  }
}

/** A one-line summary for test logs. */
export function describeMigration(m: MigrationResult): string {
  const r = m.info.ram;
  return (
    `migration ${m.status}: total ${m.totalTimeMs} ms, downtime ${m.downtimeMs} ms, setup ${m.setupTimeMs} ms` +
    (r ? `, ${(r.transferred / 1048576).toFixed(1)} MiB sent, ${r['dirty-sync-count']} RAM passes, ${r.mbps.toFixed(0)} Mbit/s` : '') +
    (m.error ? `, error: ${m.error}` : '')
  );
}
