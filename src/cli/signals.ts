// Signals a daemon receives by routine that must neither kill vhostd nor open a door into it.
// Imported first by every daemon entry point, so the listeners exist before any other module loads:
// - SIGUSR1: Node's default opens the V8 inspector on 127.0.0.1:9229, which lets any local user run
//   code as the daemon's user. A JS listener replaces that handler; log-rotation set-ups send USR1
//   routinely, and vhostd logs to stderr, so there is nothing to reopen: it is logged and ignored.
// - SIGHUP: the default would kill the daemon and leave its sockets behind. vhostd has no config
//   file to re-read (configuration lives in RPC state), so it is logged and ignored.
// SIGINT and SIGTERM stop the daemon cleanly; the entry points handle those.

/** Signals that are logged and otherwise ignored. */
export const IGNORED_SIGNALS = ['SIGUSR1', 'SIGHUP'] as const;

let report: (signal: string) => void = () => undefined;

for (const signal of IGNORED_SIGNALS) process.on(signal, () => report(signal));

/** Where an ignored signal is reported once the logger exists. */
export function onIgnoredSignal(reporter: (signal: string) => void): void {
  report = reporter;
}
