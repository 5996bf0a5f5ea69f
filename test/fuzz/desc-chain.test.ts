// Fuzzes the descriptor-chain walker (src/virtio/desc-chain.ts) over guest memory made of random
// regions in SharedArrayBuffers and random descriptor tables (split and packed; indirect tables
// inside guest memory). Properties: walk()/walkPacked() never throw and always return (bounded
// work), every segment lies inside a region's bytes (never in buffer slack or another region),
// lengths add up, the scatter list never exceeds its capacity — and the walker agrees with the
// reference walker (the straightforward implementation it replaced) on every input.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { RegionShare } from '../../src/memory/region.js';
import { Chain, ChainError, ChainWalker } from '../../src/virtio/desc-chain.js';
import { fuzzParams } from './lib/fuzz.js';
import { RefChain, ReferenceWalker } from './lib/reference-walker.js';

const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const MAX_INDIRECT = 4096;

interface RegionSpec {
  gapPages: number;
  pages: number;
  basePages: number;
  slackPages: number;
}

const regionArb: fc.Arbitrary<RegionSpec> = fc.record({
  gapPages: fc.integer({ min: 0, max: 4 }),
  pages: fc.integer({ min: 1, max: 4 }),
  basePages: fc.integer({ min: 0, max: 1 }),
  slackPages: fc.integer({ min: 0, max: 1 }),
});

const PAGE = 4096;

function buildMemory(specs: RegionSpec[], fill: (u8: Uint8Array) => void): { mem: GuestMemory; shares: RegionShare[] } {
  const shares: RegionShare[] = [];
  let gpa = 0;
  for (const s of specs) {
    gpa += s.gapPages * PAGE;
    const size = s.pages * PAGE;
    const base = s.basePages * PAGE;
    const buffer = new SharedArrayBuffer(base + size + s.slackPages * PAGE);
    const u8 = new Uint8Array(buffer);
    fill(u8.subarray(base, base + size));
    // Slack before and after the region's bytes is marked so a stray segment shows.
    u8.fill(0xee, 0, base);
    u8.fill(0xee, base + size);
    shares.push({ gpa, size, uva: 0x7f0000000000 + gpa, base, buffer });
    gpa += size;
  }
  return { mem: new GuestMemory(shares), shares };
}

interface DescSpec {
  addrKind: number;
  addrOff: number;
  rawAddr: bigint;
  len: number;
  flags: number;
  next: number;
}

const descArb: fc.Arbitrary<DescSpec> = fc.record({
  addrKind: fc.integer({ min: 0, max: 11 }),
  addrOff: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 256 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 5 * PAGE }) }, { weight: 1, arbitrary: fc.integer({ min: -32, max: 0 }) }),
  rawAddr: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  len: fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 1, max: 64 }).map((n) => n * 16) },
    { weight: 2, arbitrary: fc.constantFrom(0, 1, 16, 512, PAGE, PAGE + 1, 0xffffffff) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 3 * PAGE }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
  ),
  flags: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(F_NEXT, F_NEXT, F_NEXT | F_WRITE, 0, F_WRITE, F_INDIRECT) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
  ),
  next: fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 0xffff })),
});

/** Writes descriptor `d` at byte `off` of `v`; addresses are biased towards the regions. */
function writeDesc(v: DataView, off: number, d: DescSpec, gpas: number[], packed: boolean): void {
  let addr: bigint;
  if (d.addrKind < 10 && gpas.length > 0) addr = BigInt(Math.max(0, gpas[d.addrKind % gpas.length] + d.addrOff));
  else addr = d.rawAddr;
  v.setBigUint64(off, addr, true);
  v.setUint32(off + 8, d.len, true);
  if (packed) {
    v.setUint16(off + 12, d.next, true); // buffer id
    v.setUint16(off + 14, d.flags, true);
  } else {
    v.setUint16(off + 12, d.flags, true);
    v.setUint16(off + 14, d.next, true);
  }
}

const caseArb = fc.record({
  regions: fc.array(regionArb, { minLength: 1, maxLength: 3 }),
  table: fc.array(descArb, { minLength: 1, maxLength: 32 }),
  soup: fc.array(descArb, { minLength: 1, maxLength: 64 }),
  sizeLog: fc.integer({ min: 0, max: 6 }),
  head: fc.nat(),
  indirect: fc.boolean(),
  capacity: fc.integer({ min: 1, max: 20 }),
  packed: fc.boolean(),
  /** A region to translate into before the walk (-1: none), so the walk starts from its window. */
  prime: fc.integer({ min: -1, max: 2 }),
});

type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

