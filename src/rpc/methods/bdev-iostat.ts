// bdev_get_iostat and bdev_reset_iostat (SPDK v25.09 lib/bdev/bdev_rpc.c): I/O statistics of
// every bdev or of one, optionally per channel, optionally reset after reading. The counters are updated by the reactors in shared memory
// (src/bdev/iostat.ts), so answering sends no message to any reactor.
import { type BdevIostat, IOSTAT_TICK_RATE, type IostatResetMode } from '../../bdev/iostat.js';
import type { Bdev } from '../../bdev/bdev.js';
import type { RpcContext } from '../../services/types.js';
import { RpcCode, VhostdError } from '../../util/errors.js';
import { optional } from '../decode.js';
import { bdevDecodeFailed, decodeBdevParams } from '../../bdev/module.js';
import type { RpcMethodDef } from './types.js';

const schema = { name: optional('string'), per_channel: optional('bool'), reset_mode: optional('string') };
const resetSchema = { name: optional('string'), mode: optional('string') };
const RESET_MODES = new Set(['all', 'maxmin', 'none']);

/** SPDK's reset-mode decoder: all, maxmin or none; anything else fails the decode. */
function resetMode(mode: string | undefined, fallback: string): IostatResetMode | 'none' {
  const m = mode ?? fallback;
  if (!RESET_MODES.has(m)) {
    throw bdevDecodeFailed(`mode ${JSON.stringify(m)}: one of all, maxmin, none`);
  }
  return m as IostatResetMode | 'none';
}

/** spdk_get_ticks(): here nanoseconds of a monotonic clock (tick_rate 1e9). */
function ticks(): number {
  return Number(process.hrtime.bigint());
}

export function iostatMethods(ctx: RpcContext): RpcMethodDef[] {
  const stats = (bdev: Bdev): BdevIostat => ctx.bdevs.layerOf(bdev).iostat;
  /** Resets the named bdev's statistics, or every bdev's. */
  const reset = (name: string | undefined, mode: IostatResetMode): void => {
    for (const b of name !== undefined ? [ctx.bdevs.get(name)] : ctx.bdevs.list()) stats(b).reset(mode);
  };
  return [
    {
      name: 'bdev_get_iostat',
      aliases: ['get_bdevs_iostat'],
      handler(params) {
        const p = decodeBdevParams(params, schema, { paramsOptional: true });
        if (p.per_channel === true && p.name === undefined) {
          throw VhostdError.errno('EINVAL', 'a bdev name is required for per channel statistics');
        }
        const mode = resetMode(p.reset_mode, 'none');
        let reply;
        if (p.name !== undefined) {
          const bdev = ctx.bdevs.get(p.name);
          if (p.per_channel === true) {
            reply = { tick_rate: IOSTAT_TICK_RATE, ticks: ticks(), name: bdev.name, channels: stats(bdev).channels() };
          } else {
            reply = { tick_rate: IOSTAT_TICK_RATE, ticks: ticks(), bdevs: [{ name: bdev.name, ...stats(bdev).device() }] };
          }
        } else {
          reply = { tick_rate: IOSTAT_TICK_RATE, ticks: ticks(), bdevs: ctx.bdevs.list().map((b) => ({ name: b.name, ...stats(b).device() })) };
        }
        if (mode !== 'none') reset(p.name, mode);
        return reply;
      },
    },
    {
      name: 'bdev_reset_iostat',
      handler(params) {
        const p = decodeBdevParams(params, resetSchema, { paramsOptional: true });
        const mode = resetMode(p.mode, 'all');
        if (mode === 'none') return true;
        reset(p.name, mode);
        return true;
      },
    },
  ];
}
