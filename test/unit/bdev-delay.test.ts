// The delay vbdev: channel timing (avg/p99, FIFO per class, run-time latency changes through the
// shared buffer, poll, close) on a malloc base, and its RPCs with SPDK's replies and errors.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it, mock } from 'node:test';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { openBackendChannel } from '../../src/bdev/channels.js';
import { type BdevIo, IoStatus, IoType, IoVecs } from '../../src/bdev/io.js';
import { DelayBdev, DelayChannel, DelayType } from '../../src/bdev/modules/delay/delay.js';
import { MallocBdev } from '../../src/bdev/modules/malloc/malloc.js';
import { RpcClient, RpcError } from '../../src/rpc/client.js';
import { openSpecOf } from './helpers/open-spec.js';
import { type TestServer, startTestServer } from './helpers/rpc-fixture.js';

interface Done {
  status: IoStatus;
  ms: number;
  /** Completed inside submit(): no delay was applied, whatever the machine's pauses. */
  sync: boolean;
}

/** Submits one I/O of `len` bytes; resolves with its status and how long it took. */
function submit(ch: BdevChannel, type: IoType, offset: number, len: number, buf = new Uint8Array(len)): Promise<Done> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const iov = new IoVecs(1);
    if (len > 0 && (type === IoType.READ || type === IoType.WRITE)) iov.push(buf, 0, len);
    let inSubmit = true;
    const io: BdevIo = { type, offset, length: len, iov, complete: (status) => resolve({ status, ms: performance.now() - t0, sync: inSubmit }) };
    ch.submit(io);
    inSubmit = false;
  });
}

function delayOver(base: MallocBdev, us: { avgRead?: number; p99Read?: number; avgWrite?: number; p99Write?: number }): DelayBdev {
  return new DelayBdev(
    'D',
    base,
    { avgReadUs: us.avgRead ?? 0, p99ReadUs: us.p99Read ?? us.avgRead ?? 0, avgWriteUs: us.avgWrite ?? 0, p99WriteUs: us.p99Write ?? us.avgWrite ?? 0 },
    undefined,
    () => undefined,
  );
}

