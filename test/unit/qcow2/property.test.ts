// Property: any sequence of writes, zeroings, discards and flushes reads back like a raw model,
// and the resulting image passes qemu-img check (with and without a backing file).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { createImage } from '../../../src/bdev/modules/qcow2/create.js';
import { Qcow2Image } from '../../../src/bdev/modules/qcow2/image.js';
import { MemImageFile } from './mem-image-file.js';
import { KiB, pattern, qemuCheck, tempDir } from './qemu.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

const SIZE = 256 * KiB;
const op = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 20000 }), seed: fc.nat() }),
  fc.record({ kind: fc.constant('zero' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 40000 }), dealloc: fc.boolean() }),
  fc.record({ kind: fc.constant('discard' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 40000 }) }),
  fc.record({ kind: fc.constant('flush' as const) }),
);

describe('qcow2 property: random operations against a raw model', () => {
  for (const withBacking of [false, true]) {
    it(withBacking ? 'with a backing file' : 'without a backing file', async () => {
      const backing = pattern(SIZE, 99);
      writeFileSync(join(dir, 'base.raw'), backing); // qemu-img check opens the backing chain
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(512, 4096), fc.array(op, { minLength: 1, maxLength: 25 }), async (cs, ops) => {
          const file = new MemImageFile();
          await createImage(file, { size: SIZE, clusterSize: cs, ...(withBacking ? { backingFile: 'base.raw', backingFormat: 'raw' } : {}) });
          const img = await Qcow2Image.open(file, {
            readonly: false,
            l2CacheBytes: 1024,
            ...(withBacking ? { backingRead: async (b: Uint8Array, o: number) => b.set(backing.subarray(o, o + b.byteLength)) } : {}),
          });
          const model = withBacking ? backing.slice() : new Uint8Array(SIZE);
          for (const o of ops) {
            if (o.kind === 'flush') {
              await img.flush();
              continue;
            }
            const len = Math.min(o.len, SIZE - o.off);
            if (o.kind === 'write') {
              const d = pattern(len, o.seed);
              await img.write(d, o.off);
              model.set(d, o.off);
            } else if (o.kind === 'zero') {
              await img.zeroRange(o.off, len, { deallocate: o.dealloc });
              model.fill(0, o.off, o.off + len);
            } else {
              await img.discard(o.off, len);
              const s = Math.ceil(o.off / cs) * cs;
              const e = o.off + len === SIZE ? SIZE : Math.floor((o.off + len) / cs) * cs;
              if (s < e) model.fill(0, s, e);
            }
          }
          const buf = new Uint8Array(SIZE);
          await img.read(buf, 0);
          assert.ok(Buffer.from(buf).equals(Buffer.from(model)), 'reads back the model');
          await img.close();
          const p = join(dir, 'prop.qcow2');
          writeFileSync(p, file.bytes());
          const c = qemuCheck(p);
          assert.equal(c.code, 0, c.out);
        }),
        { numRuns: 25, seed: withBacking ? 2 : 1 },
      );
    });
  }
});
