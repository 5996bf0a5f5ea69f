// The bench's real block device (bdev kind `blockdev`): a zram device (RAM, compressed, behaves
// like a fast SSD without this VM's disk noise), or, where zram is unavailable, a loop device with
// direct I/O over a file in /dev/shm. Needs root; set up once per bench run and removed after.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BlockDevice {
  /** /dev/zramN or /dev/loopN. */
  path: string;
  /** For the report: what it is and how big. */
  label: string;
  /** Resets the zram device (or detaches the loop device and removes its file). Idempotent. */
  cleanup(): void;
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function readSys(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** A zram device of `sizeBytes`: zram0 when it is unused (disksize 0), else a hot-added one. */
function setupZram(sizeBytes: number): BlockDevice {
  if (!existsSync('/sys/block/zram0') && !existsSync('/sys/class/zram-control')) {
    try {
      sh('modprobe', ['zram']);
    } catch (e) {
      throw new Error(`no zram (modprobe zram: ${(e as Error).message.split('\n')[0]})`);
    }
  }
  let dev = 'zram0';
  let hotAdded = false;
  if (readSys('/sys/block/zram0/disksize') !== '0') {
    // zram0 is in use (or absent): ask for a fresh device instead of taking someone else's.
    const n = readSys('/sys/class/zram-control/hot_add');
    if (n === undefined || !/^\d+$/.test(n)) throw new Error('zram0 is in use and zram-control/hot_add is unavailable');
    dev = `zram${n}`;
    hotAdded = true;
  }
  const sys = `/sys/block/${dev}`;
  let done = false;
  const cleanup = () => {
    if (done) return;
    done = true;
    try {
      writeFileSync(`${sys}/reset`, '1');
    } catch {
      // already reset
    }
    if (hotAdded) {
      try {
        writeFileSync('/sys/class/zram-control/hot_remove', dev.slice(4));
      } catch {
        // still busy: left for the next run
      }
    }
  };
  try {
    writeFileSync(`${sys}/disksize`, String(sizeBytes));
  } catch (e) {
    cleanup();
    throw new Error(`cannot size /dev/${dev}: ${(e as Error).message}`);
  }
  const path = `/dev/${dev}`;
  for (let i = 0; i < 100 && !existsSync(path); i++) execFileSync('sleep', ['0.02']);
  if (!existsSync(path)) {
    cleanup();
    throw new Error(`${path} did not appear`);
  }
  const alg = /\[([^\]]+)\]/.exec(readSys(`${sys}/comp_algorithm`) ?? '')?.[1];
  const lbs = readSys(`${sys}/queue/logical_block_size`);
  return { path, label: `zram ${path} (${sizeBytes >> 20} MiB${alg ? `, ${alg}` : ''}${lbs ? `, ${lbs} B blocks` : ''})`, cleanup };
}

/** A loop device with direct I/O over a file in /dev/shm. */
function setupLoop(sizeBytes: number): BlockDevice {
  const file = join('/dev/shm', `vhostd-bench-loop-${process.pid}.img`);
  writeFileSync(file, '');
  execFileSync('truncate', ['-s', String(sizeBytes), file]);
  let path: string;
  try {
    path = sh('losetup', ['--direct-io=on', '--show', '-f', file]);
  } catch (e) {
    rmSync(file, { force: true });
    throw new Error(`losetup failed: ${(e as Error).message.split('\n')[0]}`);
  }
  let done = false;
  return {
    path,
    label: `loop ${path} over ${file} (direct-io=on, ${sizeBytes >> 20} MiB)`,
    cleanup() {
      if (done) return;
      done = true;
      try {
        sh('losetup', ['-d', path]);
      } catch {
        // already detached
      }
      rmSync(file, { force: true });
    },
  };
}

/** zram when possible, else a loop device over /dev/shm (`VHOSTD_BENCH_BLOCKDEV=loop` forces the loop device). */
export function setupBlockDevice(sizeBytes: number, log: (m: string) => void): BlockDevice {
  const errors: string[] = [];
  if (process.env.VHOSTD_BENCH_BLOCKDEV !== 'loop') {
    try {
      const d = setupZram(sizeBytes);
      log(`block device: ${d.label}`);
      return d;
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  try {
    const d = setupLoop(sizeBytes);
    log(`block device: ${d.label}${errors.length ? ` (${errors.join('; ')})` : ''}`);
    return d;
  } catch (e) {
    errors.push((e as Error).message);
  }
  throw new Error(errors.join('; '));
}
