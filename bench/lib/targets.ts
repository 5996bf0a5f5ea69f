// The targets the bench compares, each started once per bench run and pinned to one core:
// vhostd (from the TypeScript sources through tsx, or from dist/), qemu-storage-daemon (QSD,
// QEMU's reference vhost-user-blk back-end) and, given an SPDK build, SPDK's vhost (./spdk.ts).
// Each exposes one socket per (bdev kind, queue count).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LoadGenerator } from '../../src/initiator/load.js';
import { RpcClient, waitForRpcServer } from '../../src/rpc/client.js';
import { type Qcow2Kind, type QsdExportSpec, imageLabel, isQcow2Kind, prepareImage, qcow2ImagePath, qsdQcow2Args, qsdRenewImage } from './qcow2.js';

export const ROOT = new URL('../../', import.meta.url).pathname;

export type BdevKind = 'null' | 'malloc' | 'shm' | 'disk' | 'blockdev' | 'qcow2' | 'qcow2-fresh';
export const BDEV_KINDS: readonly BdevKind[] = ['null', 'malloc', 'shm', 'disk', 'blockdev', 'qcow2', 'qcow2-fresh'];
export type TargetKind = 'vhostd' | 'qsd' | 'spdk';
export const TARGET_KINDS: readonly TargetKind[] = ['qsd', 'vhostd', 'spdk'];

export interface BenchFiles {
  /** Image on /dev/shm (RAM) for the shm rows and QSD's malloc stand-in. */
  shm?: string;
  /** Image on a disk-backed file system. */
  disk?: string;
  /** A real block device (zram or a loop device with direct I/O: ./blockdev.ts). */
  blockdev?: string;
  sizeBytes: number;
  /** The qcow2 rows (./qcow2.ts): where each target's images go, the fully allocated image they copy, or why not. */
  qcow2Dir?: string;
  qcow2?: string;
  qcow2Unavailable?: string;
}

/**
 * Where a row connects, or why it cannot run. `copy` (default 0) picks another controller / export
 * of the same bdev / node when the target was started with `copies` > 1: a migration's source
 * and destination onto one device.
 */
export type Endpoint = { socket: string; label: string } | { unavailable: string };

export interface Target {
  readonly kind: TargetKind;
  readonly pid: number;
  /** One-line description for the report. */
  readonly description: string;
  endpoint(bdev: BdevKind, queues: number, copy?: number): Endpoint;
  /** Extra facts for the JSON report (versions, bdev details). */
  info(): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
  /** A new empty image under the row's bdev (`qcow2-fresh`), before each measured run. */
  renew?(bdev: BdevKind): Promise<void>;
  /** The image file of a qcow2 row (to see how much it grew). */
  imagePath?(bdev: BdevKind): string | undefined;
  /** Lines the process wrote (stderr, and stdout for vhostd's --trace-gc). */
  readonly output: string[];
}

function collect(proc: ChildProcess, out: string[], onLine?: (l: string) => void): void {
  for (const stream of [proc.stdout, proc.stderr]) {
    let buf = '';
    stream?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        if (out.length < 20000) out.push(l);
        onLine?.(l);
      }
    });
  }
}

async function stopProcess(proc: ChildProcess, exited: () => boolean): Promise<void> {
  if (exited()) return;
  const done = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await done;
  clearTimeout(timer);
}

/** Whether `cmd` is on the PATH. */
export function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Writes a device once from start to end in 128 KiB requests. */
export async function prefill(socket: string, sizeBytes: number): Promise<void> {
  const ioBytes = 128 << 10;
  const gen = await LoadGenerator.connect({ socketPath: socket, queues: 1, iodepth: 16, ioBytes });
  try {
    const r = await gen.run({ rw: 'write', requests: Math.ceil(sizeBytes / ioBytes) });
    if (r.errors) throw new Error(`pre-writing ${socket} failed: ${r.firstError}`);
  } finally {
    gen.close();
  }
}

