// bdev RPCs: malloc/null create and delete, legacy delete_bdev, bdev_get_bdevs.
// Decoders, defaults and error codes follow SPDK v24.01 module/bdev/{malloc,null}/*_rpc.c and
// lib/bdev/bdev_rpc.c.
import { BdevRegistry } from '../../bdev/registry.js';
import type { Bdev } from '../../bdev/bdev.js';
import { IoType } from '../../bdev/io.js';
import { MallocBdev } from '../../bdev/modules/malloc/malloc.js';
import { NullBdev } from '../../bdev/modules/null/null.js';
import type { RpcContext } from '../../services/types.js';
import { VhostdError, invalidParams } from '../../util/errors.js';
import { decodeParams, optional, required } from '../decode.js';
import type { RpcMethodDef } from './types.js';

/** SPDK's message for a failed spdk_json_decode_object in the bdev modules. */
const DECODE_FAILED = 'spdk_json_decode_object failed';

/** Block sizes the vhost devices can expose to a guest. */
const SUPPORTED_BLOCK_SIZES = new Set([512, 4096]);

/** The optional SPDK create params we accept but whose only supported value is the default. */
const METADATA_FIELDS = {
  physical_block_size: optional('uint32'),
  md_size: optional('uint32'),
  dif_type: optional('int32'),
  dif_is_head_of_md: optional('bool'),
} as const;

const mallocCreateSchema = {
  name: optional('string'),
  uuid: optional('uuid'),
  num_blocks: required('uint64'),
  block_size: required('uint32'),
  optimal_io_boundary: optional('uint32'),
  md_interleave: optional('bool'),
  ...METADATA_FIELDS,
};

const nullCreateSchema = {
  name: required('string'),
  uuid: optional('uuid'),
  num_blocks: required('uint64'),
  block_size: required('uint32'),
  ...METADATA_FIELDS,
};

const deleteSchema = { name: required('string') };

const getBdevsSchema = { name: optional('string'), timeout: optional('uint64') };

function einval(detail: string): VhostdError {
  return VhostdError.errno('EINVAL', detail);
}

/** Checks the geometry and metadata options shared by malloc and null. */
function validateGeometry(p: {
  num_blocks: number;
  block_size: number;
  physical_block_size?: number;
  md_size?: number;
  dif_type?: number;
}): void {
  if (p.num_blocks === 0) throw einval('num_blocks must be greater than 0');
  if (!SUPPORTED_BLOCK_SIZES.has(p.block_size)) throw einval(`block_size ${p.block_size} is not 512 or 4096`);
  if (p.physical_block_size !== undefined && p.physical_block_size % 512 !== 0) {
    throw einval(`physical_block_size ${p.physical_block_size} is not a multiple of 512`);
  }
  if (!Number.isSafeInteger(p.num_blocks * p.block_size)) throw VhostdError.errno('ENOMEM', 'bdev size too large');
  if ((p.md_size ?? 0) !== 0 || (p.dif_type ?? 0) !== 0) {
    throw VhostdError.errno('ENOTSUP', 'metadata and DIF are not supported');
  }
}

function ensureNameFree(ctx: RpcContext, name: string, uuid: string | undefined): void {
  if (name === '') throw einval('bdev name must not be empty');
  BdevRegistry.checkName(name);
  if (ctx.bdevs.has(name)) throw VhostdError.errno('EEXIST', `bdev ${name} already exists`);
  if (uuid !== undefined && ctx.bdevs.list().some((b) => b.uuid === uuid)) {
    throw VhostdError.errno('EEXIST', `a bdev with uuid ${uuid} already exists`);
  }
}

/** Allocation failures of huge RAM disks surface as RangeError; SPDK reports -ENOMEM. */
function allocate<T>(make: () => T): T {
  try {
    return make();
  } catch (err) {
    if (err instanceof RangeError) throw VhostdError.errno('ENOMEM', err.message);
    throw err;
  }
}

