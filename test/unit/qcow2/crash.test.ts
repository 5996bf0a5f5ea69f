// Crash consistency: the file stops accepting writes after N operations, for every N of a
// scenario that allocates, grows refcount blocks, evicts dirty L2 tables, zeroes and discards.
// `qemu-img check` on what is left must find no corruption (leaks are fine: exit 0 or 3). A
// second pass simulates a power loss: the state of the last flush plus a random subset of the
// writes issued after it (the disk may reorder between flushes).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createImage } from '../../../src/bdev/modules/qcow2/create.js';
import { Qcow2Image } from '../../../src/bdev/modules/qcow2/image.js';
import { CrashError, MemImageFile } from './mem-image-file.js';
import { KiB, pattern, qemuCheck, tempDir } from './qemu.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

async function scenario(file: MemImageFile): Promise<void> {
  const img = await Qcow2Image.open(file, { readonly: false, name: 'crash.qcow2', l2CacheBytes: 1024 });
  const cs = img.clusterSize;
  await img.write(pattern(3 * cs + 100, 1), 100);
  await img.write(pattern(200 * cs, 2), 40 * cs); // new refcount blocks (256 entries each)
  await img.flush();
  await img.write(pattern(10, 3), 41 * cs + 5); // in place
  // One cluster in each of many L2 tables: the 2-table cache must write back to evict.
  for (let i = 0; i < 12; i++) await img.write(pattern(cs / 2, 10 + i), (i * 70 + 500) * cs + 7);
  await img.zeroRange(40 * cs, 8 * cs, { deallocate: true });
  await img.discard(60 * cs, 20 * cs);
  await img.write(pattern(30 * cs, 4), 300 * cs); // reuses freed clusters after the write-back
  await img.flush();
  await img.zeroRange(100 * cs, 4 * cs, { deallocate: false });
  await img.write(pattern(cs, 5), 101 * cs);
  await img.close();
}

async function baseImage(): Promise<Uint8Array> {
  const f = new MemImageFile();
  await createImage(f, { size: 1024 * KiB, clusterSize: 512 });
  return f.bytes();
}

function assertConsistent(bytes: Uint8Array, label: string): void {
  const p = join(dir, 'crashed.qcow2');
  writeFileSync(p, bytes);
  const c = qemuCheck(p);
  assert.ok(c.code === 0 || c.code === 3, `${label}: qemu-img check exit ${c.code}\n${c.out}`);
}

describe('qcow2 crash consistency', () => {
  it('every prefix of the operations leaves a consistent image', async () => {
    const base = await baseImage();
    const full = new MemImageFile(base);
    await scenario(full);
    const total = full.ops;
    assert.ok(total > 40, `scenario issues enough operations (${total})`);
    assertConsistent(full.bytes(), 'complete run');
    assert.equal(qemuCheck(join(dir, 'crashed.qcow2')).code, 0, 'a clean close leaks nothing');
    for (let n = 0; n < total; n++) {
      const f = new MemImageFile(base);
      f.budget = n;
      await assert.rejects(scenario(f), CrashError);
      assertConsistent(f.bytes(), `crash after ${n} of ${total} operations`);
    }
  });

  it('a power loss keeps any subset of the writes since the last flush', async () => {
    const base = await baseImage();
    const full = new MemImageFile(base);
    await scenario(full);
    const total = full.ops;
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let n = 1; n < total; n += 2) {
      const f = new MemImageFile(base);
      f.budget = n;
      await assert.rejects(scenario(f), CrashError);
      assertConsistent(f.powerLoss(() => rand() < 0.5), `power loss after ${n} of ${total} operations`);
    }
  });
});
