// The test-support virtual bdevs of SPDK v24.01: delay (module/bdev/delay/vbdev_delay_rpc.c:
// bdev_delay_create, bdev_delay_delete, bdev_delay_update_latency) and error injection
// (module/bdev/error/vbdev_error_rpc.c: bdev_error_create, bdev_error_delete,
// bdev_error_inject_error). Params, replies and error codes as SPDK's: a decoding failure is
// -32603 "spdk_json_decode_object failed", other failures -errno with strerror().
//
// One difference: SPDK remembers a vbdev whose base bdev does not exist yet and creates it when
// the base appears (examine). vhostd's bdevs never appear late, so a missing base is -ENODEV.
//
// Each vbdev claims its base (bdev_get_bdevs shows it claimed). Deleting the base deletes the
// vbdev first, as SPDK's hot-remove does, and fails with EBUSY if the vbdev itself is in use.
import { BdevRegistry } from '../../bdev/registry.js';
import type { Bdev } from '../../bdev/bdev.js';
import { DELAY_TYPE_NAMES, DelayBdev } from '../../bdev/modules/delay/delay.js';
import { ERROR_BDEV_PREFIX, ERROR_TYPE_NAMES, ErrorBdev, ErrorType, IO_TYPE_NAMES } from '../../bdev/modules/error/error.js';
import type { RpcContext } from '../../services/types.js';
import { RpcCode, VhostdError, invalidParams } from '../../util/errors.js';
import { type Decoded, type Schema, decodeParams, optional, required } from '../decode.js';
import type { RpcMethodDef } from './types.js';

const DECODE_FAILED = 'spdk_json_decode_object failed';

/** decodeParams with SPDK's reply for these modules: SPDK_JSONRPC_ERROR_INTERNAL_ERROR. */
function decode<S extends Schema>(params: unknown, schema: S): Decoded<S> {
  try {
    return decodeParams(params, schema, { message: DECODE_FAILED });
  } catch (e) {
    throw decodeFailed((e as VhostdError).detail ?? DECODE_FAILED);
  }
}

function decodeFailed(detail: string): VhostdError {
  const err = new VhostdError(RpcCode.INTERNAL_ERROR, DECODE_FAILED);
  err.detail = detail;
  return err;
}

const delayCreateSchema = {
  base_bdev_name: required('string'),
  name: required('string'),
  uuid: optional('uuid'),
  avg_read_latency: required('uint64'),
  p99_read_latency: required('uint64'),
  avg_write_latency: required('uint64'),
  p99_write_latency: required('uint64'),
};

const updateLatencySchema = {
  delay_bdev_name: required('string'),
  latency_type: required('string'),
  latency_us: required('uint64'),
};

const errorCreateSchema = { base_name: required('string'), uuid: optional('uuid') };

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

/** The base bdev by name or UUID; ENODEV if there is none (SPDK would wait for it to appear). */
function findBase(ctx: RpcContext, name: string): Bdev {
  const base = ctx.bdevs.list().find((b) => b.name === name) ?? ctx.bdevs.list().find((b) => b.uuid === name);
  if (!base) throw VhostdError.errno('ENODEV', `base bdev ${name} does not exist`);
  return base;
}

/** Claims `base` for `owner`; deleting the base then first deletes `vbdevName` (hot-remove). */
function claimBase(ctx: RpcContext, base: Bdev, owner: string, vbdevName: string): Bdev {
  // Already claimed: EPERM, as SPDK's failed spdk_bdev_module_claim_bdev.
  return ctx.bdevs.claim(base.name, owner, () => ctx.bdevs.delete(vbdevName));
}

function uuidTaken(ctx: RpcContext, uuid: string | undefined): boolean {
  return uuid !== undefined && ctx.bdevs.list().some((b) => b.uuid === uuid);
}

