// Generic bdev RPCs: every listed module's own methods (create/delete/..., declared in its folder,
// src/bdev/modules/<name>/module.ts), legacy delete_bdev, bdev_get_bdevs. Decoders and error
// codes follow SPDK v24.01 lib/bdev/bdev_rpc.c.
import type { Bdev } from '../../bdev/bdev.js';
import { BDEV_MODULES } from '../../bdev/channels.js';
import { DECODE_FAILED } from '../../bdev/module.js';
import { IoType } from '../../bdev/io.js';
import type { RpcContext } from '../../services/types.js';
import { invalidParams } from '../../util/errors.js';
import { decodeParams, optional, required } from '../decode.js';
import type { RpcMethodDef } from './types.js';

const deleteSchema = { name: required('string') };

const getBdevsSchema = { name: optional('string'), timeout: optional('uint64') };

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

/** The RPC methods every bdev module of the list declares, in list order. */
export function bdevModuleMethods(ctx: RpcContext): RpcMethodDef[] {
  return BDEV_MODULES.flatMap((m) => m.rpcMethods?.(ctx) ?? []);
}

export function bdevMethods(ctx: RpcContext): RpcMethodDef[] {
  return [
    ...bdevModuleMethods(ctx),
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
