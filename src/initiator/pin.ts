// CPU pinning of the initiator: the addon pins the calling thread (the JS thread running the hot
// loop); `taskset -a` moves the process's other threads (V8 GC helpers, libuv pool) too, so none
// of them steals time on the target's core.
import { execFileSync } from 'node:child_process';
import { native } from '../native/index.js';
import { errnoName } from '../util/errno.js';

export interface PinResult {
  thread: boolean;
  allThreads: boolean;
  error?: string;
}

export function pinProcess(cpu: number): PinResult {
  const rc = native.setAffinity([cpu]);
  const out: PinResult = { thread: rc === 0, allThreads: false };
  if (rc < 0) out.error = `sched_setaffinity: ${errnoName(rc)}`;
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(process.pid)], { stdio: 'ignore' });
    out.allThreads = true;
  } catch (e) {
    out.error ??= `taskset: ${e instanceof Error ? e.message : String(e)}`;
  }
  return out;
}
