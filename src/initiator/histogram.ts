// Fixed-size log-linear latency histogram (HdrHistogram-style buckets): values in nanoseconds,
// exact below 2^SUB_BITS ns, then 2^SUB_BITS linear sub-buckets per power of two, so every bucket
// is at most 1/2^SUB_BITS (1.6 %) wide relative to its value. record() allocates nothing.

const SUB_BITS = 6;
const SUB = 1 << SUB_BITS;
/** Largest exponent kept: values from 2^MAX_EXP ns (~68.7 s) on land in the last bucket. */
const MAX_EXP = 36;
const BUCKETS = SUB + (MAX_EXP - SUB_BITS + 1) * SUB;
const MAX_VALUE = 2 ** MAX_EXP * 2 - 1;
const TWO32 = 4294967296;

/** 2^k for k = 0..MAX_EXP (exact in doubles). */
const POW2 = new Float64Array(MAX_EXP + 2);
for (let k = 0; k < POW2.length; k++) POW2[k] = 2 ** k;

export interface LatencySummary {
  count: number;
  /** All in microseconds. */
  minUs: number;
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
}

export class LatencyHistogram {
  readonly counts = new Float64Array(BUCKETS);
  count = 0;
  sumNs = 0;
  minNs = Number.POSITIVE_INFINITY;
  maxNs = 0;

  /** Bucket index of a value in ns (non-negative). */
  static bucketOf(ns: number): number {
    let v = ns > 0 ? Math.floor(ns) : 0;
    if (v > MAX_VALUE) v = MAX_VALUE;
    if (v < SUB) return v;
    const e = v < TWO32 ? 31 - Math.clz32(v) : 63 - Math.clz32(Math.floor(v / TWO32));
    const shift = e - SUB_BITS;
    const mant = Math.floor(v / POW2[shift]) - SUB;
    return SUB + shift * SUB + mant;
  }

  /** [low, high) of bucket `i` in ns. */
  static bucketRange(i: number): [number, number] {
    if (i < SUB) return [i, i + 1];
    const shift = Math.floor((i - SUB) / SUB);
    const mant = (i - SUB) % SUB;
    const low = (SUB + mant) * POW2[shift];
    return [low, low + POW2[shift]];
  }

  record(ns: number): void {
    this.counts[LatencyHistogram.bucketOf(ns)]++;
    this.count++;
    this.sumNs += ns;
    if (ns < this.minNs) this.minNs = ns;
    if (ns > this.maxNs) this.maxNs = ns;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sumNs = 0;
    this.minNs = Number.POSITIVE_INFINITY;
    this.maxNs = 0;
  }

  merge(other: LatencyHistogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] += other.counts[i];
    this.count += other.count;
    this.sumNs += other.sumNs;
    if (other.minNs < this.minNs) this.minNs = other.minNs;
    if (other.maxNs > this.maxNs) this.maxNs = other.maxNs;
  }

  /** The value (ns) at percentile p (0..100): midpoint of the bucket holding it, clamped to min/max. */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const [lo, hi] = LatencyHistogram.bucketRange(i);
        const mid = i < SUB ? lo : (lo + hi) / 2;
        return Math.min(this.maxNs, Math.max(this.minNs, mid));
      }
    }
    return this.maxNs;
  }

  summary(): LatencySummary {
    const us = (ns: number) => Math.round(ns / 10) / 100;
    return {
      count: this.count,
      minUs: this.count ? us(this.minNs) : 0,
      meanUs: this.count ? us(this.sumNs / this.count) : 0,
      p50Us: us(this.percentile(50)),
      p90Us: us(this.percentile(90)),
      p99Us: us(this.percentile(99)),
      p999Us: us(this.percentile(99.9)),
      maxUs: us(this.maxNs),
    };
  }

  /** Non-empty buckets as [lowNs, count] pairs (compact enough for JSON results). */
  buckets(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i] > 0) out.push([LatencyHistogram.bucketRange(i)[0], this.counts[i]]);
    return out;
  }
}
