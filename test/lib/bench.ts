// Runs the benchmark (bench/run.ts) as a child process for the bench smoke tests.
import { spawn } from 'node:child_process';

export { hasCommand } from '../../bench/lib/targets.js';

const root = new URL('../../', import.meta.url).pathname;

/** Runs `npm run bench -- ARGS` from source; rejects (and interrupts the bench) after `timeoutMs`. */
export function runBench(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      // SIGINT: the bench stops its targets and guests before it exits.
      p.kill('SIGINT');
      reject(new Error(`bench did not finish in ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
