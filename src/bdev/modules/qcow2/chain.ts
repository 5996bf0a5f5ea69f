// Control thread: validating an image and its whole backing chain before a bdev is made of it
// (node:fs/promises; nothing here runs on a reactor). Backing names relative to an image are
// relative to that image's directory, as in QEMU; a backing file's format comes from the header's
// backing format extension, else from probing (qcow2 magic, otherwise raw). Every refusal is an
// RPC error (-errno) whose message says what is wrong with which file.
import { realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { VhostdError } from '../../../util/errors.js';
import { Qcow2Error } from './errors.js';
import { FsImageFile } from './fs-file.js';
import { QCOW2_MAGIC, writeRefusal } from './header.js';
import { Qcow2Image } from './image.js';

export type ImageFormat = 'qcow2' | 'raw';

/** One file of a chain as validated. */
export interface ChainFile {
  /** The path opened (absolute). */
  path: string;
  /** The name as the parent image stores it (or as the RPC gave it). */
  name: string;
  format: ImageFormat;
  /** Bytes the file provides to the guest: the qcow2 virtual size, or a raw file's size. */
  virtualSize: number;
  /** qcow2 only. */
  clusterSize?: number;
}

/** The deepest chain accepted (QEMU has no fixed limit; this stops a runaway chain early). */
export const MAX_CHAIN_DEPTH = 256;

/** -errno whose message is strerror() and what was wrong ("No such file or directory: ..."). */
export function qcow2RpcError(errno: Parameters<typeof VhostdError.errnoWithDetail>[0], what: string): VhostdError {
  return VhostdError.errnoWithDetail(errno, what);
}

/** A failure met while validating: Qcow2Errors keep the engine's message, fs errors name the file. */
export function toRpcError(e: unknown, what: string): VhostdError {
  if (e instanceof VhostdError) return e;
  if (e instanceof Qcow2Error) return qcow2RpcError(e.errno, e.message);
  const code = (e as NodeJS.ErrnoException).code;
  const msg = e instanceof Error ? e.message : String(e);
  return qcow2RpcError(typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? (code as 'EIO') : 'EIO', `${what}: ${msg}`);
}

async function realpathOf(path: string, missing: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw qcow2RpcError('ENOENT', missing);
    throw toRpcError(e, `cannot resolve ${path}`);
  }
}

/** qcow2 when the file starts with the qcow2 magic, else raw. */
export async function probeFormat(path: string): Promise<ImageFormat> {
  const f = await FsImageFile.open(path);
  try {
    const head = new Uint8Array(4);
    await f.read(head, 0);
    return new DataView(head.buffer).getUint32(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    await f.close();
  }
}

interface Inspected {
  virtualSize: number;
  clusterSize: number;
  backing: { file: string; format?: string } | undefined;
  /** Opened for writing with the dirty bit set (image.ts: a process died with metadata unwritten). */
  unclean: boolean;
}

/** Opens a qcow2 image read-only with the engine (header, L1 and refcount tables checked). */
async function inspectQcow2(path: string, name: string, forWriting: boolean): Promise<Inspected> {
  let f: FsImageFile;
  try {
    f = await FsImageFile.open(path);
  } catch (e) {
    throw toRpcError(e, `cannot open ${path}`);
  }
  try {
    const img = await Qcow2Image.open(f, { readonly: true, name });
    const h = img.header;
    if (forWriting) {
      // What the engine refuses when it opens the image for writing (image.ts), said up front.
      const refusal = writeRefusal(h, name);
      if (refusal !== undefined) throw qcow2RpcError('EROFS', refusal.message);
    }
    await img.close();
    return { virtualSize: img.virtualSize, clusterSize: img.clusterSize, backing: img.backing, unclean: forWriting && h.dirty };
  } catch (e) {
    throw toRpcError(e, `cannot read ${path}`);
  } finally {
    await f.close().catch(() => undefined);
  }
}

export interface InspectedChain {
  top: ChainFile;
  /** The backing chain, nearest first. */
  chain: ChainFile[];
  /** Real paths of every file (top first), for the module's in-use checks. */
  realpaths: string[];
  /** The top image is writable and was not closed cleanly. */
  unclean: boolean;
}

/**
 * Validates the qcow2 image at `filename` (for writing unless `readonly`) and its backing chain:
 * `backingFile` replaces the header's backing file name (its format is then probed).
 */
export async function inspectChain(filename: string, opts: { readonly: boolean; backingFile?: string }): Promise<InspectedChain> {
  if (filename === '') throw qcow2RpcError('EINVAL', 'filename must not be empty');
  const topPath = resolve(filename);
  const topReal = await realpathOf(topPath, `cannot open ${filename}: the file does not exist`);
  const topFormat = await probeFormat(topPath).catch((e: unknown) => {
    throw toRpcError(e, `cannot open ${filename}`);
  });
  if (topFormat !== 'qcow2') throw qcow2RpcError('EINVAL', `${filename} is not a qcow2 image (no qcow2 magic at offset 0)`);
  const topInfo = await inspectQcow2(topPath, basename(topPath), !opts.readonly);
  const top: ChainFile = { path: topPath, name: filename, format: 'qcow2', virtualSize: topInfo.virtualSize, clusterSize: topInfo.clusterSize };
  const chain: ChainFile[] = [];
  const realpaths = [topReal];
  const names = [basename(topPath)];
  let parentPath = topPath;
  let next: { file: string; format?: string } | undefined =
    opts.backingFile !== undefined ? (opts.backingFile === '' ? undefined : { file: opts.backingFile }) : topInfo.backing;
  while (next !== undefined) {
    if (chain.length >= MAX_CHAIN_DEPTH) throw qcow2RpcError('ELOOP', `the backing chain of ${filename} is deeper than ${MAX_CHAIN_DEPTH} images`);
    const path = isAbsolute(next.file) ? next.file : resolve(dirname(parentPath), next.file);
    const parentName = basename(parentPath);
    const real = await realpathOf(path, `backing file ${next.file} of ${parentName} does not exist (looked for ${path})`);
    const st = await stat(path);
    if (!st.isFile() && !st.isBlockDevice()) throw qcow2RpcError('EINVAL', `backing file ${path} of ${parentName} is neither a regular file nor a block device`);
    if (realpaths.includes(real)) {
      throw qcow2RpcError('ELOOP', `the backing chain loops: ${[...names, basename(path)].join(' -> ')} (${path} is already in the chain)`);
    }
    const format = next.format ?? (await probeFormat(path).catch((e: unknown) => {
      throw toRpcError(e, `cannot open backing file ${path}`);
    }));
    if (format !== 'qcow2' && format !== 'raw') throw qcow2RpcError('ENOTSUP', `backing file ${path} of ${parentName} has format ${format}: only qcow2 and raw backing files are supported`);
    realpaths.push(real);
    names.push(basename(path));
    if (format === 'raw') {
      chain.push({ path, name: next.file, format, virtualSize: st.size });
      break;
    }
    const info = await inspectQcow2(path, basename(path), false);
    chain.push({ path, name: next.file, format, virtualSize: info.virtualSize, clusterSize: info.clusterSize });
    parentPath = path;
    next = info.backing;
  }
  return { top, chain, realpaths, unclean: topInfo.unclean };
}