/** One element of bdev_get_bdevs, in SPDK's rpc_dump_bdev_info key order. */
export function bdevInfo(ctx: RpcContext, bdev: Bdev): Record<string, unknown> {
  const claimedBy = ctx.bdevs.claimedBy(bdev.name);
  return {
    name: bdev.name,
    aliases: [],
    product_name: bdev.productName,
    block_size: bdev.blockSize,
    num_blocks: bdev.numBlocks,
    uuid: bdev.uuid,
    assigned_rate_limits: ctx.bdevs.layerOf(bdev).qos.limits(),
    claimed: claimedBy !== undefined,
    ...(claimedBy !== undefined ? { claim_type: 'exclusive_write' } : {}),
    zoned: false,
    supported_io_types: {
      read: bdev.supportsIo(IoType.READ),
      write: bdev.supportsIo(IoType.WRITE),
      unmap: bdev.supportsIo(IoType.UNMAP),
      write_zeroes: bdev.supportsIo(IoType.WRITE_ZEROES),
      flush: bdev.supportsIo(IoType.FLUSH),
      // No backend implements these I/O types.
      reset: false,
      compare: false,
      compare_and_write: false,
      abort: false,
      nvme_admin: false,
      nvme_io: false,
    },
    driver_specific: bdev.driverSpecific() ?? {},
  };
}

export function bdevMethods(ctx: RpcContext): RpcMethodDef[] {
  // SPDK's malloc_disk_count: auto-names are Malloc0, Malloc1, ... counting only auto-named disks.
  let nextMallocIndex = 0;
  const autoMallocName = (): string => {
    let name: string;
    do name = `Malloc${nextMallocIndex++}`;
    while (ctx.bdevs.has(name));
    return name;
  };

  return [
    {
      name: 'bdev_malloc_create',
      aliases: ['construct_malloc_bdev'],
      handler(params) {
        const p = decodeParams(params, mallocCreateSchema, { message: DECODE_FAILED });
        validateGeometry(p);
        const name = p.name ?? autoMallocName();
        ensureNameFree(ctx, name, p.uuid);
        const bdev = allocate(() => new MallocBdev(name, p.block_size, p.num_blocks * p.block_size, p.uuid));
        return ctx.bdevs.add(bdev).name;
      },
    },
    {
      name: 'bdev_malloc_delete',
      aliases: ['delete_malloc_bdev'],
      async handler(params) {
        const p = decodeParams(params, deleteSchema, { message: DECODE_FAILED });
        await ctx.bdevs.delete(p.name, 'malloc');
        return true;
      },
    },
    {
      name: 'bdev_null_create',
      aliases: ['construct_null_bdev'],
      handler(params) {
        const p = decodeParams(params, nullCreateSchema, { message: DECODE_FAILED });
        validateGeometry(p);
        ensureNameFree(ctx, p.name, p.uuid);
        return ctx.bdevs.add(new NullBdev(p.name, p.block_size, p.num_blocks, p.uuid)).name;
      },
    },
    {
      name: 'bdev_null_delete',
      aliases: ['delete_null_bdev'],
      async handler(params) {
        const p = decodeParams(params, deleteSchema, { message: DECODE_FAILED });
        await ctx.bdevs.delete(p.name, 'null');
        return true;
      },
    },
    {
      // Removed from SPDK in 19.04; deletes a bdev of any module. Its errors were all -32602.
      name: 'delete_bdev',
      legacy: true,
      async handler(params) {
        const p = decodeParams(params, deleteSchema, { message: 'Invalid parameters' });
        if (!ctx.bdevs.list().some((b) => b.name === p.name || b.uuid === p.name)) {
          const err = invalidParams('Invalid parameters');
          err.detail = `bdev '${p.name}' does not exist`;
          throw err;
        }
        await ctx.bdevs.delete(p.name);
        return true;
      },
    },
    {
      name: 'bdev_get_bdevs',
      aliases: ['get_bdevs'],
      handler(params) {
        // `timeout` (wait for the bdev to appear) is accepted but bdevs here never appear late.
        const p = decodeParams(params, getBdevsSchema, { message: DECODE_FAILED, paramsOptional: true });
        const bdevs = p.name !== undefined ? [ctx.bdevs.get(p.name)] : ctx.bdevs.list();
        return bdevs.map((b) => bdevInfo(ctx, b));
      },
    },
  ];
}
