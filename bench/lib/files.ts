// Backing images for the file rows: one on /dev/shm (RAM, removed afterwards) and one on a disk
// file system (kept between runs: writing it takes a while). Both are written in full with a
// non-zero pattern so no read hits a hole or an unwritten extent.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

function fill(path: string, sizeBytes: number): void {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7 + 0x5a) & 0xff;
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < sizeBytes; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, sizeBytes - off), off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** `tag` names a second image of the same run (e.g. the migration section's disk). */
export function createShmImage(sizeBytes: number, tag = ''): string {
  const path = `/dev/shm/vhostd-bench-${process.pid}${tag ? `-${tag}` : ''}.img`;
  fill(path, sizeBytes);
  return path;
}

/** Reuses <dir>/vhostd-bench-disk-<size>.img when it exists with the right size. */
export function ensureDiskImage(dir: string, sizeBytes: number, log: (m: string) => void): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `vhostd-bench-disk-${sizeBytes}.img`);
  if (existsSync(path) && statSync(path).size === sizeBytes) return path;
  log(`writing ${sizeBytes >> 20} MiB disk image ${path} (once; kept for later runs)`);
  fill(path, sizeBytes);
  return path;
}

export function removeImage(path: string | undefined): void {
  if (path) rmSync(path, { force: true });
}
