// The delay vbdev module (SPDK v24.01 module/bdev/delay/vbdev_delay{,_rpc}.c): create over a
// claimed base, delete, update_latency, and its RPC methods. Params, replies and error codes as
// SPDK's: a decoding failure is -32603 "spdk_json_decode_object failed", other failures -errno
// with strerror().
//
// One difference: SPDK remembers a vbdev whose base bdev does not exist yet and creates it when
// the base appears (examine). vhostd's bdevs never appear late, so a missing base is -ENODEV.
// The delay bdev claims its base (bdev_get_bdevs shows it claimed); deleting the base deletes the
// delay bdev first (registry cascade), and fails with EBUSY if it is in use.
import type { BdevModule, BdevModuleContext, BdevRpcMethod } from '../../module.js';
import { decodeBdevParams } from '../../module.js';
import type { BdevRegistry } from '../../registry.js';
import { findBase, registerVbdev } from '../../vbdev-module.js';
import { optional, required } from '../../../util/decode.js';
import { VhostdError, invalidParams } from '../../../util/errors.js';
import { DELAY_TYPE_NAMES, DelayBdev, DelayChannel, type DelayLatencies, type DelayType } from './delay.js';

export interface DelayCreateParams extends DelayLatencies {
  name: string;
  baseName: string;
  uuid?: string;
}

/** Creates the delay bdev over `baseName` (by name or UUID), claiming the base; returns it. */
export function createDelay(bdevs: BdevRegistry, p: DelayCreateParams): DelayBdev {
  if (p.p99ReadUs < p.avgReadUs || p.p99WriteUs < p.avgWriteUs) {
    throw VhostdError.errno('EINVAL', 'p99 latency must not be less than the average latency');
  }
  bdevs.checkNameFree(p.name, p.uuid);
  return registerVbdev(bdevs, findBase(bdevs, p.baseName), p.name, (claim) => new DelayBdev(p.name, claim.base, p, p.uuid, claim.release));
}

export function deleteDelay(bdevs: BdevRegistry, name: string): Promise<void> {
  return bdevs.delete(name, 'delay');
}

/** bdev_delay_update_latency; -32602 with SPDK's messages for a bad type or bdev. */
export function updateDelayLatency(bdevs: BdevRegistry, name: string, latencyType: string, us: number): void {
  const type: DelayType | undefined = Object.hasOwn(DELAY_TYPE_NAMES, latencyType) ? DELAY_TYPE_NAMES[latencyType] : undefined;
  if (type === undefined) throw invalidParams('Please specify a valid latency type.');
  const bdev = bdevs.list().find((b) => b.name === name);
  if (!(bdev instanceof DelayBdev)) throw invalidParams('The requested bdev does not exist.');
  bdev.setLatency(type, us);
}

const createSchema = {
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

const nameSchema = { name: required('string') };

function rpcMethods(ctx: BdevModuleContext): BdevRpcMethod[] {
  return [
    {
      name: 'bdev_delay_create',
      handler(params) {
        const p = decodeBdevParams(params, createSchema);
        const bdev = createDelay(ctx.bdevs, {
          name: p.name,
          baseName: p.base_bdev_name,
          uuid: p.uuid,
          avgReadUs: p.avg_read_latency,
          p99ReadUs: p.p99_read_latency,
          avgWriteUs: p.avg_write_latency,
          p99WriteUs: p.p99_write_latency,
        });
        ctx.logger.info({ bdev: bdev.name, base: bdev.base.name }, `delay bdev ${bdev.name} created on ${bdev.base.name}`);
        return bdev.name;
      },
    },
    {
      name: 'bdev_delay_delete',
      async handler(params) {
        const p = decodeBdevParams(params, nameSchema);
        await deleteDelay(ctx.bdevs, p.name);
        return true;
      },
    },
    {
      name: 'bdev_delay_update_latency',
      handler(params) {
        const p = decodeBdevParams(params, updateLatencySchema);
        updateDelayLatency(ctx.bdevs, p.delay_bdev_name, p.latency_type, p.latency_us);
        return true;
      },
    },
  ];
}

export const delayModule: BdevModule = {
  name: 'delay',
  bdevModules: ['delay'],
  channels: { delay: (spec, open) => new DelayChannel(spec, open) },
  rpcMethods,
};
