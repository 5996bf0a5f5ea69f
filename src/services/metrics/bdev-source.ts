// The one place the metrics endpoint reads bdev statistics from. The bdev layer (src/bdev/) is
// being reworked, so every access to it goes through bdevMetricsSource() below and the
// BdevMetricsSource interface: when the layer changes, only this file follows it. Everything here
// is read at scrape time from what the data path keeps anyway (the layer's shared iostat and
// histogram buffers, bdev_get_iostat's and bdev_get_histogram's sources); nothing is added to the
// I/O path.
import type { Bdev } from '../../bdev/bdev.js';
import { HISTOGRAM_BUCKETS, HISTOGRAM_TICK_RATE, bucketEnd } from '../../bdev/histogram.js';
import { IOSTAT_TICK_RATE } from '../../bdev/iostat.js';
import type { BdevRegistry } from '../../bdev/registry.js';

/** What the metrics read the bdevs through: the registry (its list and each bdev's layer). */
export type BdevStatsRegistry = Pick<BdevRegistry, 'list' | 'layerOf'>;

/** Successful I/O of one kind since the bdev was registered. */
export interface OpCounters {
  bytes: number;
  ops: number;
  /** Sum of the latencies of those I/Os, in seconds (submit to completion at the bdev layer). */
  latencySeconds: number;
}

/** bdev_get_iostat's device counters, in base units. */
export interface BdevIoCounters {
  read: OpCounters;
  write: OpCounters;
  unmap: OpCounters;
  /** Flushes carry no bytes (bytes is 0). */
  flush: OpCounters;
  writeZeroes: OpCounters;
  /** Failed I/O (bdev_get_iostat io_error.failed). */
  failed: number;
}

/**
 * A latency histogram of a bdev (bdev_enable_histogram). `counts[i]` is the number of I/Os whose
 * latency fell in (bucketUpperBoundsSeconds[i-1], bucketUpperBoundsSeconds[i]]: per bucket, not
 * cumulative (SPDK's layout); the bounds ascend and the last may be Infinity. When the last bound
 * is finite, no I/O was slower than it. `sumSeconds`, when known, becomes the histogram's _sum.
 */
export interface BdevLatencyHistogram {
  bucketUpperBoundsSeconds: number[];
  counts: number[];
  sumSeconds?: number;
}

/** QoS (bdev_set_qos_limit) counters of a bdev. */
export interface BdevQosCounters {
  /** I/Os that were held back by a rate limit at least once, since the bdev was registered. */
  throttled_ios: number;
  /** I/Os held back right now, waiting for a later time slice (when the layer reports it). */
  queued_ios?: number;
}

/** What the metrics endpoint reads of one bdev; optional parts are emitted only when present. */
export interface BdevMetricsSource {
  io(): BdevIoCounters;
  /** Undefined (or absent) while no histogram is enabled on the bdev. */
  histogram?(): BdevLatencyHistogram | undefined;
  /** Undefined (or absent) when the bdev has no QoS state. */
  qos?(): BdevQosCounters | undefined;
}

/**
 * Prometheus bucket bounds of the latency histogram: powers of two nanoseconds from 2^10 (about
 * 1 µs) to 2^37 (about 137 s), then +Inf. SPDK's layout (histogram.ts) has 2^7 buckets per
 * power-of-two range, so each of these bounds is the end of a range and the coarse counts are
 * exact: every fine bucket falls wholly below some bound.
 */
const LE_NS = Array.from({ length: 28 }, (_, i) => 2 ** (10 + i));
export const HISTOGRAM_BOUNDS_SECONDS = [...LE_NS.map((ns) => ns / HISTOGRAM_TICK_RATE), Infinity];
let fineToCoarse: Uint8Array | undefined;

/** Index into HISTOGRAM_BOUNDS_SECONDS of each fine bucket: the first bound at or past its end. */
function coarseIndex(): Uint8Array {
  if (fineToCoarse) return fineToCoarse;
  const map = new Uint8Array(HISTOGRAM_BUCKETS);
  for (let pos = 0, k = 0; pos < HISTOGRAM_BUCKETS; pos++) {
    // Values in the bucket are below bucketEnd(pos), so they are <= LE_NS[k] once the end is.
    const end = bucketEnd(pos);
    while (k < LE_NS.length && end > LE_NS[k]) k++;
    map[pos] = k;
  }
  fineToCoarse = map;
  return map;
}

/**
 * The statistics of a registered bdev (undefined for one the registry does not know): the layer's
 * iostat counters, its QoS hold count (qos_held_ops; every bdev has one, 0 while unlimited), and
 * its latency histogram while bdev_enable_histogram has it on.
 */
export function bdevMetricsSource(bdevs: BdevStatsRegistry, bdev: Bdev): BdevMetricsSource | undefined {
  let layer: ReturnType<BdevStatsRegistry['layerOf']>;
  try {
    layer = bdevs.layerOf(bdev);
  } catch {
    return undefined;
  }
  /** The last iostat read, so that qos() after io() does not sum the slots twice. */
  let last: ReturnType<typeof layer.iostat.device> | undefined;
  return {
    io(): BdevIoCounters {
      const s = layer.iostat.device();
      last = s;
      const t = IOSTAT_TICK_RATE;
      return {
        read: { bytes: s.bytes_read, ops: s.num_read_ops, latencySeconds: s.read_latency_ticks / t },
        write: { bytes: s.bytes_written, ops: s.num_write_ops, latencySeconds: s.write_latency_ticks / t },
        unmap: { bytes: s.bytes_unmapped, ops: s.num_unmap_ops, latencySeconds: s.unmap_latency_ticks / t },
        flush: { bytes: 0, ops: s.num_flush_ops, latencySeconds: s.flush_latency_ticks / t },
        writeZeroes: { bytes: s.bytes_zeroed, ops: s.num_write_zeroes_ops, latencySeconds: s.write_zeroes_latency_ticks / t },
        failed: s.io_error?.failed ?? 0,
      };
    },
    qos: (): BdevQosCounters => ({ throttled_ios: (last ?? layer.iostat.device()).qos_held_ops ?? 0 }),
    histogram(): BdevLatencyHistogram | undefined {
      if (!layer.histogramEnabled) return undefined;
      const fine = layer.histogram.counts();
      const map = coarseIndex();
      const counts = new Array<number>(HISTOGRAM_BOUNDS_SECONDS.length).fill(0);
      for (let pos = 0; pos < fine.length; pos++) if (fine[pos] !== 0) counts[map[pos]] += fine[pos];
      return { bucketUpperBoundsSeconds: HISTOGRAM_BOUNDS_SECONDS, counts };
    },
  };
}
