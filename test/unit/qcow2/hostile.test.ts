// Hostile and damaged images: refused with a Qcow2Error (never another exception type, never
// a write through a bad pointer). Also refcount widths and overflow.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { Qcow2Error } from '../../../src/bdev/modules/qcow2/errors.js';
import { Qcow2Image } from '../../../src/bdev/modules/qcow2/image.js';
import { Refcounts, readRefcount, writeRefcount } from '../../../src/bdev/modules/qcow2/refcounts.js';
import { MemImageFile } from './mem-image-file.js';
import { qemuImg, qemuIo, tempDir } from './qemu.js';

let dir: string;
let cleanup: () => void;
let good: Uint8Array;
before(() => {
  ({ dir, cleanup } = tempDir());
  const p = join(dir, 'good.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p, '4M');
  qemuIo(p, 'write -P 0xab 0 64k');
  good = new Uint8Array(readFileSync(p));
});
after(() => cleanup());

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

function mutated(fn: (b: Uint8Array, v: DataView) => void): MemImageFile {
  const b = good.slice();
  fn(b, dv(b));
  return new MemImageFile(b);
}

async function openRw(f: MemImageFile, readonly = false): Promise<Qcow2Image> {
  return Qcow2Image.open(f, { readonly, name: 'image.qcow2' });
}

function isQcow2Error(pattern?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof Qcow2Error, `expected Qcow2Error, got ${String(e)}`);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

const L1_OFF = () => Number(dv(good).getBigUint64(40));
const L2_OFF = () => Number(dv(good).getBigUint64(L1_OFF()) & 0x00ff_ffff_ffff_fe00n);
const RT_OFF = () => Number(dv(good).getBigUint64(48));

describe('qcow2 hostile headers', () => {
  const cases: [string, (b: Uint8Array, v: DataView) => void, RegExp][] = [
    ['truncated file', () => {}, /too small/],
    ['bad magic', (_b, v) => v.setUint32(0, 0x12345678), /not a qcow2 image/],
    ['version 4', (_b, v) => v.setUint32(4, 4), /version 4/],
    ['cluster_bits 8', (_b, v) => v.setUint32(20, 8), /cluster_bits 8/],
    ['cluster_bits 22', (_b, v) => v.setUint32(20, 22), /cluster_bits 22/],
    ['refcount_order 7', (_b, v) => v.setUint32(96, 7), /refcount_order 7/],
    ['encryption', (_b, v) => v.setUint32(32, 2), /encrypted.*LUKS/],
    ['external data file', (_b, v) => v.setBigUint64(72, 4n), /external data file/],
    ['zstd compression', (b, v) => {
      v.setBigUint64(72, 8n);
      b[104] = 1;
    }, /zstd/],
    ['extended L2', (_b, v) => v.setBigUint64(72, 16n), /extended L2/],
    ['unknown incompatible bit', (_b, v) => v.setBigUint64(72, 1n << 10n), /incompatible feature bit 10/],
    ['header_length 100', (_b, v) => v.setUint32(100, 100), /header_length 100/],
    ['L1 table unaligned', (_b, v) => v.setBigUint64(40, BigInt(L1_OFF() + 8)), /not aligned/],
    ['L1 table past EOF', (_b, v) => v.setBigUint64(40, 0x100000n), /L1 table at 0x100000 .* extends past the end of the file/],
    ['L1 table in the header', (_b, v) => v.setBigUint64(40, 0n), /overlaps the image header/],
    ['L1 too small for the size', (_b, v) => v.setBigUint64(24, 1n << 40n), /too few/],
    ['refcount table past EOF', (_b, v) => v.setBigUint64(48, 0x1000000n), /refcount table .* past the end/],
    ['refcount table empty', (_b, v) => v.setUint32(56, 0), /refcount table is empty/],
    ['backing name too long', (_b, v) => {
      v.setBigUint64(8, 512n);
      v.setUint32(16, 2000);
    }, /too long/],
    ['header extension overruns', (b, v) => {
      const at = v.getUint32(100);
      v.setUint32(at, 0x12345678);
      v.setUint32(at + 4, 0xfffffff0);
      void b;
    }, /header extension/],
  ];
  for (const [label, fn, re] of cases) {
    it(label, async () => {
      const f = label === 'truncated file' ? new MemImageFile(good.slice(0, 50)) : mutated(fn);
      await assert.rejects(openRw(f, true), isQcow2Error(re));
    });
  }

  it('corrupt bit: read-only is fine, read-write is refused', async () => {
    const f = mutated((_b, v) => v.setBigUint64(72, 2n));
    await openRw(f, true);
    await assert.rejects(openRw(f), isQcow2Error(/corrupt/));
  });

  it('dirty bit with lazy refcounts (QEMU crashed: refcounts may be too low): read-only is fine, read-write asks for a repair', async () => {
    const f = mutated((_b, v) => (v.setBigUint64(72, 1n), v.setBigUint64(80, 1n)));
    await openRw(f, true);
    await assert.rejects(openRw(f), isQcow2Error(/dirty with lazy refcounts.*qemu-img check -r all/));
  });

  it('dirty bit without lazy refcounts (vhostd was killed: at most leaks): opens read-write, unclean, and the next flush clears the bit', async () => {
    const f = mutated((_b, v) => v.setBigUint64(72, 1n));
    const ro = await openRw(f, true);
    assert.equal(ro.openedUnclean, false, 'read-only: nothing to resume');
    const img = await openRw(f);
    assert.equal(img.openedUnclean, true);
    await img.flush();
    assert.equal(dv(f.data).getBigUint64(72), 0n);
    await img.close();
  });

  it('unknown autoclear bits are cleared when opened read-write', async () => {
    const f = mutated((_b, v) => v.setBigUint64(88, 1n << 5n));
    await openRw(f);
    assert.equal(dv(f.data).getBigUint64(88), 0n);
  });
});

describe('qcow2 hostile tables', () => {
  const cases: [string, (b: Uint8Array, v: DataView) => void, RegExp][] = [
    ['L1 entry past EOF', (_b, v) => v.setBigUint64(L1_OFF(), 0x8000_0000_0100_0000n), /past the end/],
    ['L1 entry reserved bits', (_b, v) => v.setBigUint64(L1_OFF(), v.getBigUint64(L1_OFF()) | 0x0100_0000_0000_0000n), /reserved bits/],
    ['L1 entry into the refcount table', (_b, v) => v.setBigUint64(L1_OFF(), 0x8000_0000_0000_0000n | BigInt(RT_OFF())), /refcount table/],
    ['L2 entry into the header', (_b, v) => v.setBigUint64(L2_OFF(), 0x8000_0000_0000_0000n), /host offset 0|header/],
    ['L2 entry unaligned', (_b, v) => v.setBigUint64(L2_OFF(), v.getBigUint64(L2_OFF()) + 0x200n), /not aligned/],
    ['L2 entry past EOF', (_b, v) => v.setBigUint64(L2_OFF(), 0x8000_0000_1000_0000n), /past the end/],
    ['L2 entry reserved bits', (_b, v) => v.setBigUint64(L2_OFF(), v.getBigUint64(L2_OFF()) | 0x2n), /reserved bits/],
    ['L2 entry into the L1 table', (_b, v) => v.setBigUint64(L2_OFF(), 0x8000_0000_0000_0000n | BigInt(L1_OFF())), /L1 table/],
    ['compressed entry past EOF', (_b, v) => v.setBigUint64(L2_OFF(), 0x4000_0000_0100_0000n), /past the end/],
    ['compressed garbage', (_b, v) => v.setBigUint64(L2_OFF(), 0x4000_0000_0000_0000n | BigInt(L1_OFF())), /decompress/],
  ];
  for (const [label, fn, re] of cases) {
    it(`${label}: reads and writes of the affected range fail, the file is untouched`, async () => {
      const f = mutated(fn);
      const img = await openRw(f);
      const before = f.bytes();
      await assert.rejects(img.read(new Uint8Array(4096), 0), isQcow2Error(re));
      await assert.rejects(img.write(new Uint8Array(512).fill(1), 0), isQcow2Error(re));
      assert.ok(Buffer.from(f.bytes()).equals(Buffer.from(before)), 'nothing was written');
      // Unaffected ranges still work.
      await img.read(new Uint8Array(4096), 3 * 1024 * 1024);
    });
  }

  it('refcount table entry into the header: allocation fails with Qcow2Error', async () => {
    const f = mutated((_b, v) => v.setBigUint64(RT_OFF(), 0x200n));
    const img = await openRw(f);
    await assert.rejects(img.write(new Uint8Array(512), 2 * 1024 * 1024), isQcow2Error(/refcount table entry 0/));
  });

  it('random corruption of header and tables only ever yields Qcow2Error', async () => {
    const regions = [
      [0, 4096],
      [L1_OFF(), 64],
      [L2_OFF(), 256],
      [RT_OFF(), 64],
    ] as const;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat(3), fc.nat(4095), fc.nat(255)), { minLength: 1, maxLength: 6 }), async (flips) => {
        const f = mutated((b) => {
          for (const [r, at, val] of flips) b[regions[r]![0] + (at % regions[r]![1])] = val;
        });
        const onlyQcow2 = (e: unknown) => {
          if (!(e instanceof Qcow2Error)) throw e;
        };
        let img: Qcow2Image;
        try {
          img = await openRw(f);
        } catch (e) {
          onlyQcow2(e);
          return;
        }
        await img.read(new Uint8Array(128 * 1024), 0).catch(onlyQcow2);
        await img.write(new Uint8Array(5000).fill(3), 1000).catch(onlyQcow2);
        await img.zeroRange(64 * 1024, 8192, { deallocate: true }).catch(onlyQcow2);
        await img.close().catch(onlyQcow2);
      }),
      { numRuns: 300, seed: 42 },
    );
  });
});