export interface VhostdOptions {
  core: number;
  files: BenchFiles;
  bdevs: BdevKind[];
  /** Run dist/src/cli/vhostd.js (or that file under the directory given) instead of the sources through tsx. */
  dist?: boolean | string;
  /** Write V8 CPU profiles (main thread and reactor) into this directory. */
  cpuProfDir?: string;
  /** Count GCs per isolate from --trace-gc output. */
  traceGc?: boolean;
  extraArgs?: string[];
  /** blk controllers per bdev (default 1): bench.<kind>, then bench.<kind>.1, ... on the same bdev. */
  copies?: number;
}

/** GC lines of one isolate ("[pid:0xisolate] ... Scavenge ..."), counted from --trace-gc. */
export class GcCounter {
  readonly byIsolate = new Map<string, { scavenges: number; markCompacts: number; pauseMs: number }>();

  onLine(l: string): void {
    const m = /^\[\d+:(0x[0-9a-f]+)\]\s+\d+ ms: (Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Compact|Mark-Compact \(reduce\))[^,]*, ([\d.]+) \/ ([\d.]+) ms/.exec(l);
    if (!m) return;
    const s = this.byIsolate.get(m[1]) ?? { scavenges: 0, markCompacts: 0, pauseMs: 0 };
    if (m[2] === 'Scavenge') s.scavenges++;
    else s.markCompacts++;
    s.pauseMs += Number(m[3]);
    this.byIsolate.set(m[1], s);
  }

  snapshot(): Map<string, { scavenges: number; markCompacts: number; pauseMs: number }> {
    return new Map([...this.byIsolate].map(([k, v]) => [k, { ...v }]));
  }
}

export class VhostdTarget implements Target {
  readonly kind = 'vhostd';
  readonly output: string[] = [];
  readonly gc = new GcCounter();
  private exited = false;
  private readonly endpoints = new Map<string, Endpoint>();
  methods = new Set<string>();
  private cpumask = '0x1';
  private files: BenchFiles = { sizeBytes: 0 };
  /** Images of the qcow2 rows (removed at stop). */
  private readonly images = new Map<Qcow2Kind, string>();

