// Fuzzes the virtio-blk request parser (src/devices/blk/blk-handler.ts) with random request chains
// — random types, sectors, header/data/status layouts, overlapping buffers — walked by the real
// ChainWalker over guest memory, on malloc and null bdevs behind a channel that completes
// synchronously, later, or with failures. Properties: a chain with no writable byte is refused by
// throwing (the device stops); any other gets exactly one completion, with status 0, 1 or 2, a used
// length within the writable bytes; guest memory changes only inside the chain's writable buffers;
// a read-only device's bdev never changes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import fc from 'fast-check';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { type BdevIo, IoStatus } from '../../src/bdev/io.js';
import { LayerChannel } from '../../src/bdev/layer-channel.js';
import { MallocBdev, MallocChannel } from '../../src/bdev/modules/malloc/malloc.js';
import { NullBdev, NullChannel } from '../../src/bdev/modules/null/null.js';
import { BlkHandler } from '../../src/devices/blk/blk-handler.js';
import { type BlkDeviceSpec, BlkReqType } from '../../src/devices/blk/blk-spec.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { QueueRunner } from '../../src/virtio/queue-runner.js';
import { Chain, ChainError, ChainWalker } from '../../src/virtio/desc-chain.js';
import { fuzzParams } from './lib/fuzz.js';
import { layerOf, openSpecOf } from '../unit/helpers/open-spec.js';

const MEM = 128 * 1024;
const QUEUE_SIZE = 64;

/**
 * Completes I/O as a script says: inline, on a later tick, failed, or NOMEM. NOMEM is never
 * answered twice in a row: the bdev layer above resubmits a refused request until the bdev takes
 * it, so a bdev that refuses forever never completes anything.
 */
class ScriptedChannel implements BdevChannel {
  private n = 0;
  private refused = false;
  constructor(
    private readonly inner: BdevChannel,
    private readonly script: number[],
  ) {}
  submit(io: BdevIo): void {
    let action = this.script.length ? this.script[this.n++ % this.script.length] : 0;
    if (action === 3 && this.refused) action = 0;
    this.refused = action === 3;
    if (action === 1) setImmediate(() => this.inner.submit(io));
    else if (action === 2) io.complete(IoStatus.FAILED);
    else if (action === 3) queueMicrotask(() => io.complete(IoStatus.NOMEM));
    else this.inner.submit(io);
  }
  close(): void {}
}

interface Buf {
  off: number;
  len: number;
  write: boolean;
}

const typeArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(BlkReqType.IN, BlkReqType.OUT, BlkReqType.FLUSH, BlkReqType.GET_ID, BlkReqType.DISCARD, BlkReqType.WRITE_ZEROES) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
);

const lenArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 4 }).map((k) => k * 4096) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 16 }).map((k) => k * 512) },
  { weight: 2, arbitrary: fc.constantFrom(0, 1, 15, 16, 17, 20, 511, 4096, 65536) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 70000 }) },
);

const caseArb = fc.record({
  type: typeArb,
  sector: fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 60 }).map((k) => k * 8) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 600 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 32 }) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map(Number) },
  ),
  // Range payload of DISCARD / WRITE_ZEROES: sector, num_sectors, flags.
  seg: fc.record({
    sector: fc.oneof(fc.integer({ min: 0, max: 60 }).map((k) => k * 8), fc.integer({ min: 0, max: 600 })),
    num: fc.oneof(fc.integer({ min: 0, max: 8 }).map((k) => k * 8), fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 0xffffffff })),
    flags: fc.constantFrom(0, 0, 1, 2, 0xffffffff),
  }),
  headerLen: fc.oneof({ weight: 5, arbitrary: fc.constant(16) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }) }),
  outs: fc.oneof({ weight: 3, arbitrary: fc.array(lenArb, { maxLength: 4 }) }, { weight: 1, arbitrary: fc.constant<number[]>([16]) }),
  ins: fc.array(lenArb, { maxLength: 4 }),
  statusLen: fc.oneof({ weight: 6, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 }) }),
  // Where buffers go: packed one after another, or at random (possibly overlapping) offsets.
  placement: fc.array(fc.integer({ min: 0, max: MEM - 1 }), { minLength: 12, maxLength: 12 }),
  packedLayout: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  readonly: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  backend: fc.constantFrom('malloc', 'null'),
  blockSize: fc.constantFrom(512, 4096),
  script: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 4 }),
  seed: fc.integer({ min: 0, max: 255 }),
});

type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

