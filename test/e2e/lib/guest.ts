// End-to-end test harness: boots the tiny test guest (test/guest/mkguest.sh) under QEMU/TCG with
// shareable guest memory, runs a shell script in it, and reports what the script printed.
//
//   const r = await runGuest({ script: guestScript('blk-geometry.sh'), devices: vhostUserBlkArgs(sock) });
//   assert.equal(r.exitCode, 0); assert.equal(r.results.size_bytes, String(64 << 20));
//
// Two serial ports: ttyS0 is the kernel console (`console`), ttyS1 carries only the guest script's
// stdout/stderr plus the init's markers (`output`), so kernel messages can never split a RESULT
// line. ttyS1 is a unix socket the harness listens on; it also carries lines from the host to the
// guest (GuestSession.send, read by the guest's `wait_host`).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { QmpClient } from './qmp.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const MKGUEST = path.join(REPO_ROOT, 'test/guest/mkguest.sh');
export const GUEST_SCRIPTS_DIR = path.join(REPO_ROOT, 'test/e2e/guest-scripts');
const GUEST_LIB = path.join(GUEST_SCRIPTS_DIR, 'lib/guest-lib.sh');

/** Multiplies every default and explicit timeout (slow CI machines): VHOSTD_E2E_TIMEOUT_SCALE=2. */
export const TIMEOUT_SCALE = Math.max(0.1, Number(process.env.VHOSTD_E2E_TIMEOUT_SCALE ?? '1') || 1);
const DEFAULT_TIMEOUT_MS = 180_000;
/** A guest reaches init in a few seconds under TCG; one that printed nothing by then is hung. */
const BOOT_DEADLINE_MS = 60_000;

export interface GuestImage {
  kernel: string;
  initrd: string;
  /** the guest cache directory (VHOSTD_GUEST_DIR, default /tmp/vhostd-guest) */
  dir: string;
}

let imagePromise: Promise<GuestImage> | undefined;

/**
 * Builds the guest kernel + base initramfs, or reuses the cached build (mkguest.sh decides; a
 * no-op costs ~20 ms). Runs mkguest.sh at most once per process.
 */
