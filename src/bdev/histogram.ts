// Latency histograms in SPDK's format (include/spdk/histogram_data.h), so that SPDK's
// scripts/histogram.py reads bdev_get_histogram from vhostd as from SPDK: 64 - shift + 1 ranges
// of 2^shift buckets; a value v lands in range r = max(0, (64 - shift) - clz64(v)) and bucket
// (v >> max(0, r - 1)) & (2^shift - 1); the reply is the base64 of the bucket counts as
// little-endian uint64, range-major, with bucket_shift and tsc_rate (here ticks are ns: 1e9).
//
// Recording: every thread (the control thread and each reactor) owns one block of buckets in the
// bdev's shared buffer and is its only writer, so a count is a plain store; the control thread
// sums the blocks when asked. The buffer is allocated with the bdev but its pages are only touched
// once the histogram is enabled (bdev_enable_histogram), and recording costs one load per I/O
// while it is off.
import { availableParallelism } from 'node:os';
import { threadSlot } from './thread-slot.js';

/** SPDK_HISTOGRAM_BUCKET_SHIFT_DEFAULT. */
export const HISTOGRAM_BUCKET_SHIFT = 7;
const SHIFT = HISTOGRAM_BUCKET_SHIFT;
const PER_RANGE = 1 << SHIFT;
const MASK = PER_RANGE - 1;
const LSB = 64 - SHIFT;
const RANGES = LSB + 1;
export const HISTOGRAM_BUCKETS = PER_RANGE * RANGES;
/** Ticks per second of recorded values (nanoseconds). */
export const HISTOGRAM_TICK_RATE = 1_000_000_000;
const TWO32 = 4294967296;

/** Bytes of a bdev's histogram buffer: a block per thread that may record (control + reactors). */
export function histogramBufferBytes(): number {
  return (availableParallelism() + 1) * HISTOGRAM_BUCKETS * 8;
}

/** Bucket position (range * 2^shift + index) of a value (a non-negative integer below 2^53). */
export function bucketOf(v: number): number {
  const hi = Math.floor(v / TWO32);
  const clz = hi !== 0 ? Math.clz32(hi) : 32 + Math.clz32(v >>> 0);
  const range = clz <= LSB ? LSB - clz : 0;
  const index = range === 0 ? v & MASK : Math.floor(v / 2 ** (range - 1)) & MASK;
  return range * PER_RANGE + index;
}

/** The first value past bucket `pos` (SPDK's __spdk_histogram_data_get_bucket_start of index + 1). */
export function bucketEnd(pos: number): number {
  const range = Math.floor(pos / PER_RANGE);
  const index = (pos & MASK) + 1;
  return range > 0 ? 2 ** (range + SHIFT - 1) + index * 2 ** (range - 1) : index;
}

/** bdev_get_histogram's reply, in SPDK v25.09's key order. */
export interface HistogramJson {
  histogram: string;
  granularity: number;
  min_range: number;
  max_range: number;
  tsc_rate: number;
}

/** SPDK's bdev_enable_histogram defaults: min_nsec 1 µs, max_nsec 120 s. */
export const HISTOGRAM_DEFAULT_MIN_NS = 1000;
export const HISTOGRAM_DEFAULT_MAX_NS = 120_000_000_000;

/** Reactor side: records into this thread's block. */
export class HistogramRecorder {
  private readonly buckets: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    const blocks = buffer.byteLength / (HISTOGRAM_BUCKETS * 8);
    const slot = Math.min(threadSlot(), blocks - 1);
    this.buckets = new Float64Array(buffer, slot * HISTOGRAM_BUCKETS * 8, HISTOGRAM_BUCKETS);
  }

  /** Records one latency in ticks (ns). */
  record(ticks: number): void {
    this.buckets[bucketOf(Math.round(ticks))] += 1;
  }
}

/** Control side: the sum of every thread's block. */
export class BdevHistogram {
  constructor(private readonly buffer: SharedArrayBuffer) {}

  /** Bucket counts summed over the threads. */
  counts(): Float64Array {
    const total = new Float64Array(HISTOGRAM_BUCKETS);
    const blocks = this.buffer.byteLength / (HISTOGRAM_BUCKETS * 8);
    for (let b = 0; b < blocks; b++) {
      const block = new Float64Array(this.buffer, b * HISTOGRAM_BUCKETS * 8, HISTOGRAM_BUCKETS);
      for (let i = 0; i < HISTOGRAM_BUCKETS; i++) total[i] += block[i];
    }
    return total;
  }

  /** Zeroes every block (while recording is off, so no thread writes meanwhile). */
  clear(): void {
    new Float64Array(this.buffer).fill(0);
  }

  /**
   * bdev_get_histogram's reply (SPDK v25.09): the ranges that cover [minNs, maxNs), values outside
   * folded into the first and last bucket as SPDK tallies them, as base64 of little-endian uint64.
   */
  toJson(minNs: number, maxNs: number): HistogramJson {
    const counts = this.counts();
    const minRange = Math.floor(bucketOf(minNs) / PER_RANGE);
    const maxRange = Math.floor(bucketOf(Math.max(minNs, maxNs - 1)) / PER_RANGE);
    const first = minRange * PER_RANGE;
    const last = (maxRange + 1) * PER_RANGE - 1;
    const n = last - first + 1;
    const out = new Float64Array(n);
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      if (counts[i] === 0) continue;
      out[i < first ? 0 : i > last ? n - 1 : i - first] += counts[i];
    }
    const bytes = Buffer.alloc(n * 8);
    for (let i = 0; i < n; i++) bytes.writeBigUInt64LE(BigInt(out[i]), i * 8);
    return { histogram: bytes.toString('base64'), granularity: SHIFT, min_range: minRange, max_range: maxRange, tsc_rate: HISTOGRAM_TICK_RATE };
  }
}

/**
 * Percentiles (0-100) of bucket counts starting at range `minRange`, in ticks: the end of the
 * bucket where the cumulative count reaches each (as SPDK's tools report them).
 */
export function percentiles(counts: ArrayLike<number>, ps: number[], minRange = 0): number[] {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i];
  return ps.map((p) => {
    if (total === 0) return 0;
    const want = (p / 100) * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i];
      if (counts[i] > 0 && seen >= want) return bucketEnd(i + minRange * PER_RANGE);
    }
    return 0;
  });
}

/** Decodes bdev_get_histogram's base64 into bucket counts. */
export function decodeHistogram(base64: string): Float64Array {
  const bytes = Buffer.from(base64, 'base64');
  const out = new Float64Array(bytes.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = Number(bytes.readBigUInt64LE(i * 8));
  return out;
}
