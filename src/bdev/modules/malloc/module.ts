// The malloc module (SPDK v24.01 module/bdev/malloc/bdev_malloc{,_rpc}.c): create and delete, the
// auto-name counter, and its RPC methods (decode → createMalloc/deleteMalloc → reply).
import type { BdevModule, BdevModuleContext, BdevRpcMethod } from '../../module.js';
import { DECODE_FAILED, deleteByNameMethod } from '../../module.js';
import { METADATA_FIELDS, geometryOf, validateGeometry } from '../../geometry.js';
import type { BdevRegistry } from '../../registry.js';
import { decodeParams, optional, required } from '../../../util/decode.js';
import { VhostdError } from '../../../util/errors.js';
import { MallocBdev, MallocChannel } from './malloc.js';

export interface MallocCreateParams {
  /** Without a name: Malloc<n>, SPDK's malloc_disk_count. */
  name?: string;
  uuid?: string;
  numBlocks: number;
  blockSize: number;
  physicalBlockSize?: number;
  mdSize?: number;
  difType?: number;
}

/** Module state, one per vhostd (registry). */
interface MallocState {
  /** SPDK's malloc_disk_count: auto-names are Malloc0, Malloc1, ... counting only auto-named disks. */
  nextIndex: number;
}

const state = (bdevs: BdevRegistry): MallocState => bdevs.moduleState('malloc', () => ({ nextIndex: 0 }));

function autoName(bdevs: BdevRegistry): string {
  const st = state(bdevs);
  let name: string;
  do name = `Malloc${st.nextIndex++}`;
  while (bdevs.isNameTaken(name));
  return name;
}

/** Creates and registers a malloc bdev; returns it. Errors as SPDK's (-errno). */
export function createMalloc(bdevs: BdevRegistry, p: MallocCreateParams): MallocBdev {
  validateGeometry(p);
  const name = p.name ?? autoName(bdevs);
  bdevs.checkNameFree(name, p.uuid);
  let bdev: MallocBdev;
  try {
    bdev = new MallocBdev(name, p.blockSize, p.numBlocks * p.blockSize, p.uuid);
  } catch (err) {
    // Allocation failures of huge RAM disks surface as RangeError; SPDK reports -ENOMEM.
    if (err instanceof RangeError) throw VhostdError.errno('ENOMEM', err.message);
    throw err;
  }
  bdevs.add(bdev);
  return bdev;
}

export function deleteMalloc(bdevs: BdevRegistry, name: string): Promise<void> {
  return bdevs.delete(name, 'malloc');
}

const createSchema = {
  name: optional('string'),
  uuid: optional('uuid'),
  num_blocks: required('uint64'),
  block_size: required('uint32'),
  optimal_io_boundary: optional('uint32'),
  md_interleave: optional('bool'),
  ...METADATA_FIELDS,
};

function rpcMethods(ctx: BdevModuleContext): BdevRpcMethod[] {
  return [
    {
      name: 'bdev_malloc_create',
      aliases: ['construct_malloc_bdev'],
      handler(params) {
        const p = decodeParams(params, createSchema, { message: DECODE_FAILED });
        return createMalloc(ctx.bdevs, {
          name: p.name,
          uuid: p.uuid,
          ...geometryOf(p),
        }).name;
      },
    },
    deleteByNameMethod('bdev_malloc_delete', ['delete_malloc_bdev'], (name) => deleteMalloc(ctx.bdevs, name)),
  ];
}

export const mallocModule: BdevModule = {
  name: 'malloc',
  bdevModules: ['malloc'],
  channels: { malloc: (spec) => new MallocChannel(spec) },
  rpcMethods,
};