describe('delay channel', () => {
  it('completes reads and writes after their latency, other I/O at once, data intact', async () => {
    const base = new MallocBdev('M', 512, 1 << 20);
    const d = delayOver(base, { avgRead: 30_000, avgWrite: 15_000 });
    const ch = openBackendChannel(d.channelSpec(openSpecOf));
    assert.ok(ch instanceof DelayChannel);
    const data = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
    const w = await submit(ch, IoType.WRITE, 8192, 4096, data);
    assert.equal(w.status, IoStatus.SUCCESS);
    assert.ok(w.ms >= 14.5 && w.ms < 500, `write took ${w.ms} ms`);
    const back = new Uint8Array(4096);
    const r = await submit(ch, IoType.READ, 8192, 4096, back);
    assert.equal(r.status, IoStatus.SUCCESS);
    assert.ok(r.ms >= 29.5 && r.ms < 500, `read took ${r.ms} ms`);
    assert.deepEqual(back, data);
    for (const t of [IoType.FLUSH, IoType.UNMAP, IoType.WRITE_ZEROES]) {
      const o = await submit(ch, t, 0, t === IoType.FLUSH ? 0 : 4096);
      assert.equal(o.status, IoStatus.SUCCESS);
      assert.ok(o.sync, `type ${t} was not delayed (it completed ${o.ms} ms later)`); // malloc completes synchronously
    }
    ch.close();
  });

  it('uses the p99 latency for 1 in 100 I/Os, drawn at submission (Math.random, like rand_r % 100)', async () => {
    const base = new MallocBdev('M', 512, 1 << 20);
    // p99 at 400 ms, so a loaded machine's pauses (tens of ms) cannot pass for it.
    const d = delayOver(base, { avgRead: 0, p99Read: 400_000 });
    const ch = openBackendChannel(d.channelSpec(openSpecOf));
    const random = mock.method(Math, 'random', () => 0.001); // floor(0.1) === 0: p99
    try {
      const slow = await submit(ch, IoType.READ, 0, 512);
      assert.ok(slow.ms >= 399.5, `p99 read took ${slow.ms} ms`);
      random.mock.mockImplementation(() => 0.5);
      const fast = await submit(ch, IoType.READ, 0, 512);
      assert.ok(fast.ms < 300, `avg read took ${fast.ms} ms`);
    } finally {
      random.mock.restore();
      ch.close();
    }
  });

  it('takes latency changes made on the control side from the next completion on', async () => {
    const base = new MallocBdev('M', 512, 1 << 20);
    const d = delayOver(base, { avgRead: 0, p99Read: 0 });
    const ch = openBackendChannel(d.channelSpec(openSpecOf));
    // 250 ms after the change, so a loaded machine's pauses (tens of ms) cannot pass for it.
    assert.ok((await submit(ch, IoType.READ, 0, 512)).ms < 200);
    d.setLatency(DelayType.AVG_READ, 250_000);
    d.setLatency(DelayType.P99_READ, 250_000);
    assert.equal(d.latency(DelayType.AVG_READ), 250_000);
    const r = await submit(ch, IoType.READ, 0, 512);
    assert.ok(r.ms >= 249.5, `read took ${r.ms} ms after the change`);
    ch.close();
  });

  it('keeps FIFO order within a class; poll() completes what is due; close() completes what is held', async () => {
    const base = new MallocBdev('M', 512, 1 << 20);
    const d = delayOver(base, { avgWrite: 20_000 });
    const ch = openBackendChannel(d.channelSpec(openSpecOf)) as DelayChannel;
    const order: number[] = [];
    // All in the avg class: the p99 class is a FIFO of its own (SPDK's four lists).
    const random = mock.method(Math, 'random', () => 0.5);
    const all = [0, 1, 2, 3].map((i) => submit(ch, IoType.WRITE, i * 512, 512).then((r) => order.push(i) && r));
    random.mock.restore();
    await Promise.all(all);
    assert.deepEqual(order, [0, 1, 2, 3]);

    // poll(): a polling reactor completes due I/O without waiting for the timer.
    d.setLatency(DelayType.AVG_WRITE, 2_000);
    d.setLatency(DelayType.P99_WRITE, 2_000);
    let done = false;
    void submit(ch, IoType.WRITE, 0, 512).then(() => {
      done = true;
    });
    const t0 = performance.now();
    while (performance.now() - t0 < 2.5) {
      /* spin past the 2 ms deadline without yielding to timers */
    }
    assert.equal(done, false);
    assert.equal(ch.poll(), 1);
    await Promise.resolve();
    assert.equal(done, true);

    d.setLatency(DelayType.AVG_WRITE, 60_000_000);
    d.setLatency(DelayType.P99_WRITE, 60_000_000);
    const held = submit(ch, IoType.WRITE, 0, 512);
    ch.close();
    assert.equal((await held).status, IoStatus.SUCCESS, 'close completes held I/O with the base status');
    assert.equal((await submit(ch, IoType.READ, 0, 512)).status, IoStatus.FAILED, 'a closed channel fails new I/O');
  });
});