export function testBdevMethods(ctx: RpcContext): RpcMethodDef[] {
  /** Registers a vbdev built on a claimed base; undoes the claim if that fails. */
  function register(bdev: Bdev, baseName: string, owner: string): void {
    try {
      ctx.bdevs.add(bdev);
    } catch (e) {
      ctx.bdevs.release(baseName, owner);
      throw e;
    }
  }

  return [
    {
      name: 'bdev_delay_create',
      handler(params) {
        const p = decode(params, delayCreateSchema);
        if (p.p99_read_latency < p.avg_read_latency || p.p99_write_latency < p.avg_write_latency) {
          throw VhostdError.errno('EINVAL', 'p99 latency must not be less than the average latency');
        }
        if (p.name === '') throw VhostdError.errno('EINVAL', 'bdev name must not be empty');
        BdevRegistry.checkName(p.name);
        if (ctx.bdevs.has(p.name)) throw VhostdError.errno('EEXIST', `bdev ${p.name} already exists`);
        if (uuidTaken(ctx, p.uuid)) throw VhostdError.errno('EEXIST', `a bdev with uuid ${p.uuid} already exists`);
        const owner = `bdev ${p.name}`;
        const base = claimBase(ctx, findBase(ctx, p.base_bdev_name), owner, p.name);
        const bdev = new DelayBdev(
          p.name,
          base,
          { avgReadUs: p.avg_read_latency, p99ReadUs: p.p99_read_latency, avgWriteUs: p.avg_write_latency, p99WriteUs: p.p99_write_latency },
          p.uuid,
          () => ctx.bdevs.release(base.name, owner),
        );
        if (uuidTaken(ctx, bdev.uuid)) {
          ctx.bdevs.release(base.name, owner);
          throw VhostdError.errno('EEXIST', `a bdev with uuid ${bdev.uuid} already exists`);
        }
        register(bdev, base.name, owner);
        ctx.logger.info({ bdev: p.name, base: base.name }, `delay bdev ${p.name} created on ${base.name}`);
        return p.name;
      },
    },
    {
      name: 'bdev_delay_delete',
      async handler(params) {
        const p = decode(params, nameSchema);
        await ctx.bdevs.delete(p.name, 'delay');
        return true;
      },
    },
    {
      name: 'bdev_delay_update_latency',
      handler(params) {
        const p = decode(params, updateLatencySchema);
        const type = Object.hasOwn(DELAY_TYPE_NAMES, p.latency_type) ? DELAY_TYPE_NAMES[p.latency_type] : undefined;
        if (type === undefined) throw invalidParams('Please specify a valid latency type.');
        const bdev = ctx.bdevs.list().find((b) => b.name === p.delay_bdev_name);
        if (!(bdev instanceof DelayBdev)) throw invalidParams('The requested bdev does not exist.');
        bdev.setLatency(type, p.latency_us);
        return true;
      },
    },
    {
      name: 'bdev_error_create',
      aliases: ['construct_error_bdev'],
      handler(params) {
        const p = decode(params, errorCreateSchema);
        const base = findBase(ctx, p.base_name);
        // EE_<base name>, also when the base was given by UUID (SPDK would use the string given).
        const name = `${ERROR_BDEV_PREFIX}${base.name}`;
        BdevRegistry.checkName(name);
        if (ctx.bdevs.has(name)) throw VhostdError.errno('EEXIST', `bdev ${name} already exists`);
        if (uuidTaken(ctx, p.uuid)) throw VhostdError.errno('EEXIST', `a bdev with uuid ${p.uuid} already exists`);
        const owner = `bdev ${name}`;
        const claimed = claimBase(ctx, base, owner, name);
        const bdev = new ErrorBdev(claimed, p.uuid, () => ctx.bdevs.release(claimed.name, owner));
        if (uuidTaken(ctx, bdev.uuid)) {
          ctx.bdevs.release(claimed.name, owner);
          throw VhostdError.errno('EEXIST', `a bdev with uuid ${bdev.uuid} already exists`);
        }
        register(bdev, claimed.name, owner);
        ctx.logger.info({ bdev: name, base: claimed.name }, `error injection bdev ${name} created on ${claimed.name}`);
        return true;
      },
    },
    {
      name: 'bdev_error_delete',
      aliases: ['delete_error_bdev'],
      async handler(params) {
        const p = decode(params, nameSchema);
        await ctx.bdevs.delete(p.name, 'error');
        return true;
      },
    },
    {
      name: 'bdev_error_inject_error',
      aliases: ['bdev_inject_error'],
      handler(params) {
        const p = decode(params, injectSchema);
        const ioType = Object.hasOwn(IO_TYPE_NAMES, p.io_type) ? IO_TYPE_NAMES[p.io_type] : undefined;
        if (ioType === undefined) throw decodeFailed(`io_type: ${p.io_type} is not one of ${Object.keys(IO_TYPE_NAMES).join(', ')}`);
        const errorType = Object.hasOwn(ERROR_TYPE_NAMES, p.error_type) ? ERROR_TYPE_NAMES[p.error_type] : undefined;
        if (errorType === undefined) {
          throw decodeFailed(`error_type: ${p.error_type} is not one of ${Object.keys(ERROR_TYPE_NAMES).join(', ')}`);
        }
        if (p.corrupt_value !== undefined && p.corrupt_value > 255) throw decodeFailed('corrupt_value: expected an integer in [0, 255]');
        const corruptValue = p.corrupt_value ?? 0;
        if (errorType === ErrorType.CORRUPT_DATA && corruptValue === 0) {
          throw VhostdError.errno('EINVAL', 'corrupt_value must be non-zero for corrupt_data');
        }
        const bdev = ctx.bdevs.list().find((b) => b.name === p.name || b.uuid === p.name);
        if (!(bdev instanceof ErrorBdev)) throw VhostdError.errno('ENODEV', `${p.name} is not an error injection bdev`);
        bdev.injection.inject({
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
