// Reading images QEMU wrote: every cluster size, v2 and v3, every refcount width tried,
// compressed clusters, overlays. Mapping must agree with `qemu-img map`, content with
// `qemu-img convert -O raw`.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Extent, Qcow2Image } from '../../../src/bdev/modules/qcow2/image.js';
import { KiB, MiB, type MapEntry, openImage, qemuImg, qemuIo, qemuMap, qemuRaw, tempDir } from './qemu.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

type Kind = 'data' | 'zero' | 'unallocated' | 'compressed';

/** What qemu-img map says about guest offset `off` of the top layer. */
function qemuKindAt(map: MapEntry[], off: number): { kind: Kind; host?: number } {
  const e = map.find((m) => m.start <= off && off < m.start + m.length);
  assert.ok(e, `qemu-img map covers ${off}`);
  if (e.depth > 0 || !e.present) return { kind: 'unallocated' };
  if (!e.data) return { kind: 'zero' };
  if (e.offset === undefined) return { kind: 'compressed' };
  return { kind: 'data', host: e.offset + (off - e.start) };
}

function ourKindAt(ext: Extent[], off: number): { kind: Kind; host?: number } {
  const e = ext.find((x) => x.guestOffset <= off && off < x.guestOffset + x.length);
  assert.ok(e, `extents cover ${off}`);
  if (e.kind === 'data') return { kind: 'data', host: e.hostOffset + (off - e.guestOffset) };
  return { kind: e.kind };
}

async function assertMatchesQemu(path: string, img: Qcow2Image): Promise<void> {
  const size = img.virtualSize;
  const ext = await img.mapRange(0, size);
  // Extents tile the range exactly.
  let pos = 0;
  for (const e of ext) {
    assert.equal(e.guestOffset, pos);
    pos += e.length;
  }
  assert.equal(pos, size);
  const map = qemuMap(path);
  for (let off = 0; off < size; off += img.clusterSize) assert.deepEqual(ourKindAt(ext, off), qemuKindAt(map, off), `cluster at ${off}`);
  // Cached lookups agree with the async ones (when everything is cached).
  const cached = img.tryMapCached(0, size);
  if (cached !== undefined) assert.deepEqual(cached, ext);
  const buf = new Uint8Array(size);
  await img.read(buf, 0);
  assert.ok(Buffer.from(buf).equals(qemuRaw(dir, path)), 'content equals qemu-img convert -O raw');
}

const WRITES = ['write -P 0xab 0 1M', 'write -P 0x11 1536k 5k', 'write -z 2M 128k', 'write -P 0x22 3M 64k', 'write -z 3M 4k', 'discard 3200k 64k'];

describe('qcow2 read: images written by qemu-io', () => {
  const cases: [string, string[], number][] = [
    ['64 KiB clusters', ['-o', 'cluster_size=65536'], 8 * MiB],
    ['4 KiB clusters', ['-o', 'cluster_size=4096'], 8 * MiB],
    ['512 B clusters', ['-o', 'cluster_size=512'], 4 * MiB],
    ['2 MiB clusters', ['-o', 'cluster_size=2097152'], 16 * MiB],
    ['compat=0.10 (v2)', ['-o', 'compat=0.10'], 8 * MiB],
    ['refcount_bits=1', ['-o', 'refcount_bits=1'], 8 * MiB],
    ['refcount_bits=8', ['-o', 'refcount_bits=8,cluster_size=4096'], 8 * MiB],
    ['refcount_bits=64', ['-o', 'refcount_bits=64'], 8 * MiB],
    ['odd virtual size', ['-o', 'cluster_size=4096'], 8 * MiB - 1536],
  ];
  for (const [label, opts, size] of cases) {
    it(label, async () => {
      const p = join(dir, `${label.replace(/\W+/g, '_')}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', ...opts, p, String(size));
      qemuIo(p, ...WRITES, `write -P 0x33 ${size - 4096} 4k`);
      const { img, close } = await openImage(p, { readonly: true });
      try {
        await assertMatchesQemu(p, img);
      } finally {
        await close();
      }
    });
  }

  it('reads through a small L2 cache (tables evicted and reloaded)', async () => {
    const p = join(dir, 'small-cache.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', p, '4M');
    qemuIo(p, 'write -P 0x5a 0 4M');
    const { img, close } = await openImage(p, { readonly: true, l2CacheBytes: 1024 });
    try {
      await assertMatchesQemu(p, img);
      assert.equal(img.tryMapCached(0, 4 * MiB), undefined, 'most tables are not cached');
    } finally {
      await close();
    }
  });
});

describe('qcow2 read: compressed clusters', () => {
  for (const cs of [65536, 4096, 512, 2 * MiB]) {
    it(`qemu-img convert -c, ${cs} B clusters`, async () => {
      const src = join(dir, `csrc-${cs}.qcow2`);
      const p = join(dir, `comp-${cs}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', src, '8M');
      qemuIo(src, 'write -P 0xab 0 1M', 'write -P 0x11 1536k 5k', 'write -P 0x22 3M 300k');
      qemuImg('convert', '-c', '-O', 'qcow2', '-o', `cluster_size=${cs}`, src, p);
      const { img, close } = await openImage(p, { readonly: true });
      try {
        const ext = await img.mapRange(0, img.virtualSize);
        assert.ok(ext.some((e) => e.kind === 'compressed'), 'has compressed clusters');
        await assertMatchesQemu(p, img);
      } finally {
        await close();
      }
    });
  }
});

describe('qcow2 read: overlays', () => {
  it('unallocated clusters read from the backing file; backing name and format from the header', async () => {
    const base = join(dir, 'base.qcow2');
    const top = join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
    qemuIo(base, 'write -P 0x77 0 4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top);
    qemuIo(top, 'write -P 0x12 100k 200k', 'write -z 1M 64k');
    const baseRaw = qemuRaw(dir, base);
    const { img, close } = await openImage(top, { readonly: true, backing: baseRaw });
    try {
      assert.deepEqual(img.backing, { file: 'base.qcow2', format: 'qcow2' });
      await assertMatchesQemu(top, img);
      const b = new Uint8Array(4 * KiB);
      await img.read(b, 2 * MiB);
      assert.ok(b.every((x) => x === 0x77));
    } finally {
      await close();
    }
  });
});