async function rejectsWith(p: Promise<unknown>, code: number, message?: string | RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${String(err)}`);
    assert.equal(err.code, code, `code for "${err.message}"`);
    if (typeof message === 'string') assert.equal(err.message, message);
    else if (message) assert.match(err.message, message);
    return true;
  });
}

describe('delay RPCs', () => {
  let t: TestServer;
  let c: RpcClient;
  const create = (over: Record<string, unknown> = {}) =>
    c.call('bdev_delay_create', {
      base_bdev_name: 'M0',
      name: 'D0',
      avg_read_latency: 100,
      p99_read_latency: 1000,
      avg_write_latency: 200,
      p99_write_latency: 2000,
      ...over,
    });

  before(async () => {
    t = await startTestServer();
    c = new RpcClient(t.socketPath);
    await c.connect();
  });
  after(async () => {
    c.close();
    await t.stop();
  });

  it('bdev_delay_create returns the name; the bdev mirrors its base and claims it', async () => {
    await c.call('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 4096, uuid: '8a2d55fe-6a3b-4a77-9a5c-3a9f40cc7f43' });
    assert.equal(await create(), 'D0');
    const [info] = await c.call<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'D0' });
    assert.equal(info.product_name, 'delay');
    assert.equal(info.block_size, 4096);
    assert.equal(info.num_blocks, 2048);
    assert.match(info.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'SPDK: a SHA-1 (v5) UUID from the base UUID');
    assert.deepEqual(info.driver_specific, {
      delay: {
        name: 'D0',
        base_bdev_name: 'M0',
        uuid: info.uuid,
        avg_read_latency: 100,
        p99_read_latency: 1000,
        avg_write_latency: 200,
        p99_write_latency: 2000,
      },
    });
    const [base] = await c.call<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'M0' });
    assert.equal(base.claimed, true);
    // The same base UUID gives the same delay UUID (stable across restarts).
    await c.call('bdev_delay_delete', { name: 'D0' });
    assert.equal(await create(), 'D0');
    const [again] = await c.call<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'D0' });
    assert.equal(again.uuid, info.uuid);
  });

  it('errors as SPDK: decoding -32603, p99 < avg EINVAL, duplicate EEXIST, claimed base EPERM, missing base ENODEV', async () => {
    await rejectsWith(create({ avg_read_latency: 'x' }), -32603, 'spdk_json_decode_object failed');
    await rejectsWith(create({ name: undefined }), -32603, 'spdk_json_decode_object failed');
    await rejectsWith(create({ bogus: 1 }), -32603, 'spdk_json_decode_object failed');
    await rejectsWith(create({ name: 'D1', p99_write_latency: 100 }), -22, 'Invalid argument');
    await rejectsWith(create(), -17, 'File exists');
    await rejectsWith(create({ name: 'D1' }), -1, 'Operation not permitted');
    await rejectsWith(create({ name: 'D1', base_bdev_name: 'nope' }), -19, 'No such device');
    assert.equal(t.bdevs.has('D1'), false);
  });

  it('bdev_delay_update_latency changes one latency; bad type or bdev are -32602 with SPDK messages', async () => {
    assert.equal(await c.call('bdev_delay_update_latency', { delay_bdev_name: 'D0', latency_type: 'p99_write', latency_us: 5000 }), true);
    const [info] = await c.call<Array<Record<string, any>>>('bdev_get_bdevs', { name: 'D0' });
    assert.equal(info.driver_specific.delay.p99_write_latency, 5000);
    await rejectsWith(
      c.call('bdev_delay_update_latency', { delay_bdev_name: 'D0', latency_type: 'p50_read', latency_us: 1 }),
      -32602,
      'Please specify a valid latency type.',
    );
    await rejectsWith(
      c.call('bdev_delay_update_latency', { delay_bdev_name: 'M0', latency_type: 'avg_read', latency_us: 1 }),
      -32602,
      'The requested bdev does not exist.',
    );
    await rejectsWith(c.call('bdev_delay_update_latency', { delay_bdev_name: 'D0', latency_type: 'avg_read' }), -32603);
  });

  it('is saved after its base in the bdev config', async () => {
    const config = await c.call<Array<{ method: string; params?: Record<string, unknown> }>>('framework_get_config', { name: 'bdev' });
    const methods = config.map((e) => e.method);
    assert.ok(methods.indexOf('bdev_malloc_create') < methods.indexOf('bdev_delay_create'));
    const entry = config.find((e) => e.method === 'bdev_delay_create');
    assert.deepEqual(Object.keys(entry?.params ?? {}), [
      'name',
      'base_bdev_name',
      'uuid',
      'avg_read_latency',
      'p99_read_latency',
      'avg_write_latency',
      'p99_write_latency',
    ]);
  });

  it('bdev_delay_delete: ENODEV for other modules; deleting the base removes the delay bdev first', async () => {
    await rejectsWith(c.call('bdev_delay_delete', { name: 'M0' }), -19, 'No such device');
    await rejectsWith(c.call('bdev_delay_delete', {}), -32603);
    // In use by a controller: neither it nor its base can go.
    await c.call('vhost_create_blk_controller', { ctrlr: 'v0', dev_name: 'D0' });
    await rejectsWith(c.call('bdev_malloc_delete', { name: 'M0' }), -16, 'Device or resource busy');
    assert.equal(t.bdevs.has('D0'), true);
    await c.call('vhost_delete_controller', { ctrlr: 'v0' });
    assert.equal(await c.call('bdev_malloc_delete', { name: 'M0' }), true);
    assert.equal(t.bdevs.has('D0'), false);
    assert.equal(t.bdevs.has('M0'), false);
  });
});
