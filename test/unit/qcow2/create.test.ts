// Images created by the engine: qemu-img check and info accept them, QEMU reads what the engine
// wrote, and the engine reads what QEMU wrote into them.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createImage } from '../../../src/bdev/modules/qcow2/create.js';
import { Qcow2Error } from '../../../src/bdev/modules/qcow2/errors.js';
import { FsImageFile } from './fs-image-file.js';
import { MiB, openImage, pattern, qemuCheck, qemuCompare, qemuImg, qemuIo, tempDir } from './qemu.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

async function create(name: string, opts: Parameters<typeof createImage>[1]): Promise<string> {
  const p = join(dir, name);
  const f = await FsImageFile.open(p, { create: true });
  await createImage(f, opts);
  await f.close();
  return p;
}

describe('qcow2 createImage', () => {
  for (const [cs, size] of [
    [65536, 64 * MiB],
    [4096, 16 * MiB],
    [512, 64 * MiB],
    [2 * MiB, 1024 * MiB],
  ] as const) {
    it(`${cs} B clusters, ${size / MiB} MiB: qemu-img check/info accept it, data round-trips`, async () => {
      const p = await create(`c-${cs}.qcow2`, { size, clusterSize: cs });
      assert.equal(qemuCheck(p).code, 0, qemuCheck(p).out);
      const info = JSON.parse(qemuImg('info', '--output=json', p)) as Record<string, unknown>;
      assert.equal(info['virtual-size'], size);
      assert.equal(info['cluster-size'], cs);
      const specific = (info['format-specific'] as { data: Record<string, unknown> }).data;
      assert.equal(specific['compat'], '1.1');
      assert.equal(specific['refcount-bits'], 16);
      const model = new Uint8Array(size);
      const { img, close } = await openImage(p);
      const data = pattern(300_000, 5);
      await img.write(data, 12345);
      model.set(data, 12345);
      await close();
      assert.equal(qemuCheck(p).code, 0, qemuCheck(p).out);
      assert.equal(qemuCompare(dir, p, model).code, 0);
      qemuIo(p, 'write -P 0x42 1M 64k');
      model.fill(0x42, MiB, MiB + 65536);
      const again = await openImage(p, { readonly: true });
      const buf = new Uint8Array(2 * MiB);
      await again.img.read(buf, 0);
      assert.ok(Buffer.from(buf).equals(Buffer.from(model.subarray(0, 2 * MiB))));
      await again.close();
    });
  }

  it('with a backing file: qemu-img info shows it, reads fall through to it', async () => {
    const base = join(dir, 'cbase.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
    qemuIo(base, 'write -P 0x61 0 4M');
    const top = await create('ctop.qcow2', { size: 4 * MiB, clusterSize: 65536, backingFile: 'cbase.qcow2', backingFormat: 'qcow2' });
    assert.equal(qemuCheck(top).code, 0);
    const info = JSON.parse(qemuImg('info', '--output=json', top)) as Record<string, unknown>;
    assert.equal(info['backing-filename'], 'cbase.qcow2');
    assert.equal(info['backing-filename-format'], 'qcow2');
    const out = qemuIo(top, 'read -P 0x61 0 4M');
    assert.match(out, /read 4194304\/4194304 bytes/);
    const { img, close } = await openImage(top, { readonly: true });
    assert.deepEqual(img.backing, { file: 'cbase.qcow2', format: 'qcow2' });
    await close();
  });

  it('refuses bad parameters', async () => {
    const f = await FsImageFile.open(join(dir, 'bad.qcow2'), { create: true });
    await assert.rejects(createImage(f, { size: 1000 }), Qcow2Error);
    await assert.rejects(createImage(f, { size: MiB, clusterSize: 3000 }), Qcow2Error);
    await assert.rejects(createImage(f, { size: MiB, clusterSize: 256 }), Qcow2Error);
    await f.close();
  });
});
