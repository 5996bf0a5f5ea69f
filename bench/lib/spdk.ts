// SPDK's vhost target as a third bench target (`--targets ...,spdk --spdk-dir DIR`): DIR is an
// SPDK build (v25.09: build/bin/vhost, build/examples/bdevperf; see ../shared/spdk/spdk-build.sh).
// Pinned like the others (taskset -c CORE and -m on the same core), its own RPC socket, one blk
// controller per bdev with --cpumask on that core. SPDK busy-polls its reactor: its CPU% is 100.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RpcClient } from '../../src/rpc/client.js';
import { type BdevKind, type BenchFiles, type Endpoint, type Target, createRowBdev } from './targets.js';

/** Why SPDK cannot be used from `dir` (undefined: it can). */
export function spdkMissing(dir: string | undefined): string | undefined {
  if (!dir) return 'no --spdk-dir (VHOSTD_BENCH_SPDK_DIR)';
  for (const f of ['build/bin/vhost', 'build/examples/bdevperf']) if (!existsSync(join(dir, f))) return `${join(dir, f)} is missing (build SPDK first)`;
  return undefined;
}

// ---- hugepages: raised when a run needs more, restored when the bench exits ----

const HP_FILE = '/proc/sys/vm/nr_hugepages';
let hpOriginal: number | undefined;

/**
 * Hugepages no one has: free and not reserved. A shared hugetlbfs mapping reserves its pages when
 * it is made and takes them from the free count only as it touches them (the load initiator's
 * guest memory, still mapped by a target after its run), so Free alone overstates what a new
 * process can get: bdevperf then failed in EAL ("Cannot init memory").
 */
function hugepagesFreeMiB(): number {
  const m = readFileSync('/proc/meminfo', 'utf8');
  const free = Number(/HugePages_Free:\s+(\d+)/.exec(m)?.[1] ?? 0);
  const reserved = Number(/HugePages_Rsvd:\s+(\d+)/.exec(m)?.[1] ?? 0);
  const size = Number(/Hugepagesize:\s+(\d+) kB/.exec(m)?.[1] ?? 2048);
  return (Math.max(0, free - reserved) * size) / 1024;
}

/** Makes sure `mib` MiB of 2 MiB hugepages are free (raising nr_hugepages; restored at exit). */
export function ensureHugepages(mib: number): void {
  const missing = mib - hugepagesFreeMiB();
  if (missing <= 0) return;
  const cur = Number(readFileSync(HP_FILE, 'utf8').trim());
  if (hpOriginal === undefined) {
    hpOriginal = cur;
    process.once('exit', () => {
      try {
        if (hpOriginal !== undefined) writeFileSync(HP_FILE, String(hpOriginal));
      } catch {
        // not ours to fix
      }
    });
  }
  writeFileSync(HP_FILE, String(cur + Math.ceil(missing / 2) + 8));
  if (hugepagesFreeMiB() < mib) throw new Error(`only ${hugepagesFreeMiB()} MiB of hugepages free, ${mib} needed`);
}

export const mask = (core: number) => `0x${(1 << core).toString(16)}`;

/** Waits for a path to exist while the process lives. */
export async function waitPath(path: string, ms: number, exited: () => boolean): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (existsSync(path)) return true;
    if (exited()) return false;
    await sleep(25);
  }
  return false;
}

export async function spdkRpc<T = unknown>(sock: string, method: string, params?: object, timeoutMs = 30_000): Promise<T> {
  const c = new RpcClient(sock, { timeoutMs });
  try {
    return await c.call<T>(method, params);
  } finally {
    c.close();
  }
}

/** Waits until an SPDK app's RPC server answers and its subsystems are initialized. */
export async function waitSpdkInit(sock: string, ms: number, exited: () => boolean): Promise<void> {
  if (!(await waitPath(sock, ms, exited))) throw new Error(exited() ? 'exited' : `no RPC socket ${sock}`);
  const until = Date.now() + ms;
  for (;;) {
    try {
      await spdkRpc(sock, 'framework_wait_init', undefined, 10_000);
      return;
    } catch (e) {
      if (exited() || Date.now() > until) throw e;
      await sleep(50);
    }
  }
}

export interface SpdkOptions {
  spdkDir: string;
  core: number;
  files: BenchFiles;
  bdevs: BdevKind[];
  /** blk controllers per bdev (default 1): bench.<kind>, then bench.<kind>.1, ... on the same bdev. */
  copies?: number;
  /** Hugepage memory for the target (-s, MiB); default 256, plus the malloc bdev's size. */
  memMiB?: number;
}

export class SpdkTarget implements Target {
  readonly kind = 'spdk';
  readonly output: string[] = [];
  private exited = false;
  readonly endpoints = new Map<string, Endpoint>();
  readonly cpumask: string;