export function buildGuest(opts: { force?: boolean } = {}): Promise<GuestImage> {
  if (imagePromise && !opts.force) return imagePromise;
  imagePromise = new Promise<GuestImage>((resolve, reject) => {
    const child = spawn('bash', [MKGUEST, 'build', ...(opts.force ? ['--force'] : [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      process.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      const [kernel, initrd] = last.split(' ');
      if (code !== 0 || !kernel || !initrd) {
        reject(new Error(`mkguest.sh failed (exit ${code}):\n${err}${out}`));
        return;
      }
      resolve({ kernel, initrd, dir: path.dirname(initrd) });
    });
  });
  imagePromise.catch(() => {
    imagePromise = undefined;
  });
  return imagePromise;
}

/**
 * The bytes guest-lib.sh's `pattern_chunk SEED OFFSET LEN` produces, for checking on the host
 * (e.g. in a backend's image file) what a guest script wrote.
 */
export function patternChunk(seed: string, offset: number, len: number): Buffer {
  const line = `vhostd pattern seed=${seed} offset=${offset} 0123456789abcdefghijklmnopqrstuvwxyz\n`;
  return Buffer.from(line.repeat(Math.ceil(len / line.length))).subarray(0, len);
}

/** Text of test/e2e/guest-scripts/<name>. */
export function guestScript(name: string): string {
  return fs.readFileSync(path.join(GUEST_SCRIPTS_DIR, name), 'utf8');
}

export interface GuestOptions {
  /** Shell script text (bash, POSIX style) run as `sh /vhostd/test.sh ...args` in the guest. */
  script: string;
  /** Exported in the guest before the script runs. */
  env?: Record<string, string>;
  /** Positional arguments of the script. */
  args?: string[];
  /** Extra QEMU arguments, e.g. vhostUserBlkArgs('/tmp/x/vhost.0', { numQueues: 2 }). */
  devices?: string[];
  /** Guest RAM in MiB (default 512). */
  memMiB?: number;
  /** vCPUs (default 2). */
  smp?: number;
  /** Hard limit for the whole run, boot to power-off (default 180 s, times VHOSTD_E2E_TIMEOUT_SCALE). */
  timeoutMs?: number;
  /** 'memfd' (default) or 'hugepages' (a hugetlbfs mount with enough free pages is required). */
  memBackend?: 'memfd' | 'hugepages';
  /** Appended to the kernel command line. */
  kernelArgs?: string;
  /** Label used in logs and error messages. */
  name?: string;
  /** Write console/output/stderr logs here (default: $VHOSTD_E2E_LOG_DIR, else none). */
  logDir?: string;
}

export interface GuestResult {
  /** The guest script's exit status, from its VHOSTD-GUEST-EXIT marker. */
  exitCode: number;
  /** `RESULT key=value` lines the script printed (a repeated key keeps the last value). */
  results: Record<string, string>;
  /** Names from `MARK name` lines, in order. */
  marks: string[];
  /** The guest script's stdout+stderr and the init's markers (ttyS1), '\r' removed. */
  output: string;
  /** The serial console (ttyS0): firmware and kernel messages. */
  console: string;
  /** QEMU's own stderr (vhost-user errors show up here). */
  stderr: string;
  /** QEMU start to exit, in ms. */
  durationMs: number;
  /** Guest uptime at script start / end (s), from the init's markers. */
  guestStartS?: number;
  guestEndS?: number;
}

export class GuestError extends Error {
  constructor(
    message: string,
    readonly reason: 'timeout' | 'no-exit-marker' | 'qemu-failed' | 'killed' | 'wait-failed',
    readonly output: string,
    readonly console: string,
    readonly stderr: string,
  ) {
    super(`${message}\n${describeLogs(output, console, stderr)}`);
    this.name = 'GuestError';
  }
}

function tail(text: string, lines: number): string {
  const l = text.trimEnd().split('\n');
  return (l.length > lines ? [`... (${l.length - lines} earlier lines)`, ...l.slice(-lines)] : l).join('\n');
}

function describeLogs(output: string, console: string, stderr: string): string {
  return [
    `--- guest output (ttyS1), tail ---\n${tail(output, 80)}`,
    `--- guest console (ttyS0), tail ---\n${tail(console, 40)}`,
    `--- qemu stderr ---\n${tail(stderr, 40)}`,
  ].join('\n');
}

/** Throws with the guest's logs attached unless the script exited 0. */
export function assertGuestOk(r: GuestResult, what = 'guest script'): void {
  if (r.exitCode !== 0) {
    throw new Error(`${what} exited ${r.exitCode}\n${describeLogs(r.output, r.console, r.stderr)}`);
  }
}

/** QEMU args for a vhost-user-blk-pci disk connected to `socketPath`. */
export function vhostUserBlkArgs(
  socketPath: string,
  opts: { id?: string; numQueues?: number; queueSize?: number; reconnectS?: number; extra?: string } = {},
): string[] {
  const id = opts.id ?? `vub${blkCounter++}`;
  const chardev = [`socket,id=${id}-chr,path=${socketPath}`];
  if (opts.reconnectS !== undefined) chardev.push(`reconnect=${opts.reconnectS}`);
  const dev = [`vhost-user-blk-pci,id=${id},chardev=${id}-chr`];
  if (opts.numQueues !== undefined) dev.push(`num-queues=${opts.numQueues}`);
  if (opts.queueSize !== undefined) dev.push(`queue-size=${opts.queueSize}`);
  if (opts.extra) dev.push(opts.extra);
  return ['-chardev', chardev.join(','), '-device', dev.join(',')];
}
let blkCounter = 0;

/** QEMU args for a vhost-user-scsi-pci controller connected to `socketPath`. */
export function vhostUserScsiArgs(
  socketPath: string,
  opts: { id?: string; numQueues?: number; reconnectS?: number; extra?: string } = {},
): string[] {
  const id = opts.id ?? `vus${blkCounter++}`;
  const chardev = [`socket,id=${id}-chr,path=${socketPath}`];
  if (opts.reconnectS !== undefined) chardev.push(`reconnect=${opts.reconnectS}`);
  const dev = [`vhost-user-scsi-pci,id=${id},chardev=${id}-chr`];
  if (opts.numQueues !== undefined) dev.push(`num_queues=${opts.numQueues}`);
  if (opts.extra) dev.push(opts.extra);
  return ['-chardev', chardev.join(','), '-device', dev.join(',')];
}

/** Everything that makes up a guest's QEMU except its per-process sockets (lib/migration.ts). */
export interface QemuLaunchSpec {
  name: string;
  smp: number;
  memMiB: number;
  /** the -object of the guest RAM backend (id=mem, share=on) */
  memObject: string;
  kernel: string;
  initrd: string;
  append: string;
  devices: string[];
}

/**
 * The QEMU command line (without the binary) for `spec`, with ttyS1 connecting to `chanPath`
 * and QMP listening on `qmpPath`. A migration destination uses the same spec with its own
 * sockets and devices (the machine must be identical, device order included).
 */
export function qemuArgs(spec: QemuLaunchSpec, sockets: { chanPath: string; qmpPath: string }, extra: string[] = []): string[] {
  return [
    '-name', `vhostd-e2e-${spec.name}`,
    '-accel', 'tcg,thread=multi',
    '-cpu', 'max',
    '-smp', String(spec.smp),
    '-m', `${spec.memMiB}M`,
    '-object', spec.memObject,
    '-numa', 'node,memdev=mem',
    '-nographic', '-nodefaults', '-no-reboot',
    '-serial', 'stdio',
    '-chardev', `socket,id=vhostd-chan,path=${sockets.chanPath}`,
    '-serial', 'chardev:vhostd-chan',
    '-qmp', `unix:${sockets.qmpPath},server=on,wait=off`,
    '-kernel', spec.kernel,
    '-initrd', spec.initrd,
    '-append', spec.append,
    ...spec.devices,
    ...extra,
  ]; // prettier-ignore
}

// ---------------------------------------------------------------------------------------------
// per-test overlay initramfs (newc cpio), appended to the base

function cpioEntry(name: string, mode: number, data: Buffer, ino: number): Buffer {
  const nameBuf = Buffer.from(`${name}\0`);
  const fields = [ino, mode, 0, 0, mode & 0o040000 ? 2 : 1, 1_700_000_000, data.length, 0, 0, 0, 0, nameBuf.length, 0];
  const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`);
  const pad1 = Buffer.alloc((4 - ((header.length + nameBuf.length) % 4)) % 4);
  const pad2 = Buffer.alloc((4 - (data.length % 4)) % 4);
  return Buffer.concat([header, nameBuf, pad1, data, pad2]);
}

export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The overlay archive: /vhostd/{test.sh,lib.sh,test.env}. Exported for tests of the harness. */
export function makeOverlay(script: string, env: Record<string, string> = {}, args: string[] = []): Buffer {
  let envText = '';
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad env name ${k}`);
    envText += `export ${k}=${shellQuote(v)}\n`;
  }
  envText += `set -- ${args.map(shellQuote).join(' ')}\n`;
  return Buffer.concat([
    cpioEntry('vhostd', 0o040755, Buffer.alloc(0), 1),
    cpioEntry('vhostd/lib.sh', 0o100644, fs.readFileSync(GUEST_LIB), 2),
    cpioEntry('vhostd/test.env', 0o100644, Buffer.from(envText), 3),
    cpioEntry('vhostd/test.sh', 0o100755, Buffer.from(script), 4),
    cpioEntry('TRAILER!!!', 0, Buffer.alloc(0), 0),
  ]);
}

