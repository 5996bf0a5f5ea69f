// The error injection vbdev: each error type on a malloc base, queue-depth gating, exactly `num`
// injections across channels on two threads sharing the injection buffer, and the RPCs with
// SPDK's replies and errors.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import type { BdevChannel, ChannelSpec } from '../../src/bdev/bdev.js';
import { BdevLayer } from '../../src/bdev/bdev-layer.js';
import { openBackendChannel, openBdev, registerChannelFactory } from '../../src/bdev/channels.js';
import { type BdevIo, IoStatus, IoType, IoVecs } from '../../src/bdev/io.js';
import { ErrorBdev, ErrorChannel, ErrorType, type InjectOptions } from '../../src/bdev/modules/error/error.js';
import { MallocBdev } from '../../src/bdev/modules/malloc/malloc.js';
import { RpcClient, RpcError } from '../../src/rpc/client.js';
import { layerOf, openSpecOf } from './helpers/open-spec.js';
import { type TestServer, startTestServer } from './helpers/rpc-fixture.js';

/** Submits one I/O; resolves with its status. */
function submit(ch: BdevChannel, type: IoType, offset: number, buf?: Uint8Array, length = buf?.length ?? 0): Promise<IoStatus> {
  return new Promise((resolve) => {
    const iov = new IoVecs(1);
    if (buf) iov.push(buf, 0, buf.length);
    const io: BdevIo = { type, offset, length, iov, complete: resolve };
    ch.submit(io);
  });
}

const inject = (b: ErrorBdev, o: Partial<InjectOptions> & Pick<InjectOptions, 'ioType' | 'errorType'>) =>
  b.injection.inject({ num: 1, queueDepth: 0, corruptOffset: 0, corruptValue: 0, ...o });

function setup(): { base: MallocBdev; ee: ErrorBdev; ch: ErrorChannel } {
  const base = new MallocBdev('M', 512, 1 << 20);
  const ee = new ErrorBdev(base, undefined, () => undefined);
  const ch = openBackendChannel(ee.channelSpec(openSpecOf));
  assert.ok(ch instanceof ErrorChannel);
  return { base, ee, ch };
}