  private constructor(
    private readonly proc: ChildProcess,
    readonly dir: string,
    readonly rpcSocket: string,
    readonly description: string,
  ) {
    collect(proc, this.output, (l) => this.gc.onLine(l));
    proc.once('exit', () => {
      this.exited = true;
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get alive(): boolean {
    return !this.exited;
  }

  static async start(o: VhostdOptions): Promise<VhostdTarget> {
    const dir = mkdtempSync(join(tmpdir(), 'vhostd-bench-'));
    const rpcSocket = join(dir, 'rpc.sock');
    const nodeArgs: string[] = [];
    if (o.cpuProfDir) {
      mkdirSync(o.cpuProfDir, { recursive: true });
      nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`);
    }
    if (o.traceGc) nodeArgs.push('--trace-gc');
    const distDir = typeof o.dist === 'string' ? o.dist : 'dist';
    const entry = o.dist ? [join(ROOT, distDir, 'src/cli/vhostd.js')] : ['--import', 'tsx', join(ROOT, 'src/cli/vhostd.ts')];
    const args = ['-c', String(o.core), process.execPath, ...nodeArgs, ...entry, '-S', dir, '-r', rpcSocket, '-m', `0x${(1 << o.core).toString(16)}`, '-L', 'info', ...(o.extraArgs ?? [])];
    const proc = spawn('taskset', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const t = new VhostdTarget(proc, dir, rpcSocket, `vhostd (${o.dist ? distDir : 'tsx sources'}), taskset -c ${o.core}, -m 0x${(1 << o.core).toString(16)}`);
    try {
      await waitForRpcServer(rpcSocket, 15_000, () => t.exited);
    } catch (e) {
      await t.stop();
      throw new Error(`vhostd did not start (${(e as Error).message}):\n${t.output.slice(-20).join('\n')}`);
    }
    t.methods = new Set(await t.rpc<string[]>('rpc_get_methods'));
    t.cpumask = `0x${(1 << o.core).toString(16)}`;
    t.files = o.files;
    for (const b of o.bdevs) {
      const ep = await t.createBdev(b, o.files);
      t.endpoints.set(b, ep);
      // More controllers on the same bdev (vhostd opens bdevs without claiming them, as SPDK).
      for (let copy = 1; copy < (o.copies ?? 1); copy++) {
        const ctrlr = `bench.${b}.${copy}`;
        if ('unavailable' in ep) {
          t.endpoints.set(`${b}#${copy}`, ep);
          continue;
        }
        try {
          await t.rpc('vhost_create_blk_controller', { ctrlr, dev_name: ep.bdevName, cpumask: t.cpumask });
          t.endpoints.set(`${b}#${copy}`, { socket: join(dir, ctrlr), label: `${ep.label}, controller ${ctrlr}` });
        } catch (e) {
          t.endpoints.set(`${b}#${copy}`, { unavailable: `not available: ${e instanceof Error ? e.message : String(e)}` });
        }
      }
    }
    return t;
  }

  async rpc<T = unknown>(method: string, params?: object): Promise<T> {
    const c = new RpcClient(this.rpcSocket, { timeoutMs: 30_000 });
    try {
      return await c.call<T>(method, params);
    } finally {
      c.close();
    }
  }

  private async createBdev(kind: BdevKind, files: BenchFiles): Promise<Endpoint & { bdevName?: string }> {
    return createRowBdev(kind, files, {
      rpc: (method, params) => this.rpc(method, params),
      mallocLabel: 'malloc bdev',
      fileBdev: async (name, file) => {
        const method = ['bdev_uring_create', 'bdev_aio_create'].find((m) => this.methods.has(m));
        if (!method) return { unavailable: 'not available: vhostd has no bdev_uring_create/bdev_aio_create' };
        // A block device's logical block size is detected (zram: 4096); a file gets 512.
        await this.rpc(method, { name, filename: file, ...(kind === 'blockdev' ? {} : { block_size: 512 }) });
        // The module logs "... created on FILE (O_DIRECT)" or "(buffered)" at info level.
        await sleep(50);
        const line = this.output.find((l) => l.includes(`created on ${file} (`));
        const mode = line ? /created on [^ ]+ \(([^)]+)\)/.exec(line)?.[1] : undefined;
        return { label: `${method.replace(/^bdev_|_create$/g, '')} ${file}${mode ? ` (${mode})` : ''}` };
      },
      qcow2Bdev: async (name, k) => {
        if (!this.methods.has('bdev_qcow2_create')) return { unavailable: 'not available: vhostd has no bdev_qcow2_create' };
        const path = qcow2ImagePath(files.qcow2Dir ?? '', 'vhostd', k);
        this.images.set(k, path);
        prepareImage(k, path, files);
        await this.rpc('bdev_qcow2_create', { name, filename: path });
        return { label: imageLabel(k, path) };
      },
      controller: async (ctrlr, name) => {
        await this.rpc('vhost_create_blk_controller', { ctrlr, dev_name: name, cpumask: this.cpumask });
        return join(this.dir, ctrlr);
      },
      afterController: async (socket) => {
        if (kind !== 'malloc') return '';
        // A fresh SharedArrayBuffer is untouched anonymous memory: the first write to each page
        // would page-fault inside the measurement. Write it once, as SPDK's pinned hugepages are.
        await prefill(socket, files.sizeBytes);
        return ' (pre-written)';
      },
    });
  }

  endpoint(bdev: BdevKind, _queues: number, copy = 0): Endpoint {
    return this.endpoints.get(copy === 0 ? bdev : `${bdev}#${copy}`) ?? { unavailable: 'not created' };
  }

  imagePath(bdev: BdevKind): string | undefined {
    return isQcow2Kind(bdev) ? this.images.get(bdev) : undefined;
  }

