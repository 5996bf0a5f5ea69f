// Other processes on the machine (test suites, VMs) steal the cores the bench pins itself and
// the targets to. This measures CPU used by anything but the bench and its targets, so rows can
// wait for a quiet machine and flag what was measured under foreign load.
import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { clockTicksPerSecond, sampleProc } from '../../src/initiator/procstat.js';

interface Snapshot {
  busySec: number;
  ownSec: number;
  at: number;
}

function machineBusySec(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] ?? 0);
  return busy / clockTicksPerSecond();
}

function ownSec(pids: number[], withChildren: boolean): number {
  const self = process.cpuUsage();
  let s = (self.user + self.system) / 1e6;
  const all = new Set(pids);
  if (withChildren) {
    // Children that ended and were reaped (their time moved into our cutime/cstime), and the live
    // ones (a zombie still shows its times): a process that exits between two snapshots moves
    // from one term to the other instead of vanishing.
    const f = readFileSync('/proc/self/stat', 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    s += (Number(fields[13]) + Number(fields[14])) / clockTicksPerSecond();
    for (const pid of liveChildren()) all.add(pid);
  }
  for (const pid of all) s += sampleProc(pid)?.cpuSec ?? 0;
  return s;
}

/** This process's children (every thread's /proc/self/task/<tid>/children). */
function liveChildren(): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync('/proc/self/task')) {
      try {
        for (const p of readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (p) out.push(Number(p));
      } catch {
        // thread gone
      }
    }
  } catch {
    // no /proc
  }
  return out;
}

export class ForeignLoad {
  private start: Snapshot | undefined;

  /** `withChildren`: every child process of the bench (e.g. QEMU guests) is its own, not foreign. */
  constructor(
    private readonly pids: () => number[],
    private readonly opts: { withChildren?: boolean } = {},
  ) {}

  private snap(): Snapshot {
    return { busySec: machineBusySec(), ownSec: ownSec(this.pids(), this.opts.withChildren ?? false), at: performance.now() };
  }

  begin(): void {
    this.start = this.snap();
  }

  /** Cores' worth of CPU (1 = one full core) used by other processes since begin(). */
  end(): number {
    const a = this.start;
    if (!a) return 0;
    const b = this.snap();
    const wall = (b.at - a.at) / 1000;
    if (wall <= 0) return 0;
    return Math.max(0, (b.busySec - a.busySec - (b.ownSec - a.ownSec)) / wall);
  }

  /** Waits until other processes use less than `threshold` cores (checked over 300 ms), at most maxWaitMs. */
  async waitQuiet(threshold: number, maxWaitMs: number, log: (m: string) => void): Promise<number> {
    const t0 = performance.now();
    let warned = false;
    for (;;) {
      this.begin();
      await sleep(300);
      const load = this.end();
      if (load < threshold) return load;
      if (performance.now() - t0 > maxWaitMs) {
        log(`other processes still use ${load.toFixed(2)} cores after ${(maxWaitMs / 1000).toFixed(0)} s: measuring anyway`);
        return load;
      }
      if (!warned) {
        log(`other processes use ${load.toFixed(2)} cores: waiting up to ${(maxWaitMs / 1000).toFixed(0)} s for a quiet machine`);
        warned = true;
      }
      await sleep(700);
    }
  }
}
