// Starts a real vhostd process from the sources for tests: temp socket dir, RPC client, captured
// log lines, and a clean stop.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RpcClient, waitForRpcServer } from '../../src/rpc/client.js';

const root = new URL('../../', import.meta.url).pathname;

export class VhostdProcess {
  readonly logs: string[] = [];
  private exitCode: number | null | undefined;

  private constructor(
    readonly proc: ChildProcess,
    readonly dir: string,
    readonly rpcSocket: string,
  ) {
    let buf = '';
    proc.stderr?.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      this.logs.push(...lines);
      if (process.env.VHOSTD_TEST_LOG) for (const l of lines) process.stderr.write(`[vhostd] ${l}\n`);
    });
    proc.on('exit', (code) => {
      this.exitCode = code;
    });
  }

  /**
   * Starts vhostd with `args`; `dir` reuses a socket directory (restart tests); `nodeArgs` go to
   * node itself (e.g. --max-old-space-size, --expose-gc); `env` is added to this process's
   * environment (e.g. VHOSTD_TEST_NO_DIRTY_LOG=1).
   */
  static async start(
    args: string[] = [],
    opts: { dir?: string; nodeArgs?: string[]; env?: Record<string, string> } = {},
  ): Promise<VhostdProcess> {
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'vhostd-'));
    const rpcSocket = join(dir, 'spdk.sock');
    const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), '--import', 'tsx', join(root, 'src/cli/vhostd.ts'), '-S', dir, '-r', rpcSocket, ...args], {
      cwd: root,
      stdio: ['ignore', 'inherit', 'pipe'],
      ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
    });
    const d = new VhostdProcess(proc, dir, rpcSocket);
    try {
      await waitForRpcServer(rpcSocket, 20_000, () => d.exitCode !== undefined);
    } catch (e) {
      if (d.alive) proc.kill('SIGKILL');
      throw new Error(`vhostd did not start listening (${(e as Error).message}):\n${d.logs.join('\n')}`);
    }
    return d;
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  socket(ctrlr: string): string {
    return join(this.dir, ctrlr);
  }

  async rpc<T = unknown>(method: string, params?: object): Promise<T> {
    const c = new RpcClient(this.rpcSocket);
    try {
      return await c.call<T>(method, params);
    } finally {
      c.close();
    }
  }

  /** Deletes a controller once its last front-end has gone (SPDK refuses while one is connected). */
  async deleteController(ctrlr: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      try {
        await this.rpc('vhost_delete_controller', { ctrlr });
        return;
      } catch (e) {
        if ((e as { code?: number }).code !== -16) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error(`controller ${ctrlr} stayed busy`);
  }

  /** Log lines (JSON) whose msg matches. */
  logsMatching(re: RegExp): string[] {
    return this.logs.filter((l) => re.test(l));
  }

  async waitForLog(re: RegExp, timeoutMs = 5000): Promise<string> {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      const hit = this.logs.find((l) => re.test(l));
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no log line matching ${re} within ${timeoutMs} ms; last lines:\n${this.logs.slice(-10).join('\n')}`);
  }

  /** Kills the process (SIGKILL: no cleanup at all) and keeps its directory for a restart. */
  async kill(): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.kill('SIGKILL');
    await exited;
  }

  async stop(opts: { keepDir?: boolean } = {}): Promise<number | null> {
    if (this.alive) {
      const exited = new Promise<void>((r) => this.proc.once('exit', () => r()));
      this.proc.kill('SIGTERM');
      // Long enough for a clean shutdown on a loaded machine: a hang still ends as a SIGKILL (exit code null).
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    if (!opts.keepDir) rmSync(this.dir, { recursive: true, force: true });
    return this.exitCode ?? null;
  }
}
