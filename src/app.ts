// The composition root: reactors, bdevs, controllers and the RPC server of one vhostd process.
import { readFileSync } from 'node:fs';
import { cpus as onlineCpus } from 'node:os';
import { dirname, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import { BdevRegistry } from './bdev/registry.js';
import type { BackendWaitMode } from './reactor/messages.js';
import { ReactorPool, parseCpumask } from './reactor/reactor-pool.js';
import { buildMethodTable, registerMethods } from './rpc/methods/index.js';
import { markDuplicateKeys } from './util/duplicate-keys.js';
import { ConfigError, loadJsonConfig } from './rpc/json-config.js';
import { RpcServer } from './rpc/server.js';
import { type ListenAddress, MetricsServer, VhostdMetrics, formatListenAddress } from './services/metrics/index.js';
import type { RpcContext } from './services/types.js';
import { VhostService } from './services/vhost-service.js';
import { checkSocketDir } from './util/socket-perms.js';

export const VERSION = '0.1.0';

export interface AppOptions {
  socketDir: string;
  cpumask: string;
  rpcSocket: string;
  jsonConfig?: string;
  logLevel?: string;
  /** How long an idle reactor keeps polling before it sleeps on guest kicks. */
  pollIdleUs?: number;
  /** How polling reactors wait for backend I/O (default adaptive). */
  backendWait?: BackendWaitMode;
  /** Mode of controller and RPC sockets. */
  socketMode?: number;
  /** Group (gid) of controller and RPC sockets; unchanged when absent. */
  socketGid?: number;
  /** --metrics-listen: serve Prometheus metrics at http://ADDR:PORT/metrics (off when absent). */
  metricsListen?: ListenAddress;
  logger?: Logger;
}

export class VhostdApp {
  /** The Prometheus endpoint, when --metrics-listen asked for one. */
  private metrics: MetricsServer | undefined;

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
    const cpus = onlineCpus().length;
    const missing = cores.filter((c) => c >= cpus);
    if (missing.length > 0) throw new Error(`cpumask ${opts.cpumask} names core ${missing[0]}, but this machine has ${cpus} CPUs (cores 0-${cpus - 1})`);
    checkSocketDir(opts.socketDir, 'socket directory (-S)');
    checkSocketDir(dirname(resolve(opts.rpcSocket)), 'RPC socket directory (-r)');
    const pool = new ReactorPool(cores, log, { pollIdleUs: opts.pollIdleUs, backendWait: opts.backendWait });
    const bdevs = new BdevRegistry();
    const vhost = new VhostService({ socketDir: opts.socketDir, socketMode: opts.socketMode ?? 0o600, socketGid: opts.socketGid }, bdevs, pool, log);
    const ctx: RpcContext = { bdevs, vhost, logger: log, version: VERSION, reactors: pool };
    const rpc = new RpcServer({ socketPath: opts.rpcSocket, logger: log, socketMode: opts.socketMode, socketGid: opts.socketGid });
    registerMethods(rpc, ctx);
    const app = new VhostdApp(log, pool, bdevs, vhost, rpc, ctx);
    try {
      // First, so that a port in use or not permitted stops vhostd before any config is loaded.
      if (opts.metricsListen) app.metrics = await MetricsServer.start(opts.metricsListen, new VhostdMetrics({ bdevs, reactors: pool, version: VERSION }), log);
      if (opts.jsonConfig) await app.loadConfig(readConfigFile(opts.jsonConfig), opts.jsonConfig);
      await rpc.start();
    } catch (e) {
      await app.stop();
      throw e;
    }
    log.info(
      { cpumask: pool.cpumask, reactors: cores.length, rpc: opts.rpcSocket, socketDir: opts.socketDir, ...(app.metrics ? { metrics: formatListenAddress(app.metrics.address) } : {}) },
      'vhostd started',
    );
    return app;
  }

  /** Runs an RPC method in-process, exactly as the RPC server would. */
  async call(method: string, params: unknown = {}): Promise<unknown> {
    const entry = buildMethodTable(this.ctx).get(method);
    if (!entry) throw new Error(`unknown method ${method}`);
    return entry.handler(params);
  }

  /**
   * Replays an SPDK JSON config (save_config's format) the way SPDK's --json loader does; see
   * rpc/json-config.ts for what is skipped and what fails. Throws ConfigError naming the entry.
   */
  async loadConfig(config: unknown, source?: string): Promise<void> {
    await loadJsonConfig(config, buildMethodTable(this.ctx), this.log, source);
  }

  async stop(): Promise<void> {
    await this.metrics?.close().catch(() => undefined);
    this.metrics = undefined;
    await this.rpc.close().catch(() => undefined);
    await this.vhost.close();
    for (const f of await this.bdevs.destroyAll()) this.log.error({ bdev: f.bdev, err: f.error }, `bdev ${f.bdev} could not be closed cleanly at shutdown`);
    await this.pool.close();
    this.log.info('vhostd stopped');
  }
}

function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read JSON config ${path}: ${(e as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (e) {
    throw new ConfigError(`JSON config ${path} is not valid JSON: ${(e as Error).message}`);
  }
  // JSON.parse keeps the last of repeated keys; SPDK's decoders refuse them, and so does this.
  const duplicate = markDuplicateKeys(text, value);
  if (duplicate !== undefined) throw new ConfigError(`JSON config ${path} repeats the key ${JSON.stringify(duplicate)} in an object`);
  return value;
}
