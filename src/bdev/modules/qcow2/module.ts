// The qcow2 bdev module: bdev_qcow2_create / bdev_qcow2_delete, bdev_qcow2_create_image for
// new images, and bdev_qcow2_snapshot (a live external snapshot of a bdev in use). Failures reply -errno with strerror() followed by what was wrong with which file
// ("No such file or directory: backing file base.qcow2 of top.qcow2 does not exist ..."), as the
// uring module's RPCs do; a Qcow2Error keeps the engine's message; decoding failures reply like
// the other bdev methods.
//
// A file is used by one qcow2 bdev for writing at a time: a writable image may not be any other
// qcow2 bdev's image or backing file, and no bdev may read through a file another one writes.
import { realpath, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import type { BdevModule, BdevModuleContext, BdevRpcMethod } from '../../module.js';
import { DECODE_FAILED } from '../../module.js';
import type { BdevRegistry } from '../../registry.js';
import { decodeParams, optional, required } from '../../../util/decode.js';
import { VhostdError } from '../../../util/errors.js';
import { Qcow2Bdev, type Qcow2BdevParams } from './bdev.js';
import { type ChainFile, inspectChain, probeFormat, qcow2RpcError, toRpcError } from './chain.js';
import { Qcow2Channel } from './channel.js';
import { createImage } from './create.js';
import { FsImageFile } from './fs-file.js';

interface FileUse {
  realpaths: string[];
  writable: boolean;
}

/** The files each qcow2 bdev (or create under way) uses, by bdev name. */
function usesOf(bdevs: BdevRegistry): Map<string, FileUse> {
  return bdevs.moduleState('qcow2', () => new Map<string, FileUse>());
}

/** Refuses files another qcow2 bdev writes, or a writable image another one uses; records the use. */
function claimFiles(bdevs: BdevRegistry, name: string, use: FileUse): void {
  const uses = usesOf(bdevs);
  for (const [other, u] of uses) {
    if (use.writable && u.realpaths.includes(use.realpaths[0]!)) {
      throw qcow2RpcError('EBUSY', `${use.realpaths[0]} is in use by qcow2 bdev ${other}${u.realpaths[0] === use.realpaths[0] ? '' : ' (as a backing file)'}: a writable image must not be used by another bdev`);
    }
    if (u.writable) {
      const at = use.realpaths.indexOf(u.realpaths[0]!);
      if (at >= 0) throw qcow2RpcError('EBUSY', `${u.realpaths[0]} is open for writing by qcow2 bdev ${other}${at > 0 ? ': it cannot be a backing file of another bdev' : ''}`);
    }
  }
  uses.set(name, use);
}

/** Validates the image and its chain, opens it and registers the bdev; returns it. */
export async function createQcow2Bdev(ctx: BdevModuleContext, p: Qcow2BdevParams): Promise<Qcow2Bdev> {
  const release = ctx.bdevs.reserveName(p.name, p.uuid, qcow2RpcError);
  let claimed = false;
  try {
    const bdev = await Qcow2Bdev.create(p, ctx.logger, (realpaths) => {
      claimFiles(ctx.bdevs, p.name, { realpaths, writable: !(p.readonly ?? false) });
      claimed = true;
    });
    release();
    try {
      ctx.bdevs.add(bdev);
    } catch (e) {
      await bdev.destroy();
      throw e;
    }
    claimed = false;
    bdev.onDestroyed = () => usesOf(ctx.bdevs).delete(p.name);
    return bdev;
  } finally {
    release();
    if (claimed) usesOf(ctx.bdevs).delete(p.name);
  }
}

export async function deleteQcow2Bdev(bdevs: BdevRegistry, name: string): Promise<void> {
  let bdev;
  try {
    bdev = bdevs.get(name);
  } catch {
    throw qcow2RpcError('ENODEV', `bdev ${name} does not exist`);
  }
  if (bdev.module !== 'qcow2') throw qcow2RpcError('ENODEV', `bdev ${name} is a ${bdev.module} bdev, not qcow2`);
  try {
    await bdevs.delete(bdev.name, 'qcow2');
  } catch (e) {
    if (e instanceof VhostdError && e.detail) throw Object.assign(new VhostdError(e.code, `${e.message}: ${e.detail}`), { detail: e.detail });
    throw e;
  }
}

export interface SnapshotParams {
  name: string;
  /** The new overlay (absolute path; must not exist). */
  snapshotFile: string;
  clusterSize?: number;
}

/**
 * The name the overlay stores for its backing file (the bdev's current image): relative to the
 * overlay's directory when both are in the same directory (as `qemu-img create -b base.qcow2`
 * would store it, and QEMU resolves it), else the absolute path.
 */
export function backingNameFor(overlay: string, image: string): string {
  return dirname(resolve(image)) === dirname(resolve(overlay)) ? basename(image) : resolve(image);
}

/**
 * bdev_qcow2_snapshot: writes `snapshotFile`, an overlay over the bdev's current image, and
 * switches the bdev to it while it serves I/O (Qcow2Bdev.snapshot). On any failure the overlay is
 * removed again and the bdev serves the old image on. Returns the overlay's path.
 */
export async function snapshotQcow2Bdev(bdevs: BdevRegistry, p: SnapshotParams): Promise<string> {
  let bdev;
  try {
    bdev = bdevs.get(p.name);
  } catch {
    throw qcow2RpcError('ENODEV', `bdev ${p.name} does not exist`);
  }
  if (!(bdev instanceof Qcow2Bdev)) throw qcow2RpcError('ENODEV', `bdev ${p.name} is a ${bdev.module} bdev, not qcow2`);
  if (bdev.readonly) throw qcow2RpcError('EROFS', `bdev ${p.name} is read-only: a snapshot moves writing to the new overlay, so only writable bdevs take one`);
  if (bdev.params.backingFile !== undefined) {
    throw qcow2RpcError('ENOTSUP', `bdev ${p.name} was created with backing_file overriding its image's header: its chain cannot be saved under an overlay, so it takes no snapshot`);
  }
  if (!isAbsolute(p.snapshotFile)) throw qcow2RpcError('EINVAL', `snapshot_file ${JSON.stringify(p.snapshotFile)} must be an absolute path`);
  if (bdev.snapshotBusy) throw qcow2RpcError('EBUSY', `a snapshot of bdev ${p.name} is under way`);
  const cur = bdev.image;
  const backingName = backingNameFor(p.snapshotFile, cur.path);
  let f: FsImageFile;
  try {
    f = await FsImageFile.open(p.snapshotFile, { create: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw qcow2RpcError('EEXIST', `${p.snapshotFile} already exists`);
    throw toRpcError(e, `cannot create ${p.snapshotFile}`);
  }
  const uses = usesOf(bdevs);
  const use = uses.get(bdev.name);
  try {
    const clusterSize = p.clusterSize ?? 65536;
    try {
      await createImage(f, { size: cur.virtualSize, clusterSize, backingFile: backingName, backingFormat: 'qcow2' });
      await f.close();
    } catch (e) {
      await f.close().catch(() => undefined);
      throw toRpcError(e, `cannot write ${p.snapshotFile}`);
    }
    const real = await realpath(p.snapshotFile);
    for (const [other, u] of uses) {
      if (u.realpaths.includes(real)) throw qcow2RpcError('EBUSY', `${p.snapshotFile} is in use by qcow2 bdev ${other}`);
    }
    const overlay: ChainFile = { path: resolve(p.snapshotFile), name: p.snapshotFile, format: 'qcow2', virtualSize: cur.virtualSize, clusterSize };
    await bdev.snapshot(overlay, real);
    // The old image is a read-only backing file from now on: other bdevs may read it.
    if (use !== undefined) uses.set(bdev.name, { realpaths: bdev.realpaths, writable: true });
    return p.snapshotFile;
  } catch (e) {
    // The overlay was made here: nothing uses it (the bdev serves the old image on).
    await rm(p.snapshotFile, { force: true }).catch(() => undefined);
    throw e instanceof VhostdError ? e : toRpcError(e, `snapshot of bdev ${p.name}`);
  }
}

export interface CreateImageParams {
  filename: string;
  size: number;
  clusterSize?: number;
  backingFile?: string;
  backingFormat?: string;
}

/** Writes a new qcow2 image (refusing an existing file); a backing file must exist and validate. */
export async function createQcow2Image(p: CreateImageParams): Promise<void> {
  if (!isAbsolute(p.filename)) throw qcow2RpcError('EINVAL', `filename ${JSON.stringify(p.filename)} must be an absolute path`);
  let backingFormat = p.backingFormat;
  if (p.backingFile !== undefined) {
    if (p.backingFile === '') throw qcow2RpcError('EINVAL', 'backing_file must not be empty');
    const path = isAbsolute(p.backingFile) ? p.backingFile : resolve(dirname(p.filename), p.backingFile);
    try {
      await stat(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw qcow2RpcError('ENOENT', `backing file ${p.backingFile} does not exist (looked for ${path})`);
      throw toRpcError(e, `cannot use backing file ${path}`);
    }
    backingFormat ??= await probeFormat(path).catch((e: unknown) => {
      throw toRpcError(e, `cannot open backing file ${path}`);
    });
    if (backingFormat !== 'qcow2' && backingFormat !== 'raw') throw qcow2RpcError('ENOTSUP', `backing format ${backingFormat} is not supported (only qcow2 and raw)`);
    // The whole chain below must be usable (no loop, nothing missing).
    if (backingFormat === 'qcow2') await inspectChain(path, { readonly: true });
  } else if (backingFormat !== undefined) {
    throw qcow2RpcError('EINVAL', 'backing_format needs a backing_file');
  }
  let f: FsImageFile;
  try {
    f = await FsImageFile.open(p.filename, { create: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw qcow2RpcError('EEXIST', `${p.filename} already exists`);
    throw toRpcError(e, `cannot create ${p.filename}`);
  }
  try {
    await createImage(f, {
      size: p.size,
      ...(p.clusterSize !== undefined ? { clusterSize: p.clusterSize } : {}),
      ...(p.backingFile !== undefined ? { backingFile: p.backingFile } : {}),
      ...(backingFormat !== undefined ? { backingFormat } : {}),
    });
    await f.close();
  } catch (e) {
    await f.close().catch(() => undefined);
    await rm(p.filename, { force: true });
    throw toRpcError(e, `cannot write ${p.filename}`);
  }
}

const createSchema = {
  name: required('string'),
  filename: required('string'),
  readonly: optional('bool'),
  backing_file: optional('string'),
  uuid: optional('uuid'),
};

const deleteSchema = { name: required('string') };

const snapshotSchema = {
  name: required('string'),
  snapshot_file: required('string'),
  cluster_size: optional('uint32'),
};

const createImageSchema = {
  filename: required('string'),
  size: required('uint64'),
  cluster_size: optional('uint32'),
  backing_file: optional('string'),
  backing_format: optional('string'),
};

function rpcMethods(ctx: BdevModuleContext): BdevRpcMethod[] {
  return [
    {
      name: 'bdev_qcow2_create',
      async handler(params) {
        const p = decodeParams(params, createSchema, { message: DECODE_FAILED });
        const bdev = await createQcow2Bdev(ctx, {
          name: p.name,
          filename: p.filename,
          ...(p.readonly !== undefined ? { readonly: p.readonly } : {}),
          ...(p.backing_file !== undefined ? { backingFile: p.backing_file } : {}),
          ...(p.uuid !== undefined ? { uuid: p.uuid } : {}),
        });
        return bdev.name;
      },
    },
    {
      name: 'bdev_qcow2_delete',
      async handler(params) {
        const p = decodeParams(params, deleteSchema, { message: DECODE_FAILED });
        await deleteQcow2Bdev(ctx.bdevs, p.name);
        ctx.logger.info({ bdev: p.name }, `qcow2 bdev ${p.name} deleted`);
        return true;
      },
    },
    {
      name: 'bdev_qcow2_snapshot',
      async handler(params) {
        const p = decodeParams(params, snapshotSchema, { message: DECODE_FAILED });
        const file = await snapshotQcow2Bdev(ctx.bdevs, {
          name: p.name,
          snapshotFile: p.snapshot_file,
          ...(p.cluster_size !== undefined ? { clusterSize: p.cluster_size } : {}),
        });
        ctx.logger.info({ bdev: p.name, snapshot_file: file }, `qcow2 bdev ${p.name}: live snapshot, now writing ${file}`);
        return file;
      },
    },
    {
      name: 'bdev_qcow2_create_image',
      async handler(params) {
        const p = decodeParams(params, createImageSchema, { message: DECODE_FAILED });
        await createQcow2Image({
          filename: p.filename,
          size: p.size,
          ...(p.cluster_size !== undefined ? { clusterSize: p.cluster_size } : {}),
          ...(p.backing_file !== undefined ? { backingFile: p.backing_file } : {}),
          ...(p.backing_format !== undefined ? { backingFormat: p.backing_format } : {}),
        });
        ctx.logger.info({ filename: p.filename, size: p.size }, `qcow2 image ${p.filename} created`);
        return p.filename;
      },
    },
  ];
}

export const qcow2Module: BdevModule = {
  name: 'qcow2',
  bdevModules: ['qcow2'],
  channels: { qcow2: (spec) => new Qcow2Channel(spec) },
  rpcMethods,
};