describe('error channel', () => {
  it('failure: exactly `num` I/Os of the chosen type fail, then everything passes', async () => {
    const { ee, ch } = setup();
    const buf = new Uint8Array(4096);
    inject(ee, { ioType: IoType.READ, errorType: ErrorType.FAILURE, num: 2 });
    assert.equal(await submit(ch, IoType.WRITE, 0, buf), IoStatus.SUCCESS, 'writes are not hit');
    assert.equal(await submit(ch, IoType.READ, 0, buf), IoStatus.FAILED);
    assert.equal(await submit(ch, IoType.READ, 0, buf), IoStatus.FAILED);
    assert.equal(await submit(ch, IoType.READ, 0, buf), IoStatus.SUCCESS);
    assert.equal(ee.injection.state(IoType.READ).num, 0);
    ch.close();
  });

  it('all / clear / flush / unmap / nomem; write-zeroes is never hit (as SPDK)', async () => {
    const { ee, ch } = setup();
    inject(ee, { ioType: 'all', errorType: ErrorType.FAILURE, num: 1 });
    assert.equal(await submit(ch, IoType.WRITE_ZEROES, 0, undefined, 4096), IoStatus.SUCCESS);
    assert.equal(await submit(ch, IoType.FLUSH, 0), IoStatus.FAILED);
    assert.equal(await submit(ch, IoType.FLUSH, 0), IoStatus.SUCCESS);
    assert.equal(await submit(ch, IoType.UNMAP, 0, undefined, 4096), IoStatus.FAILED);
    inject(ee, { ioType: 'clear', errorType: ErrorType.FAILURE });
    assert.equal(await submit(ch, IoType.READ, 0, new Uint8Array(512)), IoStatus.SUCCESS, 'clear removed the read injection');
    assert.equal(await submit(ch, IoType.WRITE, 0, new Uint8Array(512)), IoStatus.SUCCESS);
    inject(ee, { ioType: IoType.WRITE, errorType: ErrorType.NOMEM, num: 1 });
    assert.equal(await submit(ch, IoType.WRITE, 0, new Uint8Array(512)), IoStatus.NOMEM);
    assert.equal(await submit(ch, IoType.WRITE, 0, new Uint8Array(512)), IoStatus.SUCCESS);
    ch.close();
  });

  it('nomem through the bdev layer (as a device opens the bdev): retried there, never seen above it', async () => {
    const base = new MallocBdev('M', 512, 1 << 20);
    const ee = new ErrorBdev(base, undefined, () => undefined);
    const ch = openBdev(openSpecOf(ee));
    inject(ee, { ioType: IoType.WRITE, errorType: ErrorType.NOMEM, num: 2 });
    const data = new Uint8Array(512).fill(0x42);
    assert.equal(await submit(ch, IoType.WRITE, 1024, data), IoStatus.SUCCESS);
    assert.equal(ee.injection.state(IoType.WRITE).num, 0, 'both injections were used: refused twice, then taken');
    assert.deepEqual(new Uint8Array(base.buffer, 1024, 512), data);
    assert.equal(ch.waiting, 0);
    const s = layerOf(ee).iostat.device();
    assert.deepEqual([s.num_write_ops, s.bytes_written, s.io_error], [1, 512, {}], 'counted once, NOMEM not at all');
    assert.equal(layerOf(base).iostat.device().num_write_ops, 1, "the base's own layer counted the write that reached it");
    ch.close();
  });

  it('corrupt_data: XORs one byte of written data before the base, of read data after it', async () => {
    const { base, ee, ch } = setup();
    const data = new Uint8Array(4096).fill(0x11);
    inject(ee, { ioType: IoType.WRITE, errorType: ErrorType.CORRUPT_DATA, corruptOffset: 1000, corruptValue: 0xff });
    assert.equal(await submit(ch, IoType.WRITE, 8192, data), IoStatus.SUCCESS);
    const stored = new Uint8Array(base.buffer, 8192, 4096);
    assert.equal(stored[1000], 0x11 ^ 0xff);
    assert.equal(stored[999], 0x11);
    assert.equal(await submit(ch, IoType.WRITE, 8192, new Uint8Array(4096).fill(0x11)), IoStatus.SUCCESS, 'num was 1');
    assert.equal(stored[1000], 0x11);
    inject(ee, { ioType: IoType.READ, errorType: ErrorType.CORRUPT_DATA, corruptOffset: 5, corruptValue: 0x01 });
    const back = new Uint8Array(4096);
    assert.equal(await submit(ch, IoType.READ, 8192, back), IoStatus.SUCCESS);
    assert.equal(back[5], 0x10);
    assert.equal(stored[5], 0x11, 'the stored data is untouched');
    ch.close();
  });

  it('pending: the I/O is held until `clear` (or close) and then fails', async () => {
    const { ee, ch } = setup();
    inject(ee, { ioType: IoType.READ, errorType: ErrorType.PENDING, num: 1 });
    let settled: IoStatus | undefined;
    const held = submit(ch, IoType.READ, 0, new Uint8Array(512)).then((s) => {
      settled = s;
      return s;
    });
    assert.equal(await submit(ch, IoType.READ, 0, new Uint8Array(512)), IoStatus.SUCCESS, 'the next one passes');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(settled, undefined, 'still held');
    inject(ee, { ioType: 'clear', errorType: ErrorType.FAILURE });
    assert.equal(await held, IoStatus.FAILED, 'released by clear (the channel checks every 20 ms)');

    inject(ee, { ioType: IoType.FLUSH, errorType: ErrorType.PENDING, num: 1 });
    const held2 = submit(ch, IoType.FLUSH, 0);
    ch.close();
    assert.equal(await held2, IoStatus.FAILED, 'close fails held I/O');
  });

  it('queue_depth: injects only while at least that many I/Os are in flight on the channel', async () => {
    // A base that completes only when told to.
    const waiting: BdevIo[] = [];
    registerChannelFactory('test-hold', () => ({ submit: (io) => void waiting.push(io), close: () => undefined }));
    const base = { backend: { module: 'test-hold', blockSize: 512, numBlocks: 2048 }, layer: new BdevLayer().share };
    const spec = { module: 'error', blockSize: 512, numBlocks: 2048, base } as ChannelSpec;
    const ee = new ErrorBdev(new MallocBdev('Q', 512, 1 << 20), undefined, () => undefined);
    const ch = openBackendChannel({ ...spec, inject: ee.injection.buffer });
    inject(ee, { ioType: IoType.READ, errorType: ErrorType.FAILURE, num: 1, queueDepth: 2 });
    const a = submit(ch, IoType.READ, 0, new Uint8Array(512));
    const b = submit(ch, IoType.READ, 0, new Uint8Array(512));
    assert.equal(waiting.length, 2, 'below the queue depth: both reach the base');
    assert.equal(await submit(ch, IoType.READ, 0, new Uint8Array(512)), IoStatus.FAILED, 'the third, with 2 in flight, fails');
    for (const io of waiting.splice(0)) io.complete(IoStatus.SUCCESS);
    assert.deepEqual(await Promise.all([a, b]), [IoStatus.SUCCESS, IoStatus.SUCCESS]);
    ch.close();
  });

  it('exactly `num` failures in total when channels on two threads race for them', async () => {
    const base = new MallocBdev('M', 512, 1 << 20);
    const ee = new ErrorBdev(base, undefined, () => undefined);
    const spec = ee.channelSpec(openSpecOf);
    const N = 100_000;
    const NUM = 50_000;
    // The worker opens its own channel from the same (structured-cloned) spec, as a reactor does.
    const tsx = import.meta.resolve('tsx/esm/api');
    const channels = new URL('../../src/bdev/channels.ts', import.meta.url).href;
    const io = new URL('../../src/bdev/io.ts', import.meta.url).href;
    const code = `
      import { register } from ${JSON.stringify(tsx)}; register();
      const { parentPort, workerData } = await import('node:worker_threads');
      const { openBackendChannel } = await import(${JSON.stringify(channels)});
      const { IoVecs, IoStatus, IoType } = await import(${JSON.stringify(io)});
      const ch = openBackendChannel(workerData.spec);
      const iov = new IoVecs(1); iov.push(new Uint8Array(512), 0, 512);
      let failed = 0;
      const req = { type: IoType.READ, offset: 0, length: 512, iov, complete: (s) => { if (s === IoStatus.FAILED) failed++; } };
      parentPort.postMessage('ready');
      await new Promise((r) => parentPort.once('message', r));
      for (let i = 0; i < workerData.n; i++) ch.submit(req);
      ch.close();
      parentPort.postMessage(failed);`;
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`), { workerData: { spec, n: N } });
    try {
      const messages: unknown[] = [];
      const next = () => new Promise<unknown>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      assert.equal(await next(), 'ready');
      const ch = openBackendChannel(spec);
      inject(ee, { ioType: IoType.READ, errorType: ErrorType.FAILURE, num: NUM });
      const done = next();
      worker.postMessage('go');
      const iov = new IoVecs(1);
      iov.push(new Uint8Array(512), 0, 512);
      let failed = 0;
      const req: BdevIo = { type: IoType.READ, offset: 0, length: 512, iov, complete: (s) => void (s === IoStatus.FAILED && failed++) };
      for (let i = 0; i < N; i++) ch.submit(req);
      ch.close();
      const theirs = (await done) as number;
      messages.push(theirs);
      assert.equal(failed + theirs, NUM, `main ${failed} + worker ${theirs}`);
      console.log(`injected failures: ${failed} on the main thread, ${theirs} on the worker`);
      assert.equal(ee.injection.state(IoType.READ).num, 0);
    } finally {
      await worker.terminate();
    }
  });
});

async function rejectsWith(p: Promise<unknown>, code: number, message?: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${String(err)}`);
    assert.equal(err.code, code, `code for "${err.message}"`);
    if (message !== undefined) assert.equal(err.message, message);
    return true;
  });
}

