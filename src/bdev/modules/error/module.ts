// The error injection vbdev module (SPDK v24.01 module/bdev/error/vbdev_error{,_rpc}.c):
// EE_<base> over a claimed base, delete, inject, and its RPC methods. Params, replies and error
// codes as SPDK's: a decoding failure is -32603 "spdk_json_decode_object failed", other failures
// -errno with strerror(). A missing base is -ENODEV (vhostd's bdevs never appear late); deleting
// the base deletes EE_<base> first (registry cascade).
import type { BdevModule, BdevModuleContext, BdevRpcMethod } from '../../module.js';
import { bdevDecodeFailed, decodeBdevParams } from '../../module.js';
import type { BdevRegistry } from '../../registry.js';
import { findBase, registerVbdev } from '../../vbdev-module.js';
import { optional, required } from '../../../util/decode.js';
import { VhostdError } from '../../../util/errors.js';
import { ERROR_BDEV_PREFIX, ERROR_TYPE_NAMES, ErrorBdev, ErrorChannel, ErrorType, IO_TYPE_NAMES, type InjectOptions } from './error.js';

/** Creates EE_<base> over `baseName` (by name or UUID), claiming the base; returns it. */
export function createError(bdevs: BdevRegistry, p: { baseName: string; uuid?: string }): ErrorBdev {
  const base = findBase(bdevs, p.baseName);
  // EE_<base name>, also when the base was given by UUID (SPDK would use the string given).
  const name = `${ERROR_BDEV_PREFIX}${base.name}`;
  bdevs.checkNameFree(name, p.uuid);
  return registerVbdev(bdevs, base, name, (claim) => new ErrorBdev(claim.base, p.uuid, claim.release));
}

export function deleteError(bdevs: BdevRegistry, name: string): Promise<void> {
  return bdevs.delete(name, 'error');
}

/** bdev_error_inject_error on an error bdev (by name or UUID); ENODEV for any other. */
export function injectError(bdevs: BdevRegistry, name: string, o: InjectOptions): ErrorBdev {
  const bdev = bdevs.list().find((b) => b.name === name || b.uuid === name);
  if (!(bdev instanceof ErrorBdev)) throw VhostdError.errno('ENODEV', `${name} is not an error injection bdev`);
  bdev.injection.inject(o);
  return bdev;
}

const createSchema = { base_name: required('string'), uuid: optional('uuid') };

const injectSchema = {
  name: required('string'),
  io_type: required('string'),
  error_type: required('string'),
  num: optional('uint32'),
  queue_depth: optional('uint64'),
  corrupt_offset: optional('uint64'),
  corrupt_value: optional('uint32'),
};

const nameSchema = { name: required('string') };

function rpcMethods(ctx: BdevModuleContext): BdevRpcMethod[] {
  return [
    {
      name: 'bdev_error_create',
      aliases: ['construct_error_bdev'],
      handler(params) {
        const p = decodeBdevParams(params, createSchema);
        const bdev = createError(ctx.bdevs, { baseName: p.base_name, uuid: p.uuid });
        ctx.logger.info({ bdev: bdev.name, base: bdev.base.name }, `error injection bdev ${bdev.name} created on ${bdev.base.name}`);
        return true;
      },
    },
    {
      name: 'bdev_error_delete',
      aliases: ['delete_error_bdev'],
      async handler(params) {
        const p = decodeBdevParams(params, nameSchema);
        await deleteError(ctx.bdevs, p.name);
        return true;
      },
    },
    {
      name: 'bdev_error_inject_error',
      aliases: ['bdev_inject_error'],
      handler(params) {
        const p = decodeBdevParams(params, injectSchema);
        const ioType = Object.hasOwn(IO_TYPE_NAMES, p.io_type) ? IO_TYPE_NAMES[p.io_type] : undefined;
        if (ioType === undefined) throw bdevDecodeFailed(`io_type: ${p.io_type} is not one of ${Object.keys(IO_TYPE_NAMES).join(', ')}`);
        const errorType = Object.hasOwn(ERROR_TYPE_NAMES, p.error_type) ? ERROR_TYPE_NAMES[p.error_type] : undefined;
        if (errorType === undefined) {
          throw bdevDecodeFailed(`error_type: ${p.error_type} is not one of ${Object.keys(ERROR_TYPE_NAMES).join(', ')}`);
        }
        if (p.corrupt_value !== undefined && p.corrupt_value > 255) throw bdevDecodeFailed('corrupt_value: expected an integer in [0, 255]');
        const corruptValue = p.corrupt_value ?? 0;
        if (errorType === ErrorType.CORRUPT_DATA && corruptValue === 0) {
          throw VhostdError.errno('EINVAL', 'corrupt_value must be non-zero for corrupt_data');
        }
        const bdev = injectError(ctx.bdevs, p.name, {
          ioType,
          errorType,
          num: p.num ?? 1,
          queueDepth: p.queue_depth ?? 0,
          corruptOffset: p.corrupt_offset ?? 0,
          corruptValue,
        });
        ctx.logger.info({ bdev: bdev.name, io_type: p.io_type, error_type: p.error_type, num: p.num ?? 1 }, 'error injected');
        return true;
      },
    },
  ];
}

export const errorModule: BdevModule = {
  name: 'error',
  bdevModules: ['error'],
  channels: { error: (spec, open) => new ErrorChannel(spec, open) },
  rpcMethods,
};