  /** The row's controller and qcow2 bdev go, the image is made anew, bdev and controller come back (same socket). */
  async renew(bdev: BdevKind): Promise<void> {
    const path = isQcow2Kind(bdev) ? this.images.get(bdev) : undefined;
    if (!path || !isQcow2Kind(bdev)) return;
    const ctrlr = `bench.${bdev}`;
    const name = QCOW2_BDEV_NAMES[bdev];
    // The initiator of the last run has just disconnected: the controller may still be busy (-16).
    for (let i = 0; ; i++) {
      try {
        await this.rpc('vhost_delete_controller', { ctrlr });
        break;
      } catch (e) {
        if ((e as { code?: number }).code !== -16 || i >= 100) throw e;
        await sleep(20);
      }
    }
    await this.rpc('bdev_qcow2_delete', { name });
    prepareImage(bdev, path, this.files);
    await this.rpc('bdev_qcow2_create', { name, filename: path });
    await this.rpc('vhost_create_blk_controller', { ctrlr, dev_name: name, cpumask: this.cpumask });
  }

  async info(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = { pid: this.pid, description: this.description };
    try {
      out.version = await this.rpc('spdk_get_version');
      out.bdevs = await this.rpc('bdev_get_bdevs');
    } catch (e) {
      out.error = String(e);
    }
    return out;
  }

  async stop(): Promise<void> {
    await stopProcess(this.proc, () => this.exited);
    rmSync(this.dir, { recursive: true, force: true });
    for (const p of this.images.values()) rmSync(p, { force: true });
  }
}

export interface QsdOptions {
  core: number;
  files: BenchFiles;
  bdevs: BdevKind[];
  queues: number[];
  /** cache.direct for the /dev/shm image (default on, like vhostd's file bdev when the fs allows). */
  shmDirect?: boolean;
  aio?: 'io_uring' | 'native' | 'threads';
  /** vhost-user-blk exports per node and queue count (default 1): <kind>-q<N>.sock, then <kind>-q<N>-1.sock, ... */
  copies?: number;
}

export class QsdTarget implements Target {
  readonly kind = 'qsd';
  readonly output: string[] = [];
  private exited = false;

  /** Images of the qcow2 rows (removed at stop) and the exports over each, for renew(). */
  private readonly images = new Map<Qcow2Kind, { path: string; node: string; exports: QsdExportSpec[] }>();
  private files: BenchFiles = { sizeBytes: 0 };