async function runCase(c: Case): Promise<void> {
  const buffer = new SharedArrayBuffer(MEM);
  const u8 = new Uint8Array(buffer);
  for (let i = 0; i < MEM; i++) u8[i] = (i * 131 + c.seed) & 0xff;
  const mem = new GuestMemory([{ gpa: 0x100000, size: MEM, uva: 0x7f0000000000, base: 0, buffer }]);

  // Lay out header, data-out, data-in and status buffers.
  const bufs: Buf[] = [];
  const specs: Array<[number, boolean]> = [[c.headerLen, false], ...c.outs.map((l) => [l, false] as [number, boolean]), ...c.ins.map((l) => [l, true] as [number, boolean]), [c.statusLen, true]];
  let cursor = 4096;
  specs.forEach(([len, write], i) => {
    let off = c.packedLayout ? cursor : c.placement[i % c.placement.length];
    if (off + len > MEM) off = Math.max(0, MEM - len);
    cursor = off + len;
    bufs.push({ off, len: Math.min(len, MEM), write });
  });
  // Header (and the range segment right after it, in the first data-out buffer if any).
  const hv = new DataView(buffer);
  const header = new Uint8Array(16);
  const h = new DataView(header.buffer);
  h.setUint32(0, c.type >>> 0, true);
  h.setUint32(8, c.sector % 2 ** 32, true);
  h.setUint32(12, Math.floor(c.sector / 2 ** 32) % 2 ** 32, true);
  u8.set(header.subarray(0, Math.min(16, bufs[0].len)), bufs[0].off);
  if (c.outs.length > 0 && bufs[1].len >= 16) {
    hv.setBigUint64(bufs[1].off, BigInt(c.seg.sector), true);
    hv.setUint32(bufs[1].off + 8, c.seg.num, true);
    hv.setUint32(bufs[1].off + 12, c.seg.flags, true);
  }
  // Descriptor table: buffers chained in order.
  const table = new DataView(new ArrayBuffer(QUEUE_SIZE * 16));
  bufs.forEach((b, i) => {
    const d = i * 16;
    table.setBigUint64(d, BigInt(0x100000 + b.off), true);
    table.setUint32(d + 8, b.len, true);
    table.setUint16(d + 12, (b.write ? 2 : 0) | (i + 1 < bufs.length ? 1 : 0), true);
    table.setUint16(d + 14, i + 1, true);
  });
  const chain = new Chain(126 + 8);
  const rc = new ChainWalker(mem, true).walk(new Uint32Array(table.buffer), 0, QUEUE_SIZE, 0, chain);
  if (rc !== ChainError.OK) return; // the queue runner stops the device; nothing for the handler

  const capacity = 64 * 4096;
  const bdev = c.backend === 'malloc' ? new MallocBdev('M', c.blockSize, capacity) : new NullBdev('N', c.blockSize, capacity / c.blockSize);
  const bdevBytes = bdev instanceof MallocBdev ? new Uint8Array(bdev.buffer) : undefined;
  bdevBytes?.fill(0x5a);
  const inner = bdev instanceof MallocBdev ? new MallocChannel(bdev.channelSpec()) : new NullChannel();
  const spec: BlkDeviceSpec = {
    kind: 'blk',
    name: 'fuzz',
    bdev: openSpecOf(bdev),
    readonly: c.readonly,
    blockSize: c.blockSize,
    capacityBytes: capacity,
    serial: 'fuzz-serial-0123456789abcdef',
    segMax: 126,
    maxDiscardSectors: 0x400000,
    maxWriteZeroesSectors: 0x400000,
    unmap: bdev.module === 'malloc' && !c.readonly,
    writeZeroes: !c.readonly,
  };
  const completions: Array<[number, number]> = [];
  const runner = { queue: { size: QUEUE_SIZE }, complete: (head: number, len: number) => completions.push([head, len]) } as unknown as QueueRunner;
  // As a device runs it: through the bdev layer, which retries what the scripted bdev refuses with NOMEM.
  const channel = new LayerChannel(new ScriptedChannel(inner, c.script), layerOf(bdev).share);
  const handler = new BlkHandler(runner, channel, spec, () => {});
  const before = u8.slice();
  const bdevBefore = bdevBytes?.slice();

  const statusAt = chain.lastWin ? chain.lastWin.byteOffset + chain.lastOff : -1;
  try {
    handler.handle(0, chain);
  } catch (e) {
    assert.equal(chain.writableLen, 0, `handle threw with ${chain.writableLen} writable bytes: ${(e as Error).message}`);
    assert.match((e as Error).message, /no device-writable status byte/);
    assert.deepEqual(completions, []);
    return;
  }
  assert.ok(chain.writableLen >= 1, 'a chain without a writable byte was accepted');
  for (let i = 0; i < 50 && completions.length === 0; i++) await tick();
  await tick();
  await tick();
  assert.equal(completions.length, 1, `completions: ${JSON.stringify(completions)}`);
  const [head, usedLen] = completions[0];
  assert.equal(head, 0);
  assert.ok(usedLen >= 1 && usedLen <= chain.writableLen, `used length ${usedLen} of ${chain.writableLen} writable bytes`);
  assert.ok([0, 1, 2].includes(u8[statusAt]), `status ${u8[statusAt]}`);
  if (u8[statusAt] !== 0) assert.equal(usedLen, 1);

  // Only writable buffers (as the guest described them) may have changed.
  const writable = (i: number) => bufs.some((b) => b.write && i >= b.off && i < b.off + b.len);
  for (let i = 0; i < MEM; i++) {
    if (u8[i] !== before[i] && !writable(i)) assert.fail(`byte ${i} changed outside the writable buffers`);
  }
  if (c.readonly && bdevBytes && bdevBefore) assert.ok(Buffer.from(bdevBytes).equals(Buffer.from(bdevBefore)), 'read-only bdev was written');
}

describe('fuzz: virtio-blk request handling', () => {
  it('random chains complete once, with a valid status, writing only writable buffers', { timeout: 300_000 }, async () => {
    await fc.assert(fc.asyncProperty(caseArb, runCase), fuzzParams(600));
  });
});
