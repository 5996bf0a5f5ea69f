// A qcow2 bdev after vhostd is killed, with a front-end that reconnects the way QEMU's
// vhost-user-blk does (reconnect=1: SET_INFLIGHT_FD without GET_INFLIGHT_FD). Writes acknowledged
// with their metadata still in the killed process's cache are gone; the image says so (the dirty
// bit, set before such a write was acknowledged), and every FLUSH of the resumed session fails
// instead of vouching for them. A front-end that starts fresh, and a restart after a clean stop,
// see no error. Shutdown (SIGTERM) writes the metadata back.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlkReqType, BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { check, native } from '../../src/native/index.js';
import { inflightQueueBytes } from '../../src/virtio/inflight.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { pattern, qemuCheck, qemuImg, tempDir } from '../unit/qcow2/qemu.js';

const ROOT = join(import.meta.dirname, '../..');
const CLUSTER = 65536;
const QUEUE_SIZE = 64;

/** A front-end: `resumed` hands over an in-flight buffer it made itself, as QEMU does after a back-end restart. */
async function frontEnd(socket: string, resumed: boolean): Promise<BlkInitiator> {
  const ini = await BlkInitiator.negotiate(socket, 16 << 20, { inflight: true });
  try {
    await ini.setMemTable();
    if (resumed) {
      const size = inflightQueueBytes(QUEUE_SIZE, true);
      const fd = check('memfd_create', native.memfdCreate('test-inflight', size));
      try {
        await ini.setInflightFd(fd, size, 1, QUEUE_SIZE);
      } finally {
        native.close(fd);
      }
    }
    await ini.startQueue(0, QUEUE_SIZE, CLUSTER);
    return ini;
  } catch (e) {
    ini.close();
    throw e;
  }
}

const flush = async (ini: BlkInitiator) => (await ini.queues[0]!.submit(BlkReqType.FLUSH, 0, undefined, 0)).status;
const dirtyBit = (img: string) => (readFileSync(img).readBigUInt64BE(72) & 1n) === 1n;

describe('qcow2 after a kill: a reconnecting front-end is told its unflushed writes are gone', { timeout: 120_000 }, () => {
  let d: VhostdProcess;
  let dir: string;
  let cleanup: () => void;
  let img: string;
  let config: string;

  before(async () => {
    ({ dir, cleanup } = tempDir());
    img = join(dir, 'disk.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`, img, '64M');
    d = await VhostdProcess.start(['-m', '0x1', '-L', 'info']);
    await d.rpc('bdev_qcow2_create', { name: 'Q', filename: img });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Q' });
    config = join(dir, 'config.json');
    writeFileSync(config, execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/vhostctl.ts', '-s', d.rpcSocket, 'save_config'], { cwd: ROOT }));
  });
  after(async () => {
    await d.stop();
    cleanup();
  });

  const restart = async () => {
    d = await VhostdProcess.start(['-m', '0x1', '-L', 'info', '--json', config], { dir: d.dir });
  };

  it('clean stop (SIGTERM) under a front-end: metadata written back, the resumed front-end flushes and reads its data', async () => {
    const a = await frontEnd(d.socket('vhost.0'), false);
    const data = pattern(CLUSTER, 1);
    assert.equal((await a.write(0, data)).status, BlkStatus.OK);
    assert.equal(dirtyBit(img), true, 'an acknowledged allocation sets the dirty bit first');
    assert.equal(await d.stop({ keepDir: true }), 0);
    a.close();
    assert.equal(dirtyBit(img), false, 'shutdown wrote the metadata back');
    assert.equal(qemuCheck(img).code, 0);
    await restart();
    assert.equal(d.logsMatching(/not closed cleanly/).length, 0);
    const b = await frontEnd(d.socket('vhost.0'), true);
    assert.equal(await flush(b), BlkStatus.OK);
    const r = await b.read(0, CLUSTER);
    assert.ok(Buffer.from(r.data).equals(Buffer.from(data)), 'the write survived the restart');
    b.close();
  });

  it('SIGKILL with unflushed allocations: every FLUSH of the resumed session fails; a new front-end starts clean', async () => {
    const a = await frontEnd(d.socket('vhost.0'), false);
    assert.equal((await a.write(2 * (CLUSTER / 512), pattern(CLUSTER, 2))).status, BlkStatus.OK);
    assert.equal(await flush(a), BlkStatus.OK);
    assert.equal((await a.write(4 * (CLUSTER / 512), pattern(CLUSTER, 3))).status, BlkStatus.OK); // acknowledged, not flushed
    await d.kill();
    a.close();
    assert.equal(dirtyBit(img), true);
    const c = qemuCheck(img);
    assert.ok(c.code === 0 || c.code === 3, `qemu-img check after the kill: leaks at most:\n${c.out}`);
    await restart();
    await d.waitForLog(/was not closed cleanly/);
    const b = await frontEnd(d.socket('vhost.0'), true);
    // The write the killed process acknowledged is gone: its L2 entry was only in that process's memory.
    const lost = await b.read(4 * (CLUSTER / 512), CLUSTER);
    assert.ok(lost.data.every((x) => x === 0), 'the unflushed allocation was lost (so no FLUSH may vouch for it)');
    const kept = await b.read(2 * (CLUSTER / 512), CLUSTER);
    assert.ok(Buffer.from(kept.data).equals(Buffer.from(pattern(CLUSTER, 2))), 'the flushed write is there');
    assert.equal(await flush(b), BlkStatus.IOERR, 'the first FLUSH after the reconnect fails');
    assert.equal((await b.write(6 * (CLUSTER / 512), pattern(CLUSTER, 4))).status, BlkStatus.OK, 'writes still work');
    assert.equal(await flush(b), BlkStatus.IOERR, 'so does every later one: each would vouch for the lost write');
    assert.equal(d.logsMatching(/failing every FLUSH of the reconnected front-end/).length, 1, 'one log line per queue');
    b.close();
    // A new guest has nothing to lose.
    await new Promise((r) => setTimeout(r, 200));
    const fresh = await frontEnd(d.socket('vhost.0'), false);
    assert.equal(await flush(fresh), BlkStatus.OK);
    fresh.close();
    // ...and a later reconnect of the live process is not refused either.
    await new Promise((r) => setTimeout(r, 200));
    const again = await frontEnd(d.socket('vhost.0'), true);
    assert.equal(await flush(again), BlkStatus.OK);
    again.close();
    assert.equal(dirtyBit(img), false, 'the flushes wrote the metadata back and cleared the bit');
  });
});
