// Helpers for the qcow2 tests: qemu-img / qemu-io, temporary directories, opening images.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BackingRead, Qcow2Image } from '../../../src/bdev/modules/qcow2/image.js';
import { FsImageFile } from './fs-image-file.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 * MiB });
}

export function qemuIo(path: string, ...cmds: string[]): string {
  const args = ['-f', 'qcow2'];
  for (const c of cmds) args.push('-c', c);
  args.push(path);
  return execFileSync('qemu-io', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** qemu-img check: exit code (0 clean, 2 corruption, 3 leaks only) and its output. */
export function qemuCheck(path: string): { code: number; out: string } {
  const r = spawnSync('qemu-img', ['check', path], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

export function qemuMap(path: string): MapEntry[] {
  return JSON.parse(qemuImg('map', '--output=json', path)) as MapEntry[];
}

/** The guest content of an image as qemu-img convert -O raw sees it. */
export function qemuRaw(dir: string, path: string): Buffer {
  const out = join(dir, `raw-${Math.random().toString(36).slice(2)}.img`);
  qemuImg('convert', '-O', 'raw', path, out);
  const b = readFileSync(out);
  rmSync(out);
  return b;
}

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'vhostd-qcow2-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Opens an image file and the engine on it. `backing` is a raw buffer of the backing content (or a reader). */
export async function openImage(
  path: string,
  opts: { readonly?: boolean; l2CacheBytes?: number; backing?: Uint8Array | BackingRead } = {},
): Promise<{ img: Qcow2Image; file: FsImageFile; close: () => Promise<void> }> {
  const file = await FsImageFile.open(path, { readonly: opts.readonly ?? false });
  const b = opts.backing;
  const backingRead: BackingRead | undefined =
    b === undefined ? undefined : typeof b === 'function' ? b : async (buf, off) => {
      buf.fill(0);
      if (off < b.byteLength) buf.set(b.subarray(off, Math.min(b.byteLength, off + buf.byteLength)));
    };
  try {
    const img = await Qcow2Image.open(file, {
      readonly: opts.readonly ?? false,
      name: path.split('/').pop()!,
      ...(opts.l2CacheBytes !== undefined ? { l2CacheBytes: opts.l2CacheBytes } : {}),
      ...(backingRead !== undefined ? { backingRead } : {}),
    });
    return {
      img,
      file,
      close: async () => {
        await img.close();
        await file.close();
      },
    };
  } catch (err) {
    await file.close();
    throw err;
  }
}

/** Deterministic pseudo-random bytes. */
export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** qemu-img compare of a qcow2 image against a raw file holding `model`; returns the exit code and output. */
export function qemuCompare(dir: string, path: string, model: Uint8Array): { code: number; out: string } {
  const raw = join(dir, `model-${Math.random().toString(36).slice(2)}.raw`);
  writeFileSync(raw, model);
  const r = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', path, raw], { encoding: 'utf8' });
  rmSync(raw);
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}
