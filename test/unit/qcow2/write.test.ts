// Writing through the engine: allocation, copy-on-write from a backing file and from compressed
// clusters, zeroing, discard, refcount table growth. Afterwards `qemu-img check` finds no
// corruption and `qemu-img compare` matches a raw model kept by the test.
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Qcow2Image } from '../../../src/bdev/modules/qcow2/image.js';
import { Qcow2Error } from '../../../src/bdev/modules/qcow2/errors.js';
import { KiB, MiB, openImage, pattern, qemuCheck, qemuCompare, qemuImg, qemuIo, qemuRaw, tempDir } from './qemu.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

/** The engine plus a raw model of what the guest should see. */
class Modelled {
  constructor(
    readonly img: Qcow2Image,
    readonly model: Uint8Array,
    private readonly backing: Uint8Array | undefined,
  ) {}

  async write(off: number, len: number, seed: number): Promise<void> {
    const data = pattern(len, seed);
    await this.img.write(data, off);
    this.model.set(data, off);
  }

  async zero(off: number, len: number, deallocate: boolean): Promise<void> {
    await this.img.zeroRange(off, len, { deallocate });
    this.model.fill(0, off, off + len);
  }

  async discard(off: number, len: number): Promise<void> {
    await this.img.discard(off, len);
    const cs = this.img.clusterSize;
    const s = Math.ceil(off / cs) * cs;
    const e = off + len === this.img.virtualSize ? off + len : Math.floor((off + len) / cs) * cs;
    if (s >= e) return;
    if (this.img.header.version === 2 && this.backing !== undefined) this.model.set(this.backing.subarray(s, e), s);
    else this.model.fill(0, s, e);
  }

  async verify(): Promise<void> {
    const buf = new Uint8Array(this.model.byteLength);
    await this.img.read(buf, 0);
    assert.ok(Buffer.from(buf).equals(Buffer.from(this.model)), 'engine reads back the model');
  }
}

function assertClean(path: string): void {
  const c = qemuCheck(path);
  assert.equal(c.code, 0, `qemu-img check:\n${c.out}`);
}

function assertSame(path: string, model: Uint8Array): void {
  const c = qemuCompare(dir, path, model);
  assert.equal(c.code, 0, `qemu-img compare:\n${c.out}`);
}

async function scenario(m: Modelled): Promise<void> {
  const cs = m.img.clusterSize;
  await m.write(0, 1, 1); // partial first cluster
  await m.write(cs - 7, 20, 2); // straddles a boundary
  await m.write(3 * cs, 5 * cs, 3); // whole clusters
  await m.write(3 * cs + 100, 300, 4); // in place
  await m.write(20 * cs + 5, 3 * cs, 5);
  await m.verify();
  await m.img.flush();
  await m.zero(3 * cs, 2 * cs, true);
  await m.zero(5 * cs + 10, cs, false);
  await m.zero(40 * cs, 4 * cs, false);
  await m.write(6 * cs, 8, 6); // write into a preallocated zero cluster
  await m.discard(20 * cs, 3 * cs + 5);
  await m.write(21 * cs, 10, 7); // reuse after discard
  await m.img.flush();
  await m.write(50 * cs, 2 * cs, 8); // may reuse freed clusters
  await m.write(m.img.virtualSize - 3000, 3000, 9); // the last bytes
  await m.verify();
}

