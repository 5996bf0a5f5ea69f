// bdev_get_iostat (SPDK v24.01 lib/bdev/bdev_rpc.c): I/O statistics of every bdev or of one,
// optionally per channel. The counters are updated by the reactors in shared memory
// (src/bdev/iostat.ts), so answering sends no message to any reactor.
import { BdevIostat, IOSTAT_TICK_RATE, iostatOf } from '../../bdev/iostat.js';
import type { Bdev } from '../../bdev/bdev.js';
import type { RpcContext } from '../../services/types.js';
import { RpcCode, VhostdError } from '../../util/errors.js';
import { decodeParams, optional } from '../decode.js';
import type { RpcMethodDef } from './types.js';

const DECODE_FAILED = 'spdk_json_decode_object failed';
const schema = { name: optional('string'), per_channel: optional('bool') };

/** spdk_get_ticks(): here nanoseconds of a monotonic clock (tick_rate 1e9). */
function ticks(): number {
  return Number(process.hrtime.bigint());
}

function stats(bdev: Bdev): BdevIostat {
  return iostatOf(bdev) ?? new BdevIostat();
}

export function iostatMethods(ctx: RpcContext): RpcMethodDef[] {
  return [
    {
      name: 'bdev_get_iostat',
      aliases: ['get_bdevs_iostat'],
      handler(params) {
        let p;
        try {
          p = decodeParams(params, schema, { message: DECODE_FAILED, paramsOptional: true });
        } catch (e) {
          const err = new VhostdError(RpcCode.INTERNAL_ERROR, DECODE_FAILED);
          err.detail = (e as VhostdError).detail;
          throw err;
        }
        if (p.per_channel === true && p.name === undefined) {
          throw VhostdError.errno('EINVAL', 'a bdev name is required for per channel statistics');
        }
        if (p.name !== undefined) {
          const bdev = ctx.bdevs.get(p.name);
          if (p.per_channel === true) {
            return { tick_rate: IOSTAT_TICK_RATE, ticks: ticks(), name: bdev.name, channels: stats(bdev).channels() };
          }
          return { tick_rate: IOSTAT_TICK_RATE, ticks: ticks(), bdevs: [{ name: bdev.name, ...stats(bdev).device() }] };
        }
        return {
          tick_rate: IOSTAT_TICK_RATE,
          ticks: ticks(),
          bdevs: ctx.bdevs.list().map((b) => ({ name: b.name, ...stats(b).device() })),
        };
      },
    },
  ];
}
