// The optional Prometheus endpoint (--metrics-listen): GET /metrics on a plain node:http server of
// the control thread; every other path is 404. Off unless asked for; a bare port listens on
// loopback only.
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import type { VhostdMetrics } from './collector.js';

export const DEFAULT_METRICS_HOST = '127.0.0.1';
export const METRICS_PATH = '/metrics';

export interface ListenAddress {
  host: string;
  port: number;
}

/** `host:port`, with IPv6 addresses in brackets. */
export function formatListenAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

function parsePort(s: string, whole: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) {
    throw new Error(`invalid metrics address ${JSON.stringify(whole)}: the port must be a number from 1 to 65535`);
  }
  return Number(s);
}

/**
 * Parses --metrics-listen: `PORT` (loopback, 127.0.0.1), `ADDR:PORT` (an IPv4 address or a host
 * name) or `[IPV6]:PORT`. Throws an Error whose message says what is wrong.
 */
export function parseListenAddress(v: string): ListenAddress {
  const s = v.trim();
  if (/^\d+$/.test(s)) return { host: DEFAULT_METRICS_HOST, port: parsePort(s, v) };
  const v6 = /^\[([^\]]*)\]:([^:]*)$/.exec(s);
  if (v6) {
    if (!isIPv6(v6[1])) throw new Error(`invalid metrics address ${JSON.stringify(v)}: ${JSON.stringify(v6[1])} is not an IPv6 address`);
    return { host: v6[1], port: parsePort(v6[2], v) };
  }
  const colon = s.lastIndexOf(':');
  if (colon < 0) throw new Error(`invalid metrics address ${JSON.stringify(v)}: expected PORT, ADDR:PORT or [IPv6]:PORT`);
  const host = s.slice(0, colon);
  const port = parsePort(s.slice(colon + 1), v);
  if (host.includes(':')) throw new Error(`invalid metrics address ${JSON.stringify(v)}: write an IPv6 address in brackets, as [::1]:${port}`);
  if (host.length === 0) throw new Error(`invalid metrics address ${JSON.stringify(v)}: the address before the port is empty`);
  if (!isIPv4(host) && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(host)) {
    throw new Error(`invalid metrics address ${JSON.stringify(v)}: ${JSON.stringify(host)} is neither an IPv4 address nor a host name`);
  }
  return { host, port };
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use',
  EACCES: 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)',
  EPERM: 'operation not permitted',
  EADDRNOTAVAIL: 'the address is not one of this host\'s',
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name does not resolve (temporary failure)',
};

/** The metrics listener could not start. */
export class MetricsListenError extends Error {
  constructor(
    readonly address: string,
    readonly code: string | undefined,
    cause: Error,
  ) {
    const reason = (code !== undefined && LISTEN_ERRORS[code]) || cause.message;
    super(`cannot listen for metrics on ${address}: ${reason}${code !== undefined ? ` (${code})` : ''}`, { cause });
    this.name = 'MetricsListenError';
  }
}

export class MetricsServer {
  private constructor(
    private readonly server: Server,
    readonly address: ListenAddress,
  ) {}

  /** Listens on `addr`; throws MetricsListenError (and logs it) when the address cannot be had. */
  static async start(addr: ListenAddress, metrics: VhostdMetrics, log: Logger): Promise<MetricsServer> {
    const server = createServer((req, res) => handle(req, res, metrics, log));
    server.maxConnections = 64;
    server.requestTimeout = 10_000;
    const shown = formatListenAddress(addr);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: addr.host, port: addr.port, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      const err = new MetricsListenError(shown, (e as NodeJS.ErrnoException).code, e as Error);
      log.error({ metrics: shown, code: err.code }, err.message);
      throw err;
    }
    server.on('error', (e) => log.warn({ err: e, metrics: shown }, 'metrics server error'));
    server.on('clientError', (_e, socket) => socket.destroy());
    const bound = server.address();
    const address = bound !== null && typeof bound === 'object' ? { host: bound.address, port: bound.port } : addr;
    log.info({ metrics: `http://${formatListenAddress(address)}${METRICS_PATH}` }, 'metrics endpoint listening');
    return new MetricsServer(server, address);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

function handle(req: IncomingMessage, res: ServerResponse, metrics: VhostdMetrics, log: Logger): void {
  const path = (req.url ?? '').split('?', 1)[0];
  if (path !== METRICS_PATH) {
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'Content-Type': 'text/plain; charset=utf-8', Allow: 'GET, HEAD' }).end('method not allowed\n');
    return;
  }
  metrics.metrics().then(
    (body) => {
      res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
    (e: unknown) => {
      log.warn({ err: e }, 'metrics scrape failed');
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`scrape failed: ${e instanceof Error ? e.message : String(e)}\n`);
    },
  );
}