  private constructor(
    private readonly proc: ChildProcess,
    readonly dir: string,
    readonly description: string,
    private readonly endpoints: Map<string, Endpoint>,
    readonly cmdline: string,
  ) {
    collect(proc, this.output);
    proc.once('exit', () => {
      this.exited = true;
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  static available(): boolean {
    return hasCommand('qemu-storage-daemon');
  }

  static async start(o: QsdOptions): Promise<QsdTarget> {
    const dir = mkdtempSync(join(tmpdir(), 'vhostd-bench-qsd-'));
    const aio = o.aio ?? 'io_uring';
    const args = ['--object', 'iothread,id=iot0'];
    const endpoints = new Map<string, Endpoint>();
    const nodes = new Map<BdevKind, { node: string; label: string }>();
    const images = new Map<Qcow2Kind, { path: string; node: string; exports: QsdExportSpec[] }>();
    for (const b of o.bdevs) {
      if (isQcow2Kind(b)) {
        if (o.files.qcow2Unavailable) {
          for (const q of o.queues) endpoints.set(`${b}/${q}`, { unavailable: o.files.qcow2Unavailable });
          continue;
        }
        const path = qcow2ImagePath(o.files.qcow2Dir ?? '', 'qsd', b);
        const node = b === 'qcow2' ? 'qcow0' : 'qcowfresh0';
        prepareImage(b, path, o.files);
        images.set(b, { path, node, exports: [] });
        args.push(...qsdQcow2Args(node, path));
        nodes.set(b, { node, label: `${imageLabel(b, path).replace(/^qcow2 /, 'qcow2 over file ')}, aio=${aio}, cache.direct=on` });
        continue;
      }
      if (b === 'null') {
        args.push('--blockdev', `driver=null-co,node-name=null0,size=${o.files.sizeBytes},read-zeroes=off`);
        nodes.set('null', { node: 'null0', label: 'null-co, read-zeroes=off' });
      } else if ((b === 'shm' || b === 'malloc') && o.files.shm && !nodes.has('shm')) {
        const direct = o.shmDirect ?? true;
        args.push('--blockdev', `driver=file,node-name=shm0,filename=${o.files.shm},aio=${aio},cache.direct=${direct ? 'on' : 'off'},locking=off`);
        nodes.set('shm', { node: 'shm0', label: `file ${o.files.shm}, aio=${aio}, cache.direct=${direct ? 'on' : 'off'}` });
      } else if (b === 'disk' && o.files.disk) {
        args.push('--blockdev', `driver=file,node-name=disk0,filename=${o.files.disk},aio=${aio},cache.direct=on,locking=off`);
        nodes.set('disk', { node: 'disk0', label: `file ${o.files.disk}, aio=${aio}, cache.direct=on` });
      } else if (b === 'blockdev' && o.files.blockdev) {
        args.push('--blockdev', `driver=host_device,node-name=blk0,filename=${o.files.blockdev},aio=${aio},cache.direct=on,locking=off`);
        nodes.set('blockdev', { node: 'blk0', label: `host_device ${o.files.blockdev}, aio=${aio}, cache.direct=on` });
      }
    }
    for (const [kind, n] of nodes) {
      for (const q of o.queues) {
        for (let copy = 0; copy < (o.copies ?? 1); copy++) {
          const suffix = copy === 0 ? '' : `-${copy}`;
          const sock = join(dir, `${kind}-q${q}${suffix}.sock`);
          args.push(
            '--export',
            `type=vhost-user-blk,id=e-${kind}-q${q}${suffix},node-name=${n.node},addr.type=unix,addr.path=${sock},writable=on,num-queues=${q},iothread=iot0`,
          );
          endpoints.set(`${kind}/${q}${copy === 0 ? '' : `#${copy}`}`, { socket: sock, label: copy === 0 ? n.label : `${n.label}, export ${copy}` });
          if (isQcow2Kind(kind)) images.get(kind)?.exports.push({ id: `e-${kind}-q${q}${suffix}`, node: n.node, socket: sock, queues: q, iothread: 'iot0' });
        }
      }
    }
    if (o.bdevs.includes('malloc')) {
      // QSD has no RAM disk driver; its closest equivalent is a file on tmpfs.
      for (const q of o.queues) {
        const e = endpoints.get(`shm/${q}`);
        endpoints.set(`malloc/${q}`, e && 'socket' in e ? { socket: e.socket, label: `${e.label} (stand-in for malloc)` } : { unavailable: 'no /dev/shm image' });
      }
    }
    // A monitor to swap the empty qcow2 image between runs (renew()).
    if (images.has('qcow2-fresh')) args.push('--chardev', `socket,id=qmp0,path=${join(dir, 'qmp.sock')},server=on,wait=off`, '--monitor', 'chardev=qmp0');
    const pidfile = join(dir, 'qsd.pid');
    args.push('--pidfile', pidfile);
    const cmdline = `taskset -c ${o.core} qemu-storage-daemon ${args.join(' ')}`;
    const proc = spawn('taskset', ['-c', String(o.core), 'qemu-storage-daemon', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const t = new QsdTarget(proc, dir, `qemu-storage-daemon, iothread iot0, taskset -c ${o.core}`, endpoints, cmdline);
    for (const [k, v] of images) t.images.set(k, v);
    t.files = o.files;
    // QSD writes the pid file once every export listens.
    for (let i = 0; i < 400 && !existsSync(pidfile); i++) {
      if (t.exited) break;
      await sleep(25);
    }
    if (!existsSync(pidfile)) {
      await t.stop();
      throw new Error(`qemu-storage-daemon did not start:\n${t.output.slice(-20).join('\n')}\n${cmdline}`);
    }
    return t;
  }

  endpoint(bdev: BdevKind, queues: number, copy = 0): Endpoint {
    return this.endpoints.get(`${bdev}/${queues}${copy === 0 ? '' : `#${copy}`}`) ?? { unavailable: 'not exported' };
  }

  imagePath(bdev: BdevKind): string | undefined {
    return isQcow2Kind(bdev) ? this.images.get(bdev)?.path : undefined;
  }

  /** A new empty image under the row's exports (over QMP: exports and nodes removed and added back). */
  async renew(bdev: BdevKind): Promise<void> {
    const img = isQcow2Kind(bdev) ? this.images.get(bdev) : undefined;
    if (!img || bdev !== 'qcow2-fresh') return;
    await qsdRenewImage(join(this.dir, 'qmp.sock'), img.node, img.path, img.exports, this.files);
  }

  async info(): Promise<Record<string, unknown>> {
    let version = '';
    try {
      version = execFileSync('qemu-storage-daemon', ['--version'], { encoding: 'utf8' }).split('\n')[0];
    } catch {
      // reported as empty
    }
    return { pid: this.pid, description: this.description, version, cmdline: this.cmdline };
  }

  async stop(): Promise<void> {
    await stopProcess(this.proc, () => this.exited);
    rmSync(this.dir, { recursive: true, force: true });
    for (const i of this.images.values()) rmSync(i.path, { force: true });
  }
}

/** The bdev names of the qcow2 rows on vhostd. */
const QCOW2_BDEV_NAMES: Record<Qcow2Kind, string> = { qcow2: 'Qcow0', 'qcow2-fresh': 'QcowFresh0' };

/** How one SPDK-RPC target (vhostd, SPDK) creates the pieces of a bench row's bdev. */
export interface RowBdevOps {
  rpc(method: string, params: object): Promise<unknown>;
  mallocLabel: string;
  /** Creates bdev `name` over an image file or block device; its label, or why not. */
  fileBdev(name: string, file: string): Promise<{ label: string } | { unavailable: string }>;
  /** Creates qcow2 bdev `name` over the target's own image of row `kind` (absent: the target has no qcow2 bdev). */
  qcow2Bdev?(name: string, kind: Qcow2Kind): Promise<{ label: string } | { unavailable: string }>;
  /** Creates blk controller `ctrlr` over bdev `name`; its socket path. */
  controller(ctrlr: string, name: string): Promise<string>;
  /** After the controller exists: a suffix for the label ('' for none). */
  afterController?(socket: string): Promise<string>;
}

/** The bdev and controller of a row (`bench.<kind>`) on a target that speaks SPDK's RPCs. */
export async function createRowBdev(kind: BdevKind, files: BenchFiles, ops: RowBdevOps): Promise<Endpoint & { bdevName?: string }> {
  const numBlocks = Math.floor(files.sizeBytes / 512);
  let name: string;
  let label: string;
  let socket: string;
  try {
    switch (kind) {
      case 'null':
        name = 'Null0';
        label = 'null bdev';
        await ops.rpc('bdev_null_create', { name, num_blocks: numBlocks, block_size: 512 });
        break;
      case 'malloc':
        name = 'Malloc0';
        label = ops.mallocLabel;
        await ops.rpc('bdev_malloc_create', { name, num_blocks: numBlocks, block_size: 512 });
        break;
      case 'shm':
      case 'disk':
      case 'blockdev': {
        const file = kind === 'shm' ? files.shm : kind === 'disk' ? files.disk : files.blockdev;
        if (!file) return { unavailable: kind === 'blockdev' ? 'no block device' : 'no image file' };
        name = { shm: 'Shm0', disk: 'Disk0', blockdev: 'Blk0' }[kind];
        const made = await ops.fileBdev(name, file);
        if ('unavailable' in made) return made;
        label = made.label;
        break;
      }
      case 'qcow2':
      case 'qcow2-fresh': {
        if (files.qcow2Unavailable) return { unavailable: files.qcow2Unavailable };
        if (!ops.qcow2Bdev) return { unavailable: 'not available: no qcow2 bdev' };
        name = QCOW2_BDEV_NAMES[kind];
        const made = await ops.qcow2Bdev(name, kind);
        if ('unavailable' in made) return made;
        label = made.label;
        break;
      }
    }
    socket = await ops.controller(`bench.${kind}`, name);
    if (ops.afterController) label += await ops.afterController(socket);
  } catch (e) {
    return { unavailable: `not available: ${e instanceof Error ? e.message : String(e)}` };
  }
  return { socket, label, bdevName: name };
}
