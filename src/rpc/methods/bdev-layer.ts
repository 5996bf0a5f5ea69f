// The bdev layer's RPCs (SPDK v25.09 lib/bdev/bdev_rpc.c): bdev_set_qos_limit,
// bdev_enable_histogram, bdev_get_histogram. Decode → call the bdev's layer → encode; the
// semantics live in src/bdev (qos.ts, histogram.ts, bdev-layer.ts).
import { HISTOGRAM_OPC } from '../../bdev/bdev-layer.js';
import { HISTOGRAM_BUCKET_SHIFT } from '../../bdev/histogram.js';
import { QOS_LIMIT_KEYS, QOS_MAX_IOS_PER_SEC, QOS_MAX_MBYTES_PER_SEC, QOS_MIN_IOS_PER_SEC, type QosLimits } from '../../bdev/qos.js';
import type { RpcContext } from '../../services/types.js';
import { constants } from 'node:os';
import { RpcCode, VhostdError, invalidParams } from '../../util/errors.js';
import { decodeParams, optional, required } from '../decode.js';
import type { RpcMethodDef } from './types.js';

const DECODE_FAILED = 'spdk_json_decode_object failed';

/** SPDK answers a failed decode of these methods with -32603 and this message; the reason is kept as data. */
function decode<S extends Parameters<typeof decodeParams>[1]>(params: unknown, schema: S): ReturnType<typeof decodeParams<S>> {
  try {
    return decodeParams(params, schema, { message: DECODE_FAILED });
  } catch (e) {
    const err = new VhostdError(RpcCode.INTERNAL_ERROR, `${DECODE_FAILED}: ${(e as VhostdError).detail ?? (e as Error).message}`);
    err.detail = (e as VhostdError).detail;
    throw err;
  }
}

const qosSchema = {
  name: required('string'),
  rw_ios_per_sec: optional('uint64'),
  rw_mbytes_per_sec: optional('uint64'),
  r_mbytes_per_sec: optional('uint64'),
  w_mbytes_per_sec: optional('uint64'),
};

const enableHistogramSchema = {
  name: required('string'),
  enable: required('bool'),
  opc: optional('string'),
  granularity: optional('uint32'),
  min_nsec: optional('uint64'),
  max_nsec: optional('uint64'),
};

const getHistogramSchema = { name: required('string') };

export function bdevLayerMethods(ctx: RpcContext): RpcMethodDef[] {
  return [
    {
      name: 'bdev_set_qos_limit',
      aliases: ['set_bdev_qos_limit'],
      handler(params) {
        const p = decode(params, qosSchema);
        const bdev = ctx.bdevs.get(p.name);
        const change: Partial<QosLimits> = {};
        for (const k of QOS_LIMIT_KEYS) if (p[k] !== undefined) change[k] = p[k];
        if (Object.keys(change).length === 0) throw new VhostdError(-constants.errno.EINVAL, 'No rate limits specified');
        // Checked in full before anything is applied.
        const ios = change.rw_ios_per_sec;
        if (ios !== undefined && ios !== 0) {
          if (ios < QOS_MIN_IOS_PER_SEC) throw invalidParams(`rw_ios_per_sec ${ios} is below the minimum of ${QOS_MIN_IOS_PER_SEC} IO/s (0 removes the limit)`);
          if (ios > QOS_MAX_IOS_PER_SEC) throw invalidParams(`rw_ios_per_sec ${ios} is above the maximum of ${QOS_MAX_IOS_PER_SEC} IO/s`);
          // SPDK rounds up to a multiple of the minimum.
          const rounded = Math.ceil(ios / QOS_MIN_IOS_PER_SEC) * QOS_MIN_IOS_PER_SEC;
          if (rounded !== ios) ctx.logger.warn({ bdev: bdev.name, requested: ios, rounded }, `rw_ios_per_sec ${ios} is not a multiple of ${QOS_MIN_IOS_PER_SEC}: rounded up to ${rounded}`);
          change.rw_ios_per_sec = rounded;
        }
        for (const k of ['rw_mbytes_per_sec', 'r_mbytes_per_sec', 'w_mbytes_per_sec'] as const) {
          const v = change[k];
          if (v !== undefined && v > QOS_MAX_MBYTES_PER_SEC) throw invalidParams(`${k} ${v} is above the maximum of ${QOS_MAX_MBYTES_PER_SEC} MiB/s`);
        }
        ctx.bdevs.layerOf(bdev).qos.set(change);
        ctx.logger.info({ bdev: bdev.name, limits: ctx.bdevs.layerOf(bdev).qos.limits() }, 'QoS rate limits set');
        return true;
      },
    },
    {
      name: 'bdev_enable_histogram',
      aliases: ['enable_bdev_histogram'],
      handler(params) {
        const p = decode(params, enableHistogramSchema);
        const bdev = ctx.bdevs.get(p.name);
        if (p.opc !== undefined && !Object.hasOwn(HISTOGRAM_OPC, p.opc)) {
          const err = new VhostdError(RpcCode.INTERNAL_ERROR, 'Invalid Io type');
          err.detail = `opc ${JSON.stringify(p.opc)}: one of ${Object.keys(HISTOGRAM_OPC).join(', ')}`;
          throw err;
        }
        if (p.granularity !== undefined && p.granularity !== HISTOGRAM_BUCKET_SHIFT) {
          throw invalidParams(`granularity ${p.granularity}: vhostd records with granularity ${HISTOGRAM_BUCKET_SHIFT} only`);
        }
        if (p.min_nsec !== undefined && p.max_nsec !== undefined && p.min_nsec >= p.max_nsec) {
          throw invalidParams(`min_nsec ${p.min_nsec} must be below max_nsec ${p.max_nsec}`);
        }
        ctx.bdevs.layerOf(bdev).setHistogram(p.enable, p.opc, { minNs: p.min_nsec, maxNs: p.max_nsec });
        return true;
      },
    },
    {
      name: 'bdev_get_histogram',
      aliases: ['get_bdev_histogram'],
      handler(params) {
        const p = decode(params, getHistogramSchema);
        const layer = ctx.bdevs.layerOf(ctx.bdevs.get(p.name));
        // SPDK: a histogram never enabled has no buckets to size the reply from.
        if (!layer.histogramEnabled) throw VhostdError.errno('ENOMEM', `the histogram of bdev ${p.name} is not enabled (bdev_enable_histogram)`);
        return layer.histogramJson();
      },
    },
  ];
}