// ---------------------------------------------------------------------------------------------
// process bookkeeping: no QEMU outlives the test process

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

let setprivOk: boolean | undefined;
/**
 * Spawns `cmd args` so that it is SIGKILLed by the kernel if this process dies, however it dies
 * (util-linux setpriv --pdeathsig; exec'd, so the pid is the command's own).
 */
export function spawnTied(cmd: string, args: string[], opts: Parameters<typeof spawn>[2] = {}): ChildProcess {
  setprivOk ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true']).status === 0;
  const child = setprivOk
    ? spawn('setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args], opts)
    : spawn(cmd, args, opts);
  track(child);
  return child;
}

/** Short temp dirs: unix socket paths must stay under 108 bytes. */
export async function makeTempDir(prefix: string): Promise<string> {
  const base = os.tmpdir().length < 40 ? os.tmpdir() : '/tmp';
  return fsp.mkdtemp(path.join(base, prefix));
}

function keepTemp(): boolean {
  return process.env.VHOSTD_E2E_KEEP === '1';
}

function hugetlbfsMount(): string | undefined {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n');
  return mounts.map((l) => l.split(' ')).find((f) => f[2] === 'hugetlbfs')?.[1];
}

let sessionCounter = 0;

// ---------------------------------------------------------------------------------------------

/**
 * A running guest. Lets a test wait for lines the guest prints while it acts on the host
 * (hot-plug, daemon restarts, ...), talk to QEMU over QMP, then collect the result.
 *
 *   await using g = await GuestSession.start({ script, devices });
 *   await g.waitFor('MARK ready');   // or g.waitForMark('ready')
 *   await g.qmp('device_del', { id: 'vub0' });
 *   g.send('go');                    // releases `wait_host go` in the guest
 *   const r = await g.waitExit();
 */
export class GuestSession {
  readonly name: string;
  private readonly lines: string[] = [];
  private partial = '';
  private cursor = 0;
  private consoleText = '';
  private stderrText = '';
  private outputText = '';
  private chan: net.Socket | undefined;
  private readonly waiters = new Set<() => void>();
  private exited = false;
  private killReason: GuestError['reason'] | undefined;
  private readonly startedAt = Date.now();
  private readonly exitPromise: Promise<GuestResult>;
  private qmpClient: Promise<QmpClient> | undefined;
  private hardTimer: NodeJS.Timeout | undefined;

  /** QEMU processes this session ran before a migration moved the guest away (see adoptQemu). */
  private readonly retired: Array<{ child: ChildProcess; dir: string; server: net.Server }> = [];
  /** Lines from the new QEMU's channel held back until the old one's last bytes are read. */
  private chanHold: string[] | undefined;
  private qmpPath: string;
  /** the temp dir of the QEMU running the guest now (`dir` is the first one's) */
  private currentDir: string;
  /** How this session's QEMU was started, for a migration destination (lib/migration.ts). */
  private launchSpec: QemuLaunchSpec | undefined;

  private constructor(
    private child: ChildProcess,
    readonly dir: string,
    private server: net.Server,
    private chanClosed: Promise<void>,
    private readonly logDir: string | undefined,
    timeoutMs: number,
    name: string,
  ) {
    this.name = name;
    this.qmpPath = path.join(dir, 'qmp.sock');
    this.currentDir = dir;
    this.watchOutput(child);
    this.hardTimer = setTimeout(() => {
      this.killReason = 'timeout';
      void this.kill();
    }, timeoutMs);
    this.exitPromise = new Promise<GuestResult>((resolve, reject) => {
      let finalized = false;
      const finalize = (code: number | null, signal: NodeJS.Signals | null) => {
        if (finalized) return;
        finalized = true;
        void (async () => {
          this.exited = true;
          clearTimeout(this.hardTimer);
          // the chardev socket may still hold the last bytes the guest sent
          await Promise.race([this.chanClosed, new Promise((r) => setTimeout(r, 1000))]);
          this.releaseChanHold();
          this.flushPartial();
          this.notify();
          this.chan?.destroy();
          this.server.close();
          if (this.qmpClient) void this.qmpClient.then((q) => q.close(), () => {});
          for (const r of this.retired) {
            r.child.kill('SIGKILL');
            r.server.close();
          }
          await this.saveLogs();
          if (!keepTemp()) {
            for (const d of [this.currentDir, ...this.retired.map((r) => r.dir)]) await fsp.rm(d, { recursive: true, force: true }).catch(() => {});
          }
          const durationMs = Date.now() - this.startedAt;
          const exitLine = [...this.lines].reverse().find((l) => l.startsWith('VHOSTD-GUEST-EXIT '));
          const m = exitLine?.match(/^VHOSTD-GUEST-EXIT rc=(\d+)(?: uptime=([\d.]+))?/);
          if (this.killReason) {
            const what = this.killReason === 'timeout' ? `timed out after ${timeoutMs} ms` : 'was killed';
            reject(new GuestError(`guest ${name} ${what}`, this.killReason, this.outputText, this.consoleText, this.stderrText));
          } else if (!m) {
            const how = signal ? `signal ${signal}` : `exit code ${code}`;
            reject(
              new GuestError(
                `guest ${name}: QEMU ended (${how}) without the guest's VHOSTD-GUEST-EXIT marker`,
                code === 0 ? 'no-exit-marker' : 'qemu-failed',
                this.outputText,
                this.consoleText,
                this.stderrText,
              ),
            );
          } else {
            const start = this.lines.find((l) => l.startsWith('VHOSTD-GUEST-START'))?.match(/uptime=([\d.]+)/);
            resolve({
              exitCode: Number(m[1]),
              results: this.results,
              marks: this.marks,
              output: this.outputText,
              console: this.consoleText,
              stderr: this.stderrText,
              durationMs,
              guestStartS: start ? Number(start[1]) : undefined,
              guestEndS: m[2] ? Number(m[2]) : undefined,
            });
          }
        })();
      };
      this.finalize = finalize;
      this.watchExit(child);
    });
    // waitExit() may be called late; never let an early rejection go unhandled
    this.exitPromise.catch(() => {});
  }

  private finalize: (code: number | null, signal: NodeJS.Signals | null) => void = () => {};

  private watchOutput(child: ChildProcess): void {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      this.consoleText += d.replaceAll('\r', '');
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      this.stderrText += d;
    });
  }

  /** The session ends when its current QEMU does (not one a migration moved the guest away from). */
  private watchExit(child: ChildProcess): void {
    child.once('close', (code, signal) => {
      if (child === this.child) this.finalize(code, signal);
    });
    child.once('error', (e) => {
      this.stderrText += `\nspawn error: ${e.message}`;
      // a process that never started emits no 'close'
      if (child.pid === undefined && child === this.child) this.finalize(null, null);
    });
  }

  /** How this session's QEMU was started (lib/migration.ts builds a destination from it). */
  get launch(): QemuLaunchSpec {
    if (!this.launchSpec) throw new Error(`guest ${this.name}: no launch spec`);
    return this.launchSpec;
  }

  /** The QMP socket of the QEMU currently running the guest. */
  get qmpSocket(): string {
    return this.qmpPath;
  }

  /**
   * Makes `next` (a QEMU that took the guest over by live migration: lib/migration.ts) this
   * session's QEMU: its console, stderr, ttyS1 channel (`chan`, already accepted on `server`)
   * and QMP socket replace the old ones, and the session now ends when `next` exits. Lines from
   * the new channel are held back until the old channel closes, so that output the source sent
   * just before it stopped comes first. The old QEMU is not stopped here (the caller quits it);
   * it is killed when the session ends, and its directory removed then. `consoleSoFar` /
   * `stderrSoFar`: what `next` printed before the switch.
   */
  adoptQemu(next: {
    child: ChildProcess;
    dir: string;
    server: net.Server;
    chan: net.Socket;
    qmpSocket: string;
    consoleSoFar?: string;
    stderrSoFar?: string;
  }): void {
    if (this.exited) throw new Error(`guest ${this.name} has already ended`);
    const old = { child: this.child, dir: this.currentDir, server: this.server };
    const oldChan = this.chan;
    this.retired.push(old);
    this.child = next.child;
    this.server = next.server;
    this.currentDir = next.dir;
    this.consoleText += `\n--- migrated: console of the destination QEMU (pid ${next.child.pid}) ---\n${(next.consoleSoFar ?? '').replaceAll('\r', '')}`;
    this.stderrText += `\n--- migrated: stderr of the destination QEMU (pid ${next.child.pid}) ---\n${next.stderrSoFar ?? ''}`;
    this.watchOutput(next.child);
    this.watchExit(next.child);
    if (this.qmpClient) void this.qmpClient.then((q) => q.close(), () => {});
    this.qmpClient = undefined;
    this.qmpPath = next.qmpSocket;
    // the old channel's remaining bytes first, then the new channel's (the source is paused for
    // good: whatever it still sends was written before the switch; its channel closes when it
    // exits, and at the latest 1 s after that, or 10 s from now, the held lines are let through)
    if (oldChan && !oldChan.destroyed) {
      this.chanHold = [];
      const release = () => this.releaseChanHold();
      oldChan.once('close', release);
      old.child.once('close', () => setTimeout(release, 1000).unref());
      setTimeout(release, 10_000).unref();
    }
    let closedResolve!: () => void;
    this.chanClosed = new Promise<void>((r) => {
      closedResolve = r;
    });
    this.chan = next.chan;
    next.chan.setEncoding('utf8');
    next.chan.on('data', (d: string) => {
      if (this.chanHold) this.chanHold.push(d);
      else this.onChan(d);
    });
    next.chan.on('error', () => {});
    next.chan.on('close', () => closedResolve());
    if (next.chan.destroyed) closedResolve();
  }

  private releaseChanHold(): void {
    const held = this.chanHold;
    if (!held) return;
    this.chanHold = undefined;
    for (const d of held) this.onChan(d);
  }

  /**
   * Boots a guest; resolves once its kernel has reached init (the VHOSTD-GUEST-BOOT line) or QEMU
   * has ended. A guest that prints nothing at all for BOOT_DEADLINE_MS is started again, once:
   * under TCG a kernel occasionally never gets to init (seen once in nine CI runs), and nothing of
   * vhostd is involved before init loads the virtio modules, so this retries the emulator only.
   */
  static async start(opts: GuestOptions): Promise<GuestSession> {
    const first = await GuestSession.launch(opts);
    if (await first.bootedWithin(BOOT_DEADLINE_MS * TIMEOUT_SCALE)) return first;
    console.log(
      `# guest ${first.name}: no output from its kernel within ${BOOT_DEADLINE_MS / 1000} s; starting QEMU again (once). ` +
        `QEMU stderr: ${JSON.stringify(first.stderrText.slice(-300))}`,
    );
    await first.kill();
    return GuestSession.launch(opts);
  }

  /** True once the guest printed its boot line or QEMU ended; false if neither within `ms`. */
  private bootedWithin(ms: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const check = (): boolean => {
        if (this.exited || this.lines.some((l) => l.startsWith('VHOSTD-GUEST-BOOT'))) {
          this.waiters.delete(check);
          clearTimeout(timer);
          resolve(true);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(false);
      }, ms);
      if (!check()) this.waiters.add(check);
    });
  }

  private static async launch(opts: GuestOptions): Promise<GuestSession> {
    const image = await buildGuest();
    const name = opts.name ?? `guest${sessionCounter++}`;
    const mem = opts.memMiB ?? 512;
    const smp = opts.smp ?? 2;
    const timeoutMs = (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) * TIMEOUT_SCALE;
    const dir = await makeTempDir('vhostd-g-');
    try {
      // base + zero padding to a 4-byte boundary + overlay (the kernel unpacks both in order)
      const initrd = path.join(dir, 'initrd');
      await fsp.copyFile(image.initrd, initrd);
      const size = (await fsp.stat(initrd)).size;
      const overlay = makeOverlay(opts.script, opts.env, opts.args);
      await fsp.appendFile(initrd, Buffer.concat([Buffer.alloc((4 - (size % 4)) % 4), overlay]));

      let memObject: string;
      if ((opts.memBackend ?? 'memfd') === 'hugepages') {
        const mnt = hugetlbfsMount();
        if (!mnt) throw new Error('memBackend hugepages: no hugetlbfs mounted (mount -t hugetlbfs none /dev/hugepages)');
        const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
        const free = Number(meminfo.match(/HugePages_Free:\s+(\d+)/)?.[1] ?? 0);
        const pageKiB = Number(meminfo.match(/Hugepagesize:\s+(\d+) kB/)?.[1] ?? 2048);
        if (free * pageKiB < mem * 1024) {
          throw new Error(
            `memBackend hugepages: ${free} free ${pageKiB} KiB pages, the guest needs ${mem} MiB (sysctl vm.nr_hugepages=...)`,
          );
        }
        memObject = `memory-backend-file,id=mem,size=${mem}M,mem-path=${mnt},share=on,prealloc=on`;
      } else {
        memObject = `memory-backend-memfd,id=mem,size=${mem}M,share=on`;
      }

      // ttyS1: QEMU connects to this socket at startup
      const chanPath = path.join(dir, 'chan.sock');
      let resolveChan!: (s: net.Socket) => void;
      const chanConnected = new Promise<net.Socket>((r) => {
        resolveChan = r;
      });
      const server = net.createServer((s) => resolveChan(s));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(chanPath, () => resolve());
      });

      const spec: QemuLaunchSpec = {
        name,
        smp,
        memMiB: mem,
        memObject,
        kernel: image.kernel,
        initrd,
        append: `console=ttyS0 quiet panic=-1 mitigations=off vhostd.chan=ttyS1 ${opts.kernelArgs ?? ''}`.trim(),
        devices: opts.devices ?? [],
      };
      const args = qemuArgs(spec, { chanPath, qmpPath: path.join(dir, 'qmp.sock') });
      await fsp.writeFile(path.join(dir, 'cmdline'), ['qemu-system-x86_64', ...args].map(shellQuote).join(' '));
      const child = spawnTied('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });

      let chanClosedResolve!: () => void;
      const chanClosed = new Promise<void>((r) => {
        chanClosedResolve = r;
      });
      const logDir = opts.logDir ?? process.env.VHOSTD_E2E_LOG_DIR;
      const session = new GuestSession(child, dir, server, chanClosed, logDir, timeoutMs, name);
      session.launchSpec = spec;
      void chanConnected.then((s) => {
        session.chan = s;
        s.setEncoding('utf8');
        s.on('data', (d: string) => session.onChan(d));
        s.on('error', () => {});
        s.on('close', () => chanClosedResolve());
      });
      child.once('close', () => {
        // QEMU died before it ever connected
        if (!session.chan) chanClosedResolve();
      });
      return session;
    } catch (e) {
      if (!keepTemp()) await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
      throw e;
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
  get output(): string {
    return this.outputText;
  }
  get console(): string {
    return this.consoleText;
  }
  get stderr(): string {
    return this.stderrText;
  }
  get running(): boolean {
    return !this.exited;
  }
  /** RESULT key=value lines so far. */
  get results(): Record<string, string> {
    const r: Record<string, string> = {};
    for (const l of this.lines) {
      const m = l.match(/^RESULT ([^=\s]+)=(.*)$/);
      if (m) r[m[1] as string] = m[2] as string;
    }
    return r;
  }
  /** MARK names so far. */
  get marks(): string[] {
    return this.lines.filter((l) => l.startsWith('MARK ')).map((l) => l.slice(5).trim());
  }

  private onChan(d: string): void {
    const text = d.replaceAll('\r', '');
    this.outputText += text;
    this.partial += text;
    const parts = this.partial.split('\n');
    this.partial = parts.pop() ?? '';
    if (parts.length) {
      this.lines.push(...parts);
      this.notify();
    }
  }

  private flushPartial(): void {
    if (this.partial) {
      this.lines.push(this.partial);
      this.partial = '';
    }
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Waits for the next output line (after the line matched by the previous waitFor) that equals
   * `pattern` or `MARK <pattern>` (string), or matches it (RegExp). Resolves with the line.
   * Rejects if the guest exits first or after `timeoutMs` (default 120 s, scaled).
   */
  waitFor(pattern: string | RegExp, timeoutMs = 120_000): Promise<string> {
    const test =
      typeof pattern === 'string' ? (l: string) => l === pattern || l === `MARK ${pattern}` : (l: string) => pattern.test(l);
    const limit = timeoutMs * TIMEOUT_SCALE;
    return new Promise<string>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const check = (): boolean => {
        for (let i = this.cursor; i < this.lines.length; i++) {
          const line = this.lines[i] as string;
          if (test(line)) {
            this.cursor = i + 1;
            resolve(line);
            return true;
          }
        }
        if (this.exited) {
          reject(
            new GuestError(
              `guest ${this.name} ended before printing ${String(pattern)}`,
              'wait-failed',
              this.outputText,
              this.consoleText,
              this.stderrText,
            ),
          );
          return true;
        }
        return false;
      };
      if (check()) return;
      const waiter = () => {
        if (check()) {
          clearTimeout(timer);
          this.waiters.delete(waiter);
        }
      };
      timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(
          new GuestError(
            `guest ${this.name}: no line matching ${String(pattern)} within ${limit} ms`,
            'wait-failed',
            this.outputText,
            this.consoleText,
            this.stderrText,
          ),
        );
      }, limit);
      this.waiters.add(waiter);
    });
  }

  /** waitFor(`MARK ${name}`). */
  waitForMark(name: string, timeoutMs?: number): Promise<string> {
    return this.waitFor(`MARK ${name}`, timeoutMs);
  }

  /** Sends one line to the guest (read there by `wait_host NAME` from guest-lib.sh). */
  send(line: string): void {
    if (!this.chan || this.exited) throw new Error(`guest ${this.name} is not connected`);
    this.chan.write(`${line}\n`);
  }

  /** Runs a QMP command on this guest's QEMU (connects on first use; after a migration: the destination). */
  async qmp<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    return (await this.qmpConnection()).execute<T>(command, args);
  }

  /** The QMP connection (events: `(await g.qmpConnection()).waitEvent('DEVICE_DELETED')`). */
  qmpConnection(): Promise<QmpClient> {
    this.qmpClient ??= QmpClient.connect(this.qmpPath);
    return this.qmpClient;
  }

  /** Waits for QEMU to exit; resolves with the result, rejects with GuestError (see runGuest). */
  waitExit(timeoutMs?: number): Promise<GuestResult> {
    if (timeoutMs === undefined) return this.exitPromise;
    const limit = timeoutMs * TIMEOUT_SCALE;
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.exitPromise,
      new Promise<GuestResult>((_, reject) => {
        timer = setTimeout(() => {
          this.killReason = 'timeout';
          void this.kill();
          reject(new GuestError(`guest ${this.name} still running after ${limit} ms`, 'timeout', this.outputText, this.consoleText, this.stderrText));
        }, limit);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /** Kills QEMU (SIGTERM, SIGKILL after 2 s) and waits until it is gone and cleaned up. */
  async kill(): Promise<void> {
    for (const r of this.retired) r.child.kill('SIGKILL');
    if (!this.exited) {
      this.killReason ??= 'killed';
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 2000);
      await this.exitPromise.catch(() => {});
      clearTimeout(t);
    }
    await this.exitPromise.catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }

  private async saveLogs(): Promise<void> {
    if (!this.logDir) return;
    try {
      await fsp.mkdir(this.logDir, { recursive: true });
      const base = path.join(this.logDir, `${this.name}-${process.pid}-${this.startedAt}`);
      await fsp.writeFile(`${base}.output.log`, this.outputText);
      await fsp.writeFile(`${base}.console.log`, this.consoleText);
      await fsp.writeFile(`${base}.stderr.log`, this.stderrText);
      await fsp.copyFile(path.join(this.dir, 'cmdline'), `${base}.cmdline`).catch(() => {});
      for (const [i, r] of this.retired.slice(1).entries()) {
        await fsp.copyFile(path.join(r.dir, 'cmdline'), `${base}.cmdline.migration-${i + 1}`).catch(() => {});
      }
      if (this.retired.length) {
        await fsp.copyFile(path.join(this.currentDir, 'cmdline'), `${base}.cmdline.migration-${this.retired.length}`).catch(() => {});
      }
    } catch {
      // logs are best effort
    }
  }
}

/**
 * Boots a guest, runs the script, waits for power-off. Resolves with the script's exit code,
 * RESULT lines and logs; rejects with GuestError when the guest does not report an exit status
 * (timeout, kernel panic, QEMU failure such as an unreachable vhost-user socket).
 */
export async function runGuest(opts: GuestOptions): Promise<GuestResult> {
  const g = await GuestSession.start(opts);
  try {
    return await g.waitExit();
  } finally {
    await g.kill();
  }
}