describe('qcow2 refcounts', () => {
  it('every width reads and writes its own bits only', () => {
    for (let order = 0; order <= 6; order++) {
      const bits = 2 ** order;
      const max = bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** bits - 1;
      const buf = new Uint8Array(512);
      const v = dv(buf);
      const n = (512 * 8) / bits;
      for (let i = 0; i < n; i++) writeRefcount(v, i, order, (i * 7919) % (max + 1));
      for (let i = 0; i < n; i++) assert.equal(readRefcount(v, i, order), (i * 7919) % (max + 1), `order ${order} index ${i}`);
    }
  });

  for (const bits of [1, 2, 4, 8]) {
    it(`refcount_bits=${bits}: overflow is refused, never wrapped`, async () => {
      const p = join(dir, `rc${bits}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `refcount_bits=${bits},cluster_size=4096`, p, '1M');
      const f = new MemImageFile(new Uint8Array(readFileSync(p)));
      const rc = await Refcounts.load(f, { name: 'rc.qcow2', clusterBits: 12, refcountOrder: Math.log2(bits), tableOffset: 4096, tableClusters: 1, cacheBytes: 4096 });
      assert.equal(await rc.get(0), 1);
      for (let i = 1; i < 2 ** bits - 1; i++) await rc.add(0, 1);
      assert.equal(await rc.get(0), 2 ** bits - 1);
      await assert.rejects(rc.add(0, 1), isQcow2Error(/would exceed/));
      assert.equal(await rc.get(0), 2 ** bits - 1);
      assert.equal(await rc.get(1), 1, 'the neighbour is untouched');
      await assert.rejects(rc.add(200, -1), isQcow2Error(/cannot decrement/));
    });
  }
});
