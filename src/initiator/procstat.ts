// /proc readers for the load generator and the bench: CPU time, RSS and page faults of another
// process (a target), sampled before and after a measurement.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

let clkTck: number | undefined;

/** USER_HZ, the unit of utime/stime in /proc/<pid>/stat (getconf CLK_TCK, 100 on Linux). */
export function clockTicksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number.parseInt(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim(), 10) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

export interface ProcSample {
  pid: number;
  /** utime + stime of the whole thread group (exited threads included), in seconds. */
  cpuSec: number;
  userSec: number;
  sysSec: number;
  minorFaults: number;
  majorFaults: number;
  /** Resident set size in bytes (VmRSS). */
  rssBytes: number;
  threads: number;
}

/** Samples /proc/<pid>/stat and /proc/<pid>/status; undefined when the process is gone. */
export function sampleProc(pid: number): ProcSample | undefined {
  let stat: string;
  let status: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after "(comm)": index 0 is field 3 (state) of proc(5).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const hz = clockTicksPerSecond();
  const userSec = Number(f[11]) / hz;
  const sysSec = Number(f[12]) / hz;
  const rssKb = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  const threads = /Threads:\s+(\d+)/.exec(status);
  return {
    pid,
    cpuSec: userSec + sysSec,
    userSec,
    sysSec,
    minorFaults: Number(f[7]),
    majorFaults: Number(f[9]),
    rssBytes: rssKb ? Number(rssKb[1]) * 1024 : 0,
    threads: threads ? Number(threads[1]) : 0,
  };
}

/** Per-thread on-CPU time in ns from /proc/<pid>/task/<tid>/schedstat, keyed by "tid:comm". */
export function sampleThreads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out.set(`${tid}:${comm}`, ns);
    } catch {
      // thread exited meanwhile
    }
  }
  return out;
}
