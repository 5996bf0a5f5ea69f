// File-backed bdev RPCs: bdev_uring_create/delete and bdev_aio_create/delete (one module, two
// SPDK faces). Params follow SPDK's schema (schema/schema.yaml, module/bdev/{uring,aio}/*_rpc.c).
// Failures reply -errno like SPDK's aio RPCs, with a message that says what was wrong
// ("Invalid argument: block_size 1000 is not a power of two of at least 512"); decoding failures
// reply like the other bdev methods of this server.
import { BdevRegistry } from '../../bdev/registry.js';
import type { Bdev } from '../../bdev/bdev.js';
import { fileError } from '../../bdev/modules/uring/file-info.js';
import { FileBdev, type FileFlavor } from '../../bdev/modules/uring/uring.js';
import type { RpcContext } from '../../services/types.js';
import { VhostdError } from '../../util/errors.js';
import { decodeParams, optional, required } from '../decode.js';
import type { RpcMethodDef } from './types.js';

const DECODE_FAILED = 'spdk_json_decode_object failed';

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

function ensureNameFree(ctx: RpcContext, name: string, uuid: string | undefined): void {
  if (name === '') throw fileError('EINVAL', 'bdev name must not be empty');
  BdevRegistry.checkName(name);
  if (ctx.bdevs.has(name)) throw fileError('EEXIST', `bdev ${name} already exists`);
  if (uuid !== undefined && ctx.bdevs.list().some((b) => b.uuid === uuid)) {
    throw fileError('EEXIST', `a bdev with uuid ${uuid} already exists`);
  }
}

function register(ctx: RpcContext, bdev: FileBdev): string {
  try {
    ctx.bdevs.add(bdev);
  } catch (e) {
    void bdev.destroy();
    throw e;
  }
  return bdev.name;
}

async function deleteFileBdev(ctx: RpcContext, name: string, flavor: FileFlavor): Promise<boolean> {
  let bdev: Bdev;
  try {
    bdev = ctx.bdevs.get(name);
  } catch {
    throw fileError('ENODEV', `bdev ${name} does not exist`);
  }
  if (bdev.module !== flavor) throw fileError('ENODEV', `bdev ${name} is a ${bdev.module} bdev, not ${flavor}`);
  try {
    await ctx.bdevs.delete(bdev.name, flavor);
  } catch (e) {
    if (e instanceof VhostdError && e.detail) throw Object.assign(new VhostdError(e.code, `${e.message}: ${e.detail}`), { detail: e.detail });
    throw e;
  }
  ctx.logger.info({ bdev: bdev.name }, `${flavor} bdev ${bdev.name} deleted`);
  return true;
}

export function fileBdevMethods(ctx: RpcContext): RpcMethodDef[] {
  return [
    {
      name: 'bdev_uring_create',
      handler(params) {
        const p = decodeParams(params, uringCreateSchema, { message: DECODE_FAILED });
        ensureNameFree(ctx, p.name, p.uuid);
        const bdev = FileBdev.create(
          { flavor: 'uring', name: p.name, filename: p.filename, blockSize: p.block_size, uuid: p.uuid },
          ctx.logger,
        );
        return register(ctx, bdev);
      },
    },
    {
      name: 'bdev_uring_delete',
      handler(params) {
        const p = decodeParams(params, deleteSchema, { message: DECODE_FAILED });
        return deleteFileBdev(ctx, p.name, 'uring');
      },
    },
    {
      name: 'bdev_aio_create',
      aliases: ['construct_aio_bdev'],
      handler(params) {
        const p = decodeParams(params, aioCreateSchema, { message: DECODE_FAILED });
        ensureNameFree(ctx, p.name, p.uuid);
        // SPDK accepts nowait only for block devices, to set RWF_NOWAIT; not implemented here.
        if (p.nowait) throw fileError('ENOTSUP', 'nowait (RWF_NOWAIT) is not supported');
        const bdev = FileBdev.create(
          {
            flavor: 'aio',
            name: p.name,
            filename: p.filename,
            blockSize: p.block_size,
            uuid: p.uuid,
            readonly: p.readonly,
            fallocate: p.fallocate,
          },
          ctx.logger,
        );
        return register(ctx, bdev);
      },
    },
    {
      name: 'bdev_aio_delete',
      aliases: ['delete_aio_bdev'],
      handler(params) {
        const p = decodeParams(params, deleteSchema, { message: DECODE_FAILED });
        return deleteFileBdev(ctx, p.name, 'aio');
      },
    },
  ];
}