describe('qcow2 write', () => {
  const cases: [string, string[]][] = [
    ['64 KiB clusters', ['-o', 'cluster_size=65536']],
    ['4 KiB clusters', ['-o', 'cluster_size=4096']],
    ['512 B clusters', ['-o', 'cluster_size=512']],
    ['2 MiB clusters', ['-o', 'cluster_size=2097152']],
    ['compat=0.10 (v2)', ['-o', 'compat=0.10,cluster_size=4096']],
    ['refcount_bits=1', ['-o', 'refcount_bits=1,cluster_size=4096']],
    ['refcount_bits=8', ['-o', 'refcount_bits=8,cluster_size=4096']],
    ['refcount_bits=64', ['-o', 'refcount_bits=64,cluster_size=4096']],
  ];
  for (const [label, opts] of cases) {
    it(`${label}: writes, zeroes, discards; qemu-img check and compare agree`, async () => {
      const p = join(dir, `w-${label.replace(/\W+/g, '_')}.qcow2`);
      const size = label.startsWith('2 MiB') ? 128 * MiB : 8 * MiB;
      qemuImg('create', '-q', '-f', 'qcow2', ...opts, p, String(size));
      qemuIo(p, 'write -P 0xab 0 1M');
      const model = new Uint8Array(qemuRaw(dir, p));
      const { img, close } = await openImage(p);
      const m = new Modelled(img, model, undefined);
      await scenario(m);
      await close();
      assertClean(p);
      assertSame(p, model);
    });
  }

  for (const compat of ['1.1', '0.10']) {
    it(`overlay (compat=${compat}): copy-on-write from the backing file`, async () => {
      const base = join(dir, `wbase-${compat}.qcow2`);
      const top = join(dir, `wtop-${compat}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', base, '4M');
      qemuIo(base, 'write -P 0x77 0 4M');
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=4096,compat=${compat}`, '-b', 'wbase-' + compat + '.qcow2', '-F', 'qcow2', top);
      const baseRaw = new Uint8Array(qemuRaw(dir, base));
      const { img, close } = await openImage(top, { backing: baseRaw });
      const m = new Modelled(img, baseRaw.slice(), baseRaw);
      await scenario(m);
      await close();
      assertClean(top);
      assertSame(top, m.model);
    });
  }

  it('copy-on-write from compressed clusters', async () => {
    const src = join(dir, 'wc-src.qcow2');
    const p = join(dir, 'wc.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', src, '4M');
    qemuIo(src, 'write -P 0xab 0 2M');
    qemuImg('convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=4096', src, p);
    const model = new Uint8Array(qemuRaw(dir, p));
    const { img, close } = await openImage(p);
    const m = new Modelled(img, model, undefined);
    await scenario(m);
    await m.write(100 * 4096 + 1, 10, 11);
    await close();
    assertClean(p);
    assertSame(p, model);
  });

  it('grows refcount blocks and the refcount table (512 B clusters, 12 MiB of data)', async () => {
    const p = join(dir, 'grow.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', p, '16M');
    const model = new Uint8Array(16 * MiB);
    const { img, close } = await openImage(p, { l2CacheBytes: 16 * KiB });
    const m = new Modelled(img, model, undefined);
    for (let off = 0; off < 12 * MiB; off += MiB) await m.write(off, MiB, off / MiB);
    await m.verify();
    await close();
    assertClean(p);
    assertSame(p, model);
    assert.match(qemuImg('info', p), /virtual size: 16 MiB/);
  });

  it('concurrent writes to the same and to different clusters', async () => {
    const p = join(dir, 'conc.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p, '4M');
    const model = new Uint8Array(4 * MiB);
    const { img, close } = await openImage(p);
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 64; i++) {
      const off = (i * 1531) % (4 * MiB - 700);
      const data = pattern(700, i);
      model.set(data, off); // later ones win where they overlap: the lock keeps submission order
      ops.push(img.write(data, off));
    }
    await Promise.all(ops);
    const buf = new Uint8Array(4 * MiB);
    await img.read(buf, 0);
    assert.ok(Buffer.from(buf).equals(Buffer.from(model)));
    await close();
    assertClean(p);
    assertSame(p, model);
  });

  it('dirty bit: set before a metadata change is acknowledged, cleared by the flush; an overwrite in place leaves it alone', async () => {
    const p = join(dir, 'dirty.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p, '4M');
    const dirtyOnDisk = () => (readFileSync(p).readBigUInt64BE(72) & 1n) === 1n;
    const { img, close } = await openImage(p);
    assert.equal(img.openedUnclean, false);
    assert.equal(dirtyOnDisk(), false);
    await img.write(pattern(4096, 1), 8192); // allocates: L2 and refcounts only in memory
    assert.equal(dirtyOnDisk(), true, 'an acknowledged allocation leaves the bit set');
    // What a killed process leaves: qemu-img accepts it (leaks at most), and the engine opens it unclean.
    const check = qemuCheck(p);
    assert.ok([0, 3].includes(check.code), `qemu-img check of the dirty image: ${check.out}`);
    const again = await openImage(p, { readonly: true });
    assert.equal(again.img.header.dirty, true);
    await again.close();
    await img.flush();
    assert.equal(dirtyOnDisk(), false, 'the write-back clears it');
    await img.write(pattern(4096, 2), 8192); // in place: no metadata change
    assert.equal(dirtyOnDisk(), false);
    await img.discard(8192, 4096);
    assert.equal(dirtyOnDisk(), true, 'a discard changes the L2 table');
    await close();
    assert.equal(dirtyOnDisk(), false, 'close flushes');
    assertClean(p);
    const unclean = join(dir, 'unclean.qcow2');
    copyFileSync(p, unclean);
    const b = readFileSync(unclean);
    b.writeBigUInt64BE(b.readBigUInt64BE(72) | 1n, 72);
    writeFileSync(unclean, b);
    const reopened = await openImage(unclean);
    assert.equal(reopened.img.openedUnclean, true);
    await reopened.close();
    assert.equal((readFileSync(unclean).readBigUInt64BE(72) & 1n) === 1n, false);
  });

  it('refuses writes on a read-only image and needs a backing reader for copy-on-write', async () => {
    const base = join(dir, 'rb.qcow2');
    const top = join(dir, 'rt.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '1M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'rb.qcow2', '-F', 'qcow2', top);
    const ro = await openImage(top, { readonly: true });
    await assert.rejects(ro.img.write(new Uint8Array(512), 0), (e) => e instanceof Qcow2Error && e.errno === 'EROFS');
    await ro.close();
    const rw = await openImage(top);
    await assert.rejects(rw.img.write(new Uint8Array(512), 0), Qcow2Error);
    await rw.img.write(new Uint8Array(65536), 65536); // whole cluster: no copy-on-write needed
    await rw.close();
    assertClean(top);
  });
});