describe('error RPCs', () => {
  let t: TestServer;
  let c: RpcClient;

  before(async () => {
    t = await startTestServer();
    c = new RpcClient(t.socketPath);
    await c.connect();
    await c.call('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512, uuid: '5f0c2b7e-27d1-4a88-9e0f-2f8c0f6a9b11' });
  });
  after(async () => {
    c.close();
    await t.stop();
  });

  it('bdev_error_create replies true and makes EE_<base>, claiming the base', async () => {
    assert.equal(await c.call('bdev_error_create', { base_name: 'M0' }), true);
    const [info] = await c.call<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'EE_M0' });
    assert.equal(info.product_name, 'Error Injection Disk');
    assert.equal(info.num_blocks, 2048);
    assert.deepEqual(info.driver_specific, { error_disk: { base_bdev: 'M0' } });
    assert.match(info.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab]/);
    const [base] = await c.call<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'M0' });
    assert.equal(base.claimed, true);
    const config = await c.call<Array<{ method: string; params?: unknown }>>('framework_get_config', { name: 'bdev' });
    assert.deepEqual(
      config.find((e) => e.method === 'bdev_error_create'),
      { method: 'bdev_error_create', params: { base_name: 'M0' } },
    );
  });

  it('create errors: EEXIST, ENODEV for a missing base, -32603 on bad params', async () => {
    await rejectsWith(c.call('bdev_error_create', { base_name: 'M0' }), -17, 'File exists');
    await rejectsWith(c.call('bdev_error_create', { base_name: 'nope' }), -19, 'No such device');
    await rejectsWith(c.call('bdev_error_create', { name: 'M0' }), -32603, 'spdk_json_decode_object failed');
  });

  it('bdev_error_inject_error: SPDK decoders and errors; the injection takes effect', async () => {
    const base = { name: 'EE_M0', io_type: 'read', error_type: 'failure' };
    assert.equal(await c.call('bdev_error_inject_error', { ...base, num: 3 }), true);
    const ee = t.bdevs.get('EE_M0') as ErrorBdev;
    assert.deepEqual(ee.injection.state(IoType.READ), { errorType: ErrorType.FAILURE, num: 3, queueDepth: 0 });
    assert.equal(await c.call('bdev_error_inject_error', base), true);
    assert.equal(ee.injection.state(IoType.READ).num, 1, 'num defaults to 1');
    assert.equal(await c.call('bdev_error_inject_error', { ...base, io_type: 'clear' }), true);
    assert.equal(ee.injection.state(IoType.READ).num, 0);
    await rejectsWith(c.call('bdev_error_inject_error', { ...base, io_type: 'compare' }), -32603, 'spdk_json_decode_object failed');
    await rejectsWith(c.call('bdev_error_inject_error', { ...base, error_type: 'boom' }), -32603, 'spdk_json_decode_object failed');
    await rejectsWith(c.call('bdev_error_inject_error', { ...base, corrupt_value: 256 }), -32603, 'spdk_json_decode_object failed');
    await rejectsWith(c.call('bdev_error_inject_error', { ...base, error_type: 'corrupt_data' }), -22, 'Invalid argument');
    await rejectsWith(c.call('bdev_error_inject_error', { ...base, name: 'M0' }), -19, 'No such device');
    await rejectsWith(c.call('bdev_error_inject_error', { ...base, name: 'nope' }), -19, 'No such device');
    // The deprecated name of older SPDK.
    assert.equal(await c.call('bdev_inject_error', { ...base, io_type: 'write' }), true);
    assert.equal(ee.injection.state(IoType.WRITE).num, 1);
  });

  it('bdev_error_delete: ENODEV for other modules; deleting releases the base', async () => {
    await rejectsWith(c.call('bdev_error_delete', { name: 'M0' }), -19, 'No such device');
    assert.equal(await c.call('bdev_error_delete', { name: 'EE_M0' }), true);
    const [base] = await c.call<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'M0' });
    assert.equal(base.claimed, false);
    // With a given uuid, which the saved config keeps.
    assert.equal(await c.call('bdev_error_create', { base_name: 'M0', uuid: '0b7f0f3e-4d7c-4f0e-8b8e-9d1c2a3b4c5d' }), true);
    const config = await c.call<Array<{ method: string; params?: unknown }>>('framework_get_config', { name: 'bdev' });
    assert.deepEqual(config.find((e) => e.method === 'bdev_error_create')?.params, { base_name: 'M0', uuid: '0b7f0f3e-4d7c-4f0e-8b8e-9d1c2a3b4c5d' });
    assert.equal(await c.call('bdev_malloc_delete', { name: 'M0' }), true, 'deleting the base deletes EE_M0 first');
    assert.equal(t.bdevs.has('EE_M0'), false);
  });
});
