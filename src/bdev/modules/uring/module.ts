// The file module, two SPDK faces (module/bdev/{uring,aio}/*_rpc.c, schema/schema.yaml):
// bdev_uring_create/delete and bdev_aio_create/delete, both served by io_uring. Failures reply
// -errno like SPDK's aio RPCs, with a message that says what was wrong ("Invalid argument:
// block_size 1000 is not a power of two of at least 512"); decoding failures reply like the other
// bdev methods.
import type { Logger } from 'pino';
import type { Bdev } from '../../bdev.js';
import type { BdevModule, BdevModuleContext, BdevRpcMethod } from '../../module.js';
import { DECODE_FAILED } from '../../module.js';
import type { BdevRegistry } from '../../registry.js';
import { decodeParams, optional, required } from '../../../util/decode.js';
import { VhostdError } from '../../../util/errors.js';
import { fileError } from './file-info.js';
import { FileBdev, FileChannel, type FileBdevParams, type FileFlavor } from './uring.js';

/** Opens the file and registers the bdev; returns it. */
export function createFileBdev(bdevs: BdevRegistry, p: FileBdevParams, log: Logger): FileBdev {
  bdevs.checkNameFree(p.name, p.uuid, fileError);
  const bdev = FileBdev.create(p, log);
  try {
    bdevs.add(bdev);
  } catch (e) {
    void bdev.destroy();
    throw e;
  }
  return bdev;
}

/** Deletes a bdev of this flavor: ENODEV (with what was wrong in the message) for any other. */
export async function deleteFileBdev(bdevs: BdevRegistry, name: string, flavor: FileFlavor): Promise<Bdev> {
  let bdev: Bdev;
  try {
    bdev = bdevs.get(name);
  } catch {
    throw fileError('ENODEV', `bdev ${name} does not exist`);
  }
  if (bdev.module !== flavor) throw fileError('ENODEV', `bdev ${name} is a ${bdev.module} bdev, not ${flavor}`);
  try {
    await bdevs.delete(bdev.name, flavor);
  } catch (e) {
    if (e instanceof VhostdError && e.detail) throw Object.assign(new VhostdError(e.code, `${e.message}: ${e.detail}`), { detail: e.detail });
    throw e;
  }
  return bdev;
}

const uringCreateSchema = {
  filename: required('string'),
  name: required('string'),
  block_size: optional('uint32'),
  uuid: optional('uuid'),
};

const aioCreateSchema = {
  name: required('string'),
  filename: required('string'),
  block_size: optional('uint32'),
  readonly: optional('bool'),
  fallocate: optional('bool'),
  uuid: optional('uuid'),
  nowait: optional('bool'),
};

const deleteSchema = { name: required('string') };

function rpcMethods(ctx: BdevModuleContext): BdevRpcMethod[] {
  const remove = async (params: unknown, flavor: FileFlavor): Promise<boolean> => {
    const p = decodeParams(params, deleteSchema, { message: DECODE_FAILED });
    const bdev = await deleteFileBdev(ctx.bdevs, p.name, flavor);
    ctx.logger.info({ bdev: bdev.name }, `${flavor} bdev ${bdev.name} deleted`);
    return true;
  };
  return [
    {
      name: 'bdev_uring_create',
      handler(params) {
        const p = decodeParams(params, uringCreateSchema, { message: DECODE_FAILED });
        const params_: FileBdevParams = { flavor: 'uring', name: p.name, filename: p.filename, blockSize: p.block_size, uuid: p.uuid };
        return createFileBdev(ctx.bdevs, params_, ctx.logger).name;
      },
    },
    {
      name: 'bdev_uring_delete',
      handler: (params) => remove(params, 'uring'),
    },
    {
      name: 'bdev_aio_create',
      aliases: ['construct_aio_bdev'],
      handler(params) {
        const p = decodeParams(params, aioCreateSchema, { message: DECODE_FAILED });
        ctx.bdevs.checkNameFree(p.name, p.uuid, fileError);
        // SPDK accepts nowait only for block devices, to set RWF_NOWAIT; not implemented here.
        if (p.nowait) throw fileError('ENOTSUP', 'nowait (RWF_NOWAIT) is not supported');
        const params_: FileBdevParams = {
          flavor: 'aio',
          name: p.name,
          filename: p.filename,
          blockSize: p.block_size,
          uuid: p.uuid,
          readonly: p.readonly,
          fallocate: p.fallocate,
        };
        return createFileBdev(ctx.bdevs, params_, ctx.logger).name;
      },
    },
    {
      name: 'bdev_aio_delete',
      aliases: ['delete_aio_bdev'],
      handler: (params) => remove(params, 'aio'),
    },
  ];
}

export const uringModule: BdevModule = {
  name: 'uring',
  bdevModules: ['uring', 'aio'],
  // aio bdevs open 'uring' channels too.
  channels: { uring: (spec) => new FileChannel(spec) },
  rpcMethods,
};
