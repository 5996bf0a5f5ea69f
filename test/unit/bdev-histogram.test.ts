// Latency histograms in SPDK's format (src/bdev/histogram.ts): the bucket math of SPDK's
// include/spdk/histogram_data.h, the v25.09 bdev_get_histogram encoding (trimmed to the ranges of
// [min_nsec, max_nsec), values outside folded into the end buckets), recording through the layer
// channel only while enabled and only for the chosen opc, and save_config's calls.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { BdevLayer } from '../../src/bdev/bdev-layer.js';
import { HISTOGRAM_BUCKETS, bucketEnd, bucketOf, decodeHistogram, percentiles } from '../../src/bdev/histogram.js';
import { type BdevIo, IoStatus, IoType, IoVecs } from '../../src/bdev/io.js';
import { LayerChannel } from '../../src/bdev/layer-channel.js';

describe('histogram buckets', () => {
  it("SPDK's ranges: one value per bucket below 256, then 128 buckets per power of two", () => {
    for (const v of [0, 1, 127, 128, 255]) assert.equal(bucketOf(v), v);
    assert.equal(bucketOf(256), 256);
    assert.equal(bucketOf(257), 256, 'range 2 buckets are 2 wide');
    assert.equal(bucketEnd(256), 258);
    assert.equal(bucketOf(1000), 3 * 128 + 122);
    assert.equal(bucketEnd(3 * 128 + 121), 1000, 'the previous bucket ends where 1000 starts');
    assert.equal(bucketEnd(3 * 128 + 122), 1004);
    assert.equal(bucketOf(2 ** 52), 46 * 128);
    assert.ok(bucketOf(2 ** 53 - 1) < HISTOGRAM_BUCKETS);
  });

  it('every value lies in [end of the previous bucket, end of its bucket)', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (v) => {
        const b = bucketOf(v);
        const start = b === 0 ? 0 : bucketEnd(b - 1);
        return start <= v && v < bucketEnd(b);
      }),
      { numRuns: 20_000 },
    );
  });
});

class Instant implements BdevChannel {
  submit(io: BdevIo): void {
    io.complete(IoStatus.SUCCESS);
  }
  close(): void {}
}

/** Completes each I/O `ms` later. */
class Slow implements BdevChannel {
  constructor(private readonly ms: number) {}
  submit(io: BdevIo): void {
    // A timer counts from the event loop's cached time, which can be behind the submission by
    // a busy turn: it then fires early. Re-arm until the full time has passed.
    const due = performance.now() + this.ms;
    const fire = () => {
      const left = due - performance.now();
      if (left > 0) setTimeout(fire, left);
      else io.complete(IoStatus.SUCCESS);
    };
    setTimeout(fire, this.ms);
  }
  close(): void {}
}

function run(ch: BdevChannel, type: IoType): Promise<IoStatus> {
  return new Promise((resolve) => ch.submit({ type, offset: 0, length: 4096, iov: new IoVecs(1), complete: resolve }));
}

describe('bdev histogram', () => {
  it('records only while enabled, only the chosen opc; the reply is SPDK v25.09 shaped', async () => {
    const layer = new BdevLayer();
    const ch = new LayerChannel(new Slow(5), layer.share);
    await run(ch, IoType.READ);
    assert.equal(layer.histogramEnabled, false);
    layer.setHistogram(true, 'write');
    await Promise.all([run(ch, IoType.READ), run(ch, IoType.WRITE), run(ch, IoType.WRITE)]);
    const j = layer.histogramJson();
    assert.deepEqual(Object.keys(j), ['histogram', 'granularity', 'min_range', 'max_range', 'tsc_rate']);
    assert.equal(j.granularity, 7);
    assert.equal(j.tsc_rate, 1e9);
    // Default span [1 µs, 120 s) in ns: ranges 3 (1000 = 2^9.97) to 30 (1.2e11 = 2^36.8).
    assert.equal(j.min_range, 3);
    assert.equal(j.max_range, 30);
    const counts = decodeHistogram(j.histogram);
    assert.equal(counts.length, (30 - 3 + 1) * 128);
    assert.equal(counts.reduce((a, b) => a + b, 0), 2, 'the two writes, not the read');
    const [p50] = percentiles(counts, [50], j.min_range);
    assert.ok(p50 >= 4.5e6 && p50 < 40e6, `p50 ${p50} ns for 5 ms I/O`);
    assert.deepEqual(layer.writeConfig('B'), [{ method: 'bdev_enable_histogram', params: { name: 'B', enable: true, opc: 'write' } }]);
    layer.setHistogram(false);
    await run(ch, IoType.WRITE);
    assert.equal(layer.histogramEnabled, false);
    layer.setHistogram(true);
    assert.equal(decodeHistogram(layer.histogramJson().histogram).reduce((a, b) => a + b, 0), 0, 'enabling again starts empty');
    assert.deepEqual(layer.writeConfig('B'), [{ method: 'bdev_enable_histogram', params: { name: 'B', enable: true } }]);
    ch.close();
  });

  it('values outside [min_nsec, max_nsec) land in the first and last bucket', async () => {
    const layer = new BdevLayer();
    layer.setHistogram(true, undefined, { minNs: 10e6, maxNs: 20e6 });
    const ch = new LayerChannel(new Instant(), layer.share);
    for (let i = 0; i < 3; i++) await run(ch, IoType.READ); // ~0 ns: below the span
    const j = layer.histogramJson();
    const counts = decodeHistogram(j.histogram);
    assert.equal(counts[0], 3);
    assert.equal(j.min_range, Math.floor(bucketOf(10e6) / 128));
    ch.close();
  });
});
