// The composition root: reactors, bdevs, controllers and the RPC server of one vhostd process.
import { readFileSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import { BdevRegistry } from './bdev/registry.js';
import { ReactorPool, parseCpumask } from './reactor/reactor-pool.js';
import { buildMethodTable, registerMethods } from './rpc/methods/index.js';
import { RpcServer } from './rpc/server.js';
import type { RpcContext } from './services/types.js';
import { VhostService } from './services/vhost-service.js';

export const VERSION = '0.1.0';

export interface AppOptions {
  socketDir: string;
  cpumask: string;
  rpcSocket: string;
  jsonConfig?: string;
  logLevel?: string;
  /** How long an idle reactor keeps polling before it sleeps on guest kicks. */
  pollIdleUs?: number;
  /** Mode of controller and RPC sockets. */
  socketMode?: number;
  logger?: Logger;
}

interface ConfigFile {
  subsystems?: Array<{ subsystem: string; config?: Array<{ method: string; params?: unknown }> | null }>;
}

export class VhostdApp {
  private constructor(
    readonly log: Logger,
    readonly pool: ReactorPool,
    readonly bdevs: BdevRegistry,
    readonly vhost: VhostService,
    readonly rpc: RpcServer,
    readonly ctx: RpcContext,
  ) {}

  static async start(opts: AppOptions): Promise<VhostdApp> {
    const log = opts.logger ?? pino({ level: opts.logLevel ?? 'info' }, pino.destination({ fd: 2, sync: true }));
    const cores = parseCpumask(opts.cpumask);
    const pool = new ReactorPool(cores, log, opts.pollIdleUs);
    const bdevs = new BdevRegistry();
    const vhost = new VhostService({ socketDir: opts.socketDir, socketMode: opts.socketMode ?? 0o600 }, bdevs, pool, log);
    const ctx: RpcContext = { bdevs, vhost, logger: log, version: VERSION, reactors: pool };
    const rpc = new RpcServer({ socketPath: opts.rpcSocket, logger: log });
    registerMethods(rpc, ctx);
    const app = new VhostdApp(log, pool, bdevs, vhost, rpc, ctx);
    try {
      if (opts.jsonConfig) await app.loadConfig(JSON.parse(readFileSync(opts.jsonConfig, 'utf8')) as ConfigFile);
      await rpc.start();
    } catch (e) {
      await app.stop();
      throw e;
    }
    log.info({ cpumask: pool.cpumask, reactors: cores.length, rpc: opts.rpcSocket, socketDir: opts.socketDir }, 'vhostd started');
    return app;
  }

  /** Runs an RPC method in-process, exactly as the RPC server would. */
  async call(method: string, params: unknown = {}): Promise<unknown> {
    const entry = buildMethodTable(this.ctx).get(method);
    if (!entry) throw new Error(`unknown method ${method}`);
    return entry.handler(params);
  }

  /** Replays an SPDK-style JSON config: each entry is an RPC call, in file order. */
  async loadConfig(config: ConfigFile): Promise<void> {
    for (const sub of config.subsystems ?? []) {
      for (const c of sub.config ?? []) await this.call(c.method, c.params ?? {});
    }
  }

  async stop(): Promise<void> {
    await this.rpc.close().catch(() => undefined);
    await this.vhost.close();
    await this.pool.close();
    this.log.info('vhostd stopped');
  }
}
