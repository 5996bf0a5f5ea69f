// The project's initiator (src/cli/vhost-load.ts) against one controller, as a separate process
// (so that initiators do not share the test's event loop), and its --json result.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;

export interface LoadOut {
  ios: number;
  iops: number;
  mibps: number;
  errors: number;
  verifyErrors: number;
  writes: number;
  reads: number;
  seconds: number;
}

/** Runs vhost-load -s `socket` --json with `args` (no rescue kicks: a stall shows as a stall). */
export async function runLoad(socket: string, args: string[]): Promise<LoadOut> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli/vhost-load.ts', '-s', socket, '--json', '--rescue-ms', '0', ...args], { cwd: root, timeout: 60_000 });
  return JSON.parse(stdout) as LoadOut;
}
