// A qcow2 channel that closes leaves its engine writing the image's metadata back in the
// background; a channel of the same bdev opened on the same thread meanwhile (a guest moving to
// another controller of the image) gets a new engine that waits for that write-back. The
// write-back grows the file (new L2 tables go at its end), and the new engine must see the file
// as it is then, not as it was when the channel opened: else the image looks truncated and the
// first reads fail.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import type { BdevChannel } from '../../../src/bdev/bdev.js';
import { openBackendChannel } from '../../../src/bdev/channels.js';
import { IoStatus, IoType, IoVecs } from '../../../src/bdev/io.js';
import { Qcow2Bdev } from '../../../src/bdev/modules/qcow2/bdev.js';
import { pattern, qemuCheck, qemuImg, tempDir } from './qemu.js';

function io(ch: BdevChannel, type: IoType, offset: number, buf: Uint8Array): Promise<IoStatus> {
  return new Promise((resolve) => {
    const iov = new IoVecs(1);
    iov.push(buf, 0, buf.byteLength);
    ch.submit({ type, offset, length: buf.byteLength, iov, complete: resolve });
  });
}

test('a channel opened while the previous engine on this thread writes metadata back reads what it wrote', { timeout: 60_000 }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 'handover.qcow2');
    // 4 KiB clusters: an L2 table maps 2 MiB, so each round's write below needs a new one.
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '64M');
    const bdev = await Qcow2Bdev.create({ name: 'H', filename: img }, pino({ level: 'silent' }));
    const open = () => openBackendChannel(bdev.channelSpec());
    let ch = open();
    for (let round = 0; round < 16; round++) {
      const at = round * 2 * 1024 * 1024 + 4096;
      assert.equal(await io(ch, IoType.WRITE, at, pattern(4096, round)), IoStatus.SUCCESS, `round ${round}: write`);
      // Closed with the new L2 table only in memory, and replaced at once.
      ch.close();
      ch = open();
      const back = new Uint8Array(4096);
      assert.equal(await io(ch, IoType.READ, at, back), IoStatus.SUCCESS, `round ${round}: read through the next engine`);
      assert.deepEqual(back, pattern(4096, round), `round ${round}: data`);
    }
    ch.close();
    await bdev.destroy();
    assert.equal(qemuCheck(img).code, 0, qemuCheck(img).out);
  } finally {
    cleanup();
  }
});
