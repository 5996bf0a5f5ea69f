// The null module (SPDK v24.01 module/bdev/null/bdev_null{,_rpc}.c): create, delete and its RPC
// methods (decode → createNull/deleteNull → reply).
import type { BdevModule, BdevModuleContext, BdevRpcMethod } from '../../module.js';
import { DECODE_FAILED, deleteByNameMethod } from '../../module.js';
import { METADATA_FIELDS, geometryOf, validateGeometry } from '../../geometry.js';
import type { BdevRegistry } from '../../registry.js';
import { decodeParams, optional, required } from '../../../util/decode.js';
import { NullBdev, NullChannel } from './null.js';

export interface NullCreateParams {
  name: string;
  uuid?: string;
  numBlocks: number;
  blockSize: number;
  physicalBlockSize?: number;
  mdSize?: number;
  difType?: number;
}

/** Creates and registers a null bdev; returns it. Errors as SPDK's (-errno). */
export function createNull(bdevs: BdevRegistry, p: NullCreateParams): NullBdev {
  validateGeometry(p);
  bdevs.checkNameFree(p.name, p.uuid);
  return bdevs.add(new NullBdev(p.name, p.blockSize, p.numBlocks, p.uuid)) as NullBdev;
}

export function deleteNull(bdevs: BdevRegistry, name: string): Promise<void> {
  return bdevs.delete(name, 'null');
}

const createSchema = {
  name: required('string'),
  uuid: optional('uuid'),
  num_blocks: required('uint64'),
  block_size: required('uint32'),
  ...METADATA_FIELDS,
};

function rpcMethods(ctx: BdevModuleContext): BdevRpcMethod[] {
  return [
    {
      name: 'bdev_null_create',
      aliases: ['construct_null_bdev'],
      handler(params) {
        const p = decodeParams(params, createSchema, { message: DECODE_FAILED });
        return createNull(ctx.bdevs, {
          name: p.name,
          uuid: p.uuid,
          ...geometryOf(p),
        }).name;
      },
    },
    deleteByNameMethod('bdev_null_delete', ['delete_null_bdev'], (name) => deleteNull(ctx.bdevs, name)),
  ];
}

export const nullModule: BdevModule = {
  name: 'null',
  bdevModules: ['null'],
  channels: { null: () => new NullChannel() },
  rpcMethods,
};