  private constructor(
    private readonly proc: ChildProcess,
    readonly dir: string,
    readonly rpcSocket: string,
    readonly description: string,
    core: number,
  ) {
    this.cpumask = mask(core);
    for (const s of [proc.stdout, proc.stderr]) {
      let buf = '';
      s?.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        const lines = buf.split('\n');
        buf = lines.pop() ?? '';
        for (const l of lines) if (this.output.length < 20000) this.output.push(l);
      });
    }
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

  /** Starts build/bin/vhost with no bdevs; `start` adds the bench's. */
  static async launch(o: { spdkDir: string; core: number; memMiB: number }): Promise<SpdkTarget> {
    const dir = mkdtempSync(join(tmpdir(), 'vhostd-bench-spdk-'));
    const rpcSocket = join(dir, 'rpc.sock');
    ensureHugepages(o.memMiB);
    const args = ['-c', String(o.core), join(o.spdkDir, 'build/bin/vhost'), '-S', dir, '-m', mask(o.core), '-s', String(o.memMiB), '-r', rpcSocket, '--no-pci', '-d'];
    const proc = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const t = new SpdkTarget(proc, dir, rpcSocket, `SPDK vhost (${o.spdkDir}), taskset -c ${o.core}, -m ${mask(o.core)}, -s ${o.memMiB}`, o.core);
    try {
      await waitSpdkInit(rpcSocket, 30_000, () => t.exited);
    } catch (e) {
      await t.stop();
      throw new Error(`SPDK vhost did not start (${(e as Error).message}):\n${t.output.slice(-20).join('\n')}`);
    }
    return t;
  }

  static async start(o: SpdkOptions): Promise<SpdkTarget> {
    const mallocMiB = o.bdevs.includes('malloc') ? Math.ceil(o.files.sizeBytes / 1048576) : 0;
    const t = await SpdkTarget.launch({ spdkDir: o.spdkDir, core: o.core, memMiB: o.memMiB ?? 256 + mallocMiB });
    try {
      for (const b of o.bdevs) {
        const ep = await t.createBdev(b, o.files);
        t.endpoints.set(b, ep);
        for (let copy = 1; copy < (o.copies ?? 1); copy++) {
          if ('unavailable' in ep) {
            t.endpoints.set(`${b}#${copy}`, ep);
            continue;
          }
          const ctrlr = `bench.${b}.${copy}`;
          try {
            await t.controller(ctrlr, ep.bdevName ?? b);
            t.endpoints.set(`${b}#${copy}`, { socket: join(t.dir, ctrlr), label: `${ep.label}, controller ${ctrlr}` });
          } catch (e) {
            t.endpoints.set(`${b}#${copy}`, { unavailable: `not available: ${(e as Error).message}` });
          }
        }
      }
    } catch (e) {
      await t.stop();
      throw e;
    }
    return t;
  }

  rpc<T = unknown>(method: string, params?: object): Promise<T> {
    return spdkRpc<T>(this.rpcSocket, method, params);
  }

  /** A blk controller `ctrlr` (socket DIR/ctrlr) over `bdev`, on the target's core. */
  async controller(ctrlr: string, bdev: string): Promise<string> {
    await this.rpc('vhost_create_blk_controller', { ctrlr, dev_name: bdev, cpumask: this.cpumask });
    const sock = join(this.dir, ctrlr);
    if (!(await waitPath(sock, 5000, () => this.exited))) throw new Error(`no socket ${sock}`);
    return sock;
  }

  private createBdev(kind: BdevKind, files: BenchFiles): Promise<Endpoint & { bdevName?: string }> {
    return createRowBdev(kind, files, {
      rpc: (method, params) => this.rpc(method, params),
      mallocLabel: 'malloc bdev (hugepages)',
      fileBdev: async (name, file) => {
        // SPDK's aio bdev submits to block devices with RWF_NOWAIT, which zram (bio-based, no
        // nowait support) refuses: every I/O fails with EOPNOTSUPP. The loop device works.
        if (kind === 'blockdev' && /^\/dev\/zram\d+$/.test(file)) {
          return { unavailable: 'not available: SPDK aio submits with RWF_NOWAIT, which zram refuses (EOPNOTSUPP); VHOSTD_BENCH_BLOCKDEV=loop uses a loop device' };
        }
        // Block size auto-detected (zram: 4096); a regular file gets 512.
        await this.rpc('bdev_aio_create', { name, filename: file, ...(kind === 'blockdev' ? {} : { block_size: 512 }) });
        return { label: `aio ${file}` };
      },
      controller: (ctrlr, name) => this.controller(ctrlr, name),
    });
  }

  endpoint(bdev: BdevKind, _queues: number, copy = 0): Endpoint {
    return this.endpoints.get(copy === 0 ? bdev : `${bdev}#${copy}`) ?? { unavailable: 'not created' };
  }

  async info(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = { pid: this.pid, description: this.description };
    try {
      out.version = await this.rpc('spdk_get_version');
    } catch (e) {
      out.error = String(e);
    }
    return out;
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      const done = new Promise<void>((r) => this.proc.once('exit', () => r()));
      this.proc.kill('SIGINT');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
