// vhostd: the daemon's command line (SPDK vhost's -S, -m, -r and --json).
import { IGNORED_SIGNALS, onIgnoredSignal } from './signals.js'; // first: its listeners must exist before anything else loads
import { Command, InvalidArgumentError, Option } from 'commander';
import { VERSION, VhostdApp } from '../app.js';
import { DEFAULT_RPC_SOCKET } from '../rpc/server.js';
import { type ListenAddress, parseListenAddress } from '../services/metrics/index.js';
import { resolveGroup } from '../util/socket-perms.js';
import type { BackendWaitMode } from '../reactor/messages.js';

function parseMode(v: string): number {
  // Permission bits only: setuid/setgid/sticky mean nothing on a socket.
  if (!/^0?[0-7]{3}$/.test(v)) throw new InvalidArgumentError('expected an octal mode such as 0600 or 0660');
  return Number.parseInt(v, 8);
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('vhostd')
    .description('Userspace vhost-user storage target (vhost-user-blk) with an SPDK-compatible JSON-RPC interface')
    .version(VERSION)
    .option('-S, --socket-dir <dir>', 'directory for the controllers\' vhost-user sockets; must exist, and not be writable by other users unless sticky (as /var/tmp)', process.cwd())
    .option('-m, --cpumask <mask>', 'cores to run reactors on (hex mask, or list like [0,1])', '0x1')
    .option('-r, --rpc-socket <path>', 'JSON-RPC Unix socket', DEFAULT_RPC_SOCKET)
    .option('-c, --json <file>', 'JSON config (as written by save_config) to load at start')
    .option('-L, --log-level <level>', 'log level (fatal, error, warn, info, debug, trace)', 'info')
    .option('--poll-idle-us <us>', 'idle time after which a polling reactor sleeps on guest kicks', (v) => {
      const n = Number(v);
      if (!/^\d{1,8}$/.test(v) || n > 10_000_000) throw new InvalidArgumentError('expected microseconds from 0 to 10000000');
      return n;
    }, 1000)
    .addOption(
      new Option('--backend-wait <mode>', 'how a polling reactor waits for backend I/O: adaptive (spin on fast devices, sleep on slow ones, by their measured latency), spin (always poll: lowest latency on a fast device, a full core) or sleep (always sleep on the completions: least CPU, like SPDK\'s interrupt mode)')
        .choices(['adaptive', 'spin', 'sleep'])
        .default('adaptive'),
    )
    .addOption(new Option('--socket-mode <mode>', 'permissions of the RPC and controller sockets (octal)').argParser(parseMode).default(0o600, '0600'))
    .option('--socket-group <group>', 'group (name or gid) of the RPC and controller sockets; with --socket-mode 0660 it may connect')
    .option('--metrics-listen <[addr:]port>', 'serve Prometheus metrics at http://ADDR:PORT/metrics (off by default); a bare port listens on 127.0.0.1, IPv6 as [::1]:9100', (v) => {
      try {
        return parseListenAddress(v);
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
    })
    .addHelpText('after', `\nSignals: SIGINT and SIGTERM stop vhostd cleanly (sockets removed, exit 0); ${IGNORED_SIGNALS.join(' and ')} are logged and ignored (the debugger is never opened).`)
    .addHelpText('after', '\nExample:\n  vhostd -S /var/tmp -m 0x3 &\n  vhostctl bdev_malloc_create 64 512 -b Malloc0\n  vhostctl vhost_create_blk_controller vhost.0 Malloc0\n');
  program.parse(argv);
  const o = program.opts<{ socketDir: string; cpumask: string; rpcSocket: string; json?: string; logLevel: string; socketMode: number; socketGroup?: string; pollIdleUs: number; backendWait: BackendWaitMode; metricsListen?: ListenAddress }>();
  // Signals are handled from the start: one that arrives while vhostd is still starting (a long
  // --json config) stops it as soon as it is up, so its sockets are removed all the same.
  let app: VhostdApp | undefined;
  let signalled: string | undefined;
  let stopping = false;
  const shutdown = (running: VhostdApp, signal: string) => {
    if (stopping) return;
    stopping = true;
    running.log.info({ signal }, 'shutting down');
    running.stop().then(
      () => process.exit(0),
      (e) => {
        running.log.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: string) => {
    signalled ??= signal;
    if (app) shutdown(app, signal);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  try {
    const socketGid = o.socketGroup !== undefined ? resolveGroup(o.socketGroup) : undefined;
    app = await VhostdApp.start({
      socketDir: o.socketDir,
      cpumask: o.cpumask,
      rpcSocket: o.rpcSocket,
      jsonConfig: o.json,
      logLevel: o.logLevel,
      socketMode: o.socketMode,
      socketGid,
      pollIdleUs: o.pollIdleUs,
      backendWait: o.backendWait,
      metricsListen: o.metricsListen,
    });
  } catch (e) {
    process.stderr.write(`vhostd: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  }
  const running = app;
  onIgnoredSignal((signal) => running.log.info({ signal }, 'signal ignored'));
  if (signalled !== undefined) shutdown(app, signalled);
}

main(process.argv).catch((e) => {
  process.stderr.write(`vhostd: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