function check(c: Case): void {
  const size = 1 << c.sizeLog;
  const gpas: number[] = [];
  for (let gpa = 0, i = 0; i < c.regions.length; i++) {
    gpa += c.regions[i].gapPages * PAGE;
    gpas.push(gpa);
    gpa += c.regions[i].pages * PAGE;
  }
  const { mem, shares } = buildMemory(c.regions, (u8) => {
    // Guest memory holds "descriptor soup", so indirect tables read plausible descriptors.
    const v = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
    for (let off = 0, i = 0; off + 16 <= u8.length; off += 16, i++) writeDesc(v, off, c.soup[i % c.soup.length], gpas, c.packed);
  });
  assert.deepEqual(shares.map((s) => s.gpa), gpas);
  // The table itself, in a separate buffer (as a ring in guest memory would be).
  const tbuf = new ArrayBuffer(8 + size * 16 + 8);
  const tv = new DataView(tbuf);
  for (let i = 0; i < size; i++) writeDesc(tv, 8 + i * 16, c.table[i % c.table.length], gpas, c.packed);
  const walker = new ChainWalker(mem, c.indirect);
  const chain = new Chain(c.capacity);
  const head = c.head % size;
  const words = new Uint32Array(tbuf);
  if (c.prime >= 0) mem.translate(gpas[c.prime % gpas.length], 1);
  const rc = c.packed ? walker.walkPacked(words, 2, size, head, chain) : walker.walk(words, 2, size, head, chain);
  // The same chain again starts from the window the first walk ended in (the walker's inline
  // path for buffers there): it must find the same.
  const again = new Chain(c.capacity);
  const rcAgain = c.packed ? walker.walkPacked(words, 2, size, head, again) : walker.walk(words, 2, size, head, again);
  assert.equal(rcAgain, rc, 'a second walk of the same chain gives another result');

  // Differential: the same code, and on success the same chain, as the reference walker.
  const ref = new ReferenceWalker(mem, c.indirect);
  const refChain = new RefChain(c.capacity);
  const refRc = c.packed ? ref.walkPacked(tv, 8, size, head, refChain) : ref.walk(tv, 8, size, head, refChain);
  assert.equal(rc, refRc, 'result code differs from the reference walker');
  if (rc === ChainError.OK) {
    const seg = (iov: { count: number; bufs: Uint8Array[]; offs: Uint32Array; lens: Uint32Array }) =>
      Array.from({ length: iov.count }, (_, i) => [iov.bufs[i].buffer, iov.bufs[i].byteOffset + iov.offs[i], iov.lens[i]]);
    assert.deepEqual(seg(chain.iov), seg(refChain.iov));
    assert.equal(chain.iov.totalLen, refChain.iov.totalLen);
    const facts = (x: Chain | RefChain) => [x.firstWritable, x.readableLen, x.writableLen, x.overflow, x.descCount, x.lastWin?.buffer, (x.lastWin?.byteOffset ?? 0) + x.lastOff, 'firstWords' in x ? x.firstWords?.buffer : x.firstView?.buffer, ('firstWords' in x ? (x.firstWords?.byteOffset ?? 0) : (x.firstView?.byteOffset ?? 0)) + x.firstOff];
    assert.deepEqual(facts(chain), facts(refChain));
    assert.deepEqual(seg(again.iov), seg(chain.iov));
    assert.deepEqual(facts(again), facts(chain));
    if (c.packed) assert.deepEqual([chain.ringDescs, chain.id], [refChain.ringDescs, refChain.id]);
  }

  assert.ok(Object.values(ChainError).includes(rc as never), `code ${rc}`);
  assert.ok(chain.descCount <= size + MAX_INDIRECT + 1, `descCount ${chain.descCount}`);
  assert.ok(chain.iov.count <= c.capacity);
  if (c.packed) assert.ok(chain.ringDescs <= size);
  // Segments found so far (also on error) must lie in region bytes.
  for (let i = 0; i < chain.iov.count; i++) {
    const buf = chain.iov.bufs[i];
    const off = chain.iov.offs[i];
    const len = chain.iov.lens[i];
    const share = shares.find((s) => s.buffer === buf.buffer);
    assert.ok(share, `segment ${i} is in no region's buffer`);
    assert.ok(len > 0, `segment ${i} is empty`);
    const start = buf.byteOffset + off;
    assert.ok(start >= share.base && start + len <= share.base + share.size, `segment ${i} [${start}, +${len}) outside region bytes [${share.base}, +${share.size})`);
  }
  if (rc !== ChainError.OK) return;
  assert.ok(chain.firstWritable <= chain.iov.count);
  if (!chain.overflow) {
    let r = 0;
    let w = 0;
    for (let i = 0; i < chain.iov.count; i++) (i < chain.firstWritable ? (r += chain.iov.lens[i]) : (w += chain.iov.lens[i]));
    assert.equal(r, chain.readableLen);
    assert.equal(w, chain.writableLen);
  }
  if (chain.writableLen > 0) {
    assert.ok(chain.lastWin);
    const share = shares.find((s) => s.buffer === chain.lastWin?.buffer);
    assert.ok(share);
    const at = chain.lastWin.byteOffset + chain.lastOff;
    assert.ok(at >= share.base && at < share.base + share.size, 'status byte outside region bytes');
  } else {
    assert.equal(chain.lastWin, undefined);
  }
}

describe('fuzz: descriptor-chain walker', () => {
  it('split and packed chains over random memory', { timeout: 120_000 }, () => {
    fc.assert(fc.property(caseArb, (c) => check(c)), fuzzParams(3000));
  });

  it('one long chain through the whole table hits the loop bound, not a hang', () => {
    // A descriptor pointing at itself, a 2-cycle, and a 32768-entry ring chained end to end.
    for (const size of [1, 2, 32768]) {
      const { mem } = buildMemory([{ gapPages: 0, pages: 1, basePages: 0, slackPages: 0 }], () => {});
      const tv = new DataView(new ArrayBuffer(size * 16));
      for (let i = 0; i < size; i++) writeDesc(tv, i * 16, { addrKind: 0, addrOff: 0, rawAddr: 0n, len: 1, flags: F_NEXT, next: (i + 1) % size }, [0], false);
      const chain = new Chain(4);
      assert.equal(new ChainWalker(mem, true).walk(new Uint32Array(tv.buffer), 0, size, 0, chain), ChainError.LOOP);
      assert.ok(chain.overflow || size <= 4);
    }
  });
});
