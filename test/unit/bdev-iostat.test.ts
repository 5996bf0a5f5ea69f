// bdev_get_iostat: the shared per-channel-slot counters (every I/O type, latencies, failures,
// channels that come and go) counted by the bdev layer channel (IostatCounter in LayerChannel),
// the RPC's SPDK reply shape and errors, and the vhostctl subcommands of the new methods
// (rpc.py arguments → params, --table).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BdevChannel } from '../../src/bdev/bdev.js';
import { BdevLayer } from '../../src/bdev/bdev-layer.js';
import { openBdev } from '../../src/bdev/channels.js';
import { type BdevIo, IoStatus, IoType, IoVecs, LayerIo } from '../../src/bdev/io.js';
import { BdevIostat, IOSTAT_SLOTS, IostatCounter } from '../../src/bdev/iostat.js';
import { LayerChannel } from '../../src/bdev/layer-channel.js';
import { Ctl } from '../../src/bdev/layer-share.js';
import { MallocBdev } from '../../src/bdev/modules/malloc/malloc.js';
import { BdevRegistry } from '../../src/bdev/registry.js';
import { main } from '../../src/cli/vhostctl.js';
import { iostatTable } from '../../src/cli/vhostctl/tables.js';
import { RpcClient, RpcError } from '../../src/rpc/client.js';
import { type TestServer, startTestServer } from './helpers/rpc-fixture.js';

function submit(ch: BdevChannel, type: IoType, offset: number, length: number): Promise<IoStatus> {
  return new Promise((resolve) => {
    const iov = new IoVecs(1);
    if (type === IoType.READ || type === IoType.WRITE) iov.push(new Uint8Array(length), 0, length);
    const io: BdevIo = { type, offset, length, iov, complete: resolve };
    ch.submit(io);
  });
}

const SPDK_KEYS = [
  'bytes_read',
  'num_read_ops',
  'bytes_written',
  'num_write_ops',
  'bytes_unmapped',
  'num_unmap_ops',
  'bytes_copied',
  'num_copy_ops',
  'read_latency_ticks',
  'max_read_latency_ticks',
  'min_read_latency_ticks',
  'write_latency_ticks',
  'max_write_latency_ticks',
  'min_write_latency_ticks',
  'unmap_latency_ticks',
  'max_unmap_latency_ticks',
  'min_unmap_latency_ticks',
  'copy_latency_ticks',
  'max_copy_latency_ticks',
  'min_copy_latency_ticks',
];
const VHOSTD_KEYS = ['num_flush_ops', 'flush_latency_ticks', 'bytes_zeroed', 'num_write_zeroes_ops', 'write_zeroes_latency_ticks', 'qos_held_ops'];

/**
 * A backend channel that completes each I/O 5 ms later with the next status of `script`
 * (SUCCESS once it is empty), and remembers every I/O it saw. `nomemInline`: NOMEM is answered
 * inside submit (as a full io_uring ring is).
 */
class ScriptedChannel implements BdevChannel {
  readonly seen: BdevIo[] = [];
  readonly script: IoStatus[] = [];
  nomemInline = false;

  submit(io: BdevIo): void {
    this.seen.push(io);
    const status = this.script.shift() ?? IoStatus.SUCCESS;
    if (status === IoStatus.NOMEM && this.nomemInline) io.complete(status);
    else setTimeout(() => io.complete(status), 5);
  }

  close(): void {}
}

const settle = () => new Promise((r) => setTimeout(r, 30));
/** Waits until `done()` holds (polled; the deadline only bounds a hang, not a slow machine). */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('iostat counters', () => {
  it('registered bdevs open through their layer channel, which counts into registry.layerOf(bdev).iostat', async () => {
    const reg = new BdevRegistry();
    const m = reg.add(new MallocBdev('M', 512, 1 << 20));
    const spec = reg.openSpec(m);
    assert.equal(spec.layer, reg.layerOf(m).share);
    assert.equal(spec.layer.iostat, reg.layerOf(m).iostat.buffer);
    const ch = openBdev(spec);
    assert.ok(ch instanceof LayerChannel);
    assert.equal(ch.poll(), 0, 'poll() always exists; nothing to do with nothing waiting');
    assert.equal(await submit(ch, IoType.READ, 0, 4096), IoStatus.SUCCESS);
    assert.equal(await submit(ch, IoType.READ, 4096, 512), IoStatus.SUCCESS);
    assert.equal(await submit(ch, IoType.WRITE, 0, 8192), IoStatus.SUCCESS);
    assert.equal(await submit(ch, IoType.UNMAP, 0, 1024), IoStatus.SUCCESS);
    assert.equal(await submit(ch, IoType.FLUSH, 0, 0), IoStatus.SUCCESS);
    assert.equal(await submit(ch, IoType.WRITE_ZEROES, 0, 2048), IoStatus.SUCCESS);
    const s = reg.layerOf(m).iostat.device();
    assert.deepEqual(Object.keys(s), [...SPDK_KEYS, 'io_error', ...VHOSTD_KEYS]);
    assert.equal(s.num_read_ops, 2);
    assert.equal(s.bytes_read, 4608);
    assert.equal(s.num_write_ops, 1);
    assert.equal(s.bytes_written, 8192);
    assert.equal(s.num_unmap_ops, 1);
    assert.equal(s.bytes_unmapped, 1024);
    assert.equal(s.num_flush_ops, 1);
    assert.equal(s.num_write_zeroes_ops, 1);
    assert.equal(s.bytes_zeroed, 2048);
    assert.equal(s.qos_held_ops, 0, 'no QoS limit: nothing held');
    assert.deepEqual(s.io_error, {}, 'failures: see below and bdev_get_iostat');
    assert.ok(s.read_latency_ticks > 0);
    assert.ok(s.min_read_latency_ticks <= s.max_read_latency_ticks);
    assert.ok(s.max_read_latency_ticks <= s.read_latency_ticks);
    ch.close();
    assert.equal(reg.layerOf(m).iostat.device().num_read_ops, 2, 'a closed channel keeps counting in the totals');
  });

  it('per channel while open; totals survive far more channel lifetimes than there are slots', async () => {
    const reg = new BdevRegistry();
    const m = reg.add(new MallocBdev('M', 512, 1 << 20));
    const stats = reg.layerOf(m).iostat;
    const a = openBdev(reg.openSpec(m));
    const b = openBdev(reg.openSpec(m));
    await submit(a, IoType.READ, 0, 512);
    await submit(b, IoType.WRITE, 0, 512);
    await submit(b, IoType.WRITE, 0, 512);
    const per = stats.channels();
    assert.equal(per.length, 2);
    assert.deepEqual(
      per.map((c) => [c.thread_id, c.num_read_ops, c.num_write_ops]),
      [
        [0, 1, 0],
        [0, 0, 2],
      ],
    );
    assert.equal(Object.hasOwn(per[0], 'io_error'), false, 'per channel: no io_error (SPDK)');
    a.close();
    b.close();
    assert.equal(stats.channels().length, 0);
    // Many more opens than slots, some while the control thread never looks, some while it does.
    for (let i = 0; i < IOSTAT_SLOTS * 3; i++) {
      const ch = openBdev(reg.openSpec(m));
      await submit(ch, IoType.READ, 0, 512);
      ch.close();
      if (i % 50 === 0) stats.device();
    }
    // 2x the slots open at once: the extra ones share the overflow slot.
    const many = Array.from({ length: IOSTAT_SLOTS * 2 }, () => openBdev(reg.openSpec(m)));
    for (const ch of many) await submit(ch, IoType.READ, 0, 512);
    for (const ch of many) ch.close();
    const s = stats.device();
    assert.equal(s.num_read_ops, 1 + IOSTAT_SLOTS * 3 + IOSTAT_SLOTS * 2);
    assert.equal(s.num_write_ops, 2);
  });

  it('IostatCounter counts successes by class, failures in io_error, NOMEM not at all; close() keeps the counts', () => {
    const control = new SharedArrayBuffer(Ctl.WORDS * 4);
    const stats = new BdevIostat(control);
    const counter = new IostatCounter(stats.buffer, control);
    counter.count(IoType.READ, 4096, 2000, IoStatus.SUCCESS);
    counter.count(IoType.READ, 512, 1000, IoStatus.SUCCESS);
    counter.count(IoType.READ, 512, 5000, IoStatus.NOMEM);
    counter.count(IoType.WRITE, 512, 5000, IoStatus.FAILED);
    counter.count(IoType.FLUSH, 0, 0, IoStatus.SUCCESS);
    counter.held();
    let s = stats.device();
    assert.deepEqual(
      [s.num_read_ops, s.bytes_read, s.read_latency_ticks, s.max_read_latency_ticks, s.min_read_latency_ticks],
      [2, 4608, 3000, 2000, 1000],
    );
    assert.deepEqual([s.num_write_ops, s.io_error, s.num_flush_ops, s.qos_held_ops], [0, { failed: 1 }, 1, 1]);
    assert.equal(stats.channels().length, 1);
    counter.close();
    assert.equal(stats.channels().length, 0);
    s = stats.device();
    assert.deepEqual([s.num_read_ops, s.io_error, s.qos_held_ops], [2, { failed: 1 }, 1]);
  });

  it('a LayerIo (a device request) is counted in place: once per submission, with its latency; NOMEM retried, not counted', async () => {
    class Req extends LayerIo {
      readonly iov = new IoVecs(1);
      readonly statuses: IoStatus[] = [];
      completed(status: IoStatus): void {
        this.statuses.push(status);
      }
    }
    const inner = new ScriptedChannel();
    const layer = new BdevLayer();
    const ch = new LayerChannel(inner, layer.share);
    const req = new Req();
    req.type = IoType.READ;
    req.length = 4096;
    ch.submit(req);
    await until(() => req.statuses.length === 1, 'the first completion');
    assert.equal(inner.seen[0], req, 'submitted as is, not wrapped in a child');
    assert.deepEqual(req.statuses, [IoStatus.SUCCESS]);
    assert.equal(req.layer, undefined, 'the layer let go of it');
    // A second completion of the same submission (a bug below) reaches the device but is not counted.
    req.complete(IoStatus.SUCCESS);
    // Refused once: the layer retries it (on the next event-loop turn, nothing else being at the
    // backend); the device sees only the final completion.
    inner.script.push(IoStatus.NOMEM);
    ch.submit(req);
    await until(() => req.statuses.length === 3, 'the retried completion');
    assert.equal(inner.seen.length, 3, 'retried after the NOMEM');
    assert.equal(inner.seen[2], req);
    assert.equal(ch.waiting, 0);
    inner.script.push(IoStatus.FAILED);
    ch.submit(req);
    await until(() => req.statuses.length === 4, 'the failed completion');
    const s = layer.iostat.device();
    assert.equal(s.num_read_ops, 2);
    assert.equal(s.bytes_read, 8192);
    assert.ok(s.min_read_latency_ticks >= 4e6, `latency ${s.min_read_latency_ticks} ns`);
    assert.ok(s.max_read_latency_ticks >= 8e6, `the retried one is timed from its first submission: ${s.max_read_latency_ticks} ns`);
    assert.deepEqual(s.io_error, { failed: 1 });
    assert.deepEqual(req.statuses, [IoStatus.SUCCESS, IoStatus.SUCCESS, IoStatus.SUCCESS, IoStatus.FAILED], 'never NOMEM');
    ch.close();
  });

  it('a plain BdevIo goes through the layer as a pooled child: counted, NOMEM retried, abortable while it waits', async () => {
    const inner = new ScriptedChannel();
    const layer = new BdevLayer();
    const ch = new LayerChannel(inner, layer.share);
    const statuses: IoStatus[] = [];
    const iov = new IoVecs(1);
    iov.push(new Uint8Array(512), 0, 512);
    const io: BdevIo = { type: IoType.WRITE, offset: 512, length: 512, iov, complete: (st) => void statuses.push(st) };
    ch.submit(io);
    await until(() => statuses.length === 1, 'the first completion');
    assert.deepEqual(statuses, [IoStatus.SUCCESS]);
    const child = inner.seen[0];
    assert.notEqual(child, io, 'wrapped in a child');
    assert.ok(child instanceof LayerIo);
    assert.deepEqual([child.type, child.offset, child.length, child.iov], [io.type, io.offset, io.length, io.iov]);
    inner.script.push(IoStatus.NOMEM);
    ch.submit(io);
    await until(() => statuses.length === 2, 'the retried completion');
    assert.deepEqual(statuses, [IoStatus.SUCCESS, IoStatus.SUCCESS], 'the NOMEM was retried, not handed up');
    assert.equal(inner.seen.length, 3);
    assert.ok(inner.seen.every((c) => c === child), 'the same child, from the pool, each time');
    // Refused inside submit: it waits in the layer for the retry; abort() takes it back.
    inner.nomemInline = true;
    inner.script.push(IoStatus.NOMEM);
    const before = inner.seen.length;
    ch.submit(io);
    assert.equal(ch.waiting, 1);
    assert.equal(ch.abort(io), true);
    assert.equal(ch.waiting, 0);
    assert.equal(ch.abort(io), false, 'not waiting any more');
    await settle();
    assert.equal(inner.seen.length, before + 1, 'an aborted I/O is not retried');
    assert.deepEqual(statuses, [IoStatus.SUCCESS, IoStatus.SUCCESS], 'nor completed');
    // The aborted one's child went back to the pool.
    ch.submit(io);
    await until(() => statuses.length === 3, 'the completion after the abort');
    assert.equal(inner.seen.at(-1), child);
    assert.deepEqual(statuses, [IoStatus.SUCCESS, IoStatus.SUCCESS, IoStatus.SUCCESS]);
    const s = layer.iostat.device();
    assert.deepEqual([s.num_write_ops, s.bytes_written, s.io_error], [3, 1536, {}], 'counted once per completed submission');
    ch.close();
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

describe('bdev_get_iostat', () => {
  let t: TestServer;
  let c: RpcClient;

  before(async () => {
    t = await startTestServer();
    c = new RpcClient(t.socketPath);
    await c.connect();
    await c.call('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512 });
    await c.call('bdev_null_create', { name: 'N0', num_blocks: 2048, block_size: 512 });
    await c.call('bdev_error_create', { base_name: 'M0' });
  });
  after(async () => {
    c.close();
    await t.stop();
  });

  it('replies {tick_rate, ticks, bdevs: [...]} for all bdevs in creation order, or for one', async () => {
    const ch = openBdev(t.bdevs.openSpec(t.bdevs.get('EE_M0')));
    await c.call('bdev_error_inject_error', { name: 'EE_M0', io_type: 'write', error_type: 'failure' });
    assert.equal(await submit(ch, IoType.WRITE, 0, 4096), IoStatus.FAILED);
    assert.equal(await submit(ch, IoType.WRITE, 0, 4096), IoStatus.SUCCESS);
    ch.close();
    const all = await c.call<{ tick_rate: number; ticks: number; bdevs: Array<Record<string, any>> }>('bdev_get_iostat');
    assert.deepEqual(Object.keys(all), ['tick_rate', 'ticks', 'bdevs']);
    assert.equal(all.tick_rate, 1e9);
    assert.ok(Number.isSafeInteger(all.ticks) && all.ticks > 0);
    assert.deepEqual(
      all.bdevs.map((b) => b.name),
      ['M0', 'N0', 'EE_M0'],
    );
    const ee = all.bdevs[2];
    assert.deepEqual(Object.keys(ee), ['name', ...SPDK_KEYS, 'io_error', ...VHOSTD_KEYS]);
    assert.deepEqual([ee.num_write_ops, ee.bytes_written, ee.io_error], [1, 4096, { failed: 1 }]);
    const m0 = all.bdevs[0];
    assert.deepEqual([m0.num_write_ops, m0.io_error], [1, {}], 'the injected failure never reached the base');

    const one = await c.call<{ bdevs: Array<Record<string, any>> }>('bdev_get_iostat', { name: 'EE_M0' });
    assert.deepEqual(one.bdevs, [{ ...ee, write_latency_ticks: one.bdevs[0].write_latency_ticks }]);
    const byUuid = await c.call<{ bdevs: Array<Record<string, any>> }>('bdev_get_iostat', { name: t.bdevs.get('N0').uuid });
    assert.equal(byUuid.bdevs[0].name, 'N0');
    assert.equal((await c.call<{ bdevs: unknown[] }>('get_bdevs_iostat')).bdevs.length, 3, 'deprecated alias');
  });

  it('per_channel: {tick_rate, ticks, name, channels}; errors as SPDK', async () => {
    const ch = openBdev(t.bdevs.openSpec(t.bdevs.get('N0')));
    await submit(ch, IoType.READ, 0, 512);
    const r = await c.call<Record<string, any>>('bdev_get_iostat', { name: 'N0', per_channel: true });
    assert.deepEqual(Object.keys(r), ['tick_rate', 'ticks', 'name', 'channels']);
    assert.equal(r.name, 'N0');
    assert.equal(r.channels.length, 1);
    assert.equal(r.channels[0].thread_id, 0);
    assert.equal(r.channels[0].num_read_ops, 1);
    ch.close();
    await rejectsWith(c.call('bdev_get_iostat', { per_channel: true }), -22, 'Invalid argument');
    await rejectsWith(c.call('bdev_get_iostat', { name: 'nope' }), -19, 'No such device');
    await rejectsWith(c.call('bdev_get_iostat', { name: 7 }), -32603, 'spdk_json_decode_object failed');
  });
});

describe('vhostctl subcommands of the new methods', () => {
  /** Runs vhostctl in-process with --dry-run; returns the request it would send. */
  async function dry(...args: string[]): Promise<{ code: number; request?: { method: string; params: unknown }; err: string }> {
    let out = '';
    let err = '';
    const code = await main(['node', 'vhostctl', '--dry-run', ...args], { out: (s) => void (out += s), err: (s) => void (err += s) });
    const json = out.startsWith('Request:\n') ? (JSON.parse(out.slice('Request:\n'.length)) as { method: string; params: unknown }) : undefined;
    return { code, request: json, err };
  }

  it('build the params rpc.py builds', async () => {
    const cases: Array<[string[], string, unknown]> = [
      [['bdev_aio_create', '/tmp/f', 'A0', '4096'], 'bdev_aio_create', { name: 'A0', filename: '/tmp/f', block_size: 4096 }],
      [['bdev_aio_create', '/tmp/f', 'A0', '-r', '--fallocate'], 'bdev_aio_create', { name: 'A0', filename: '/tmp/f', readonly: true, fallocate: true }],
      [['bdev_aio_delete', 'A0'], 'bdev_aio_delete', { name: 'A0' }],
      [['bdev_uring_create', '/dev/x', 'U0'], 'bdev_uring_create', { name: 'U0', filename: '/dev/x' }],
      [['bdev_uring_create', '/dev/x', 'U0', '512'], 'bdev_uring_create', { name: 'U0', filename: '/dev/x', block_size: 512 }],
      [['bdev_uring_delete', 'U0'], 'bdev_uring_delete', { name: 'U0' }],
      [
        ['bdev_rbd_create', 'rbd', 'img', '4096', '-b', 'Ceph7', '--user', 'admin', '--config', 'mon_host=1.2.3.4', '--config', 'a=b=c'],
        'bdev_rbd_create',
        { pool_name: 'rbd', rbd_name: 'img', block_size: 4096, name: 'Ceph7', user_id: 'admin', config: { mon_host: '1.2.3.4', a: 'b=c' } },
      ],
      [
        ['bdev_rbd_create', 'rbd', 'img', '512', '--user-id', 'u', '--config-param', 'k=v', '-c', 'c0'],
        'bdev_rbd_create',
        { pool_name: 'rbd', rbd_name: 'img', block_size: 512, user_id: 'u', config: { k: 'v' }, cluster_name: 'c0' },
      ],
      [['bdev_rbd_delete', 'Ceph0'], 'bdev_rbd_delete', { name: 'Ceph0' }],
      [
        ['bdev_rbd_register_cluster', 'c0', '--config-file', '/etc/ceph/ceph.conf', '--core-mask', '0x1'],
        'bdev_rbd_register_cluster',
        { name: 'c0', config_file: '/etc/ceph/ceph.conf', core_mask: '0x1' },
      ],
      [
        ['bdev_delay_create', '-b', 'M0', '-d', 'D0', '-r', '10', '-t', '100', '-w', '20', '-n', '200'],
        'bdev_delay_create',
        { base_bdev_name: 'M0', name: 'D0', avg_read_latency: 10, p99_read_latency: 100, avg_write_latency: 20, p99_write_latency: 200 },
      ],
      [['bdev_delay_delete', 'D0'], 'bdev_delay_delete', { name: 'D0' }],
      [
        ['bdev_delay_update_latency', 'D0', 'avg_read', '50'],
        'bdev_delay_update_latency',
        { delay_bdev_name: 'D0', latency_type: 'avg_read', latency_us: 50 },
      ],
      [['bdev_error_create', 'M0'], 'bdev_error_create', { base_name: 'M0' }],
      [['bdev_error_delete', 'EE_M0'], 'bdev_error_delete', { name: 'EE_M0' }],
      [['bdev_error_inject_error', 'EE_M0', 'read', 'failure', '-n', '1'], 'bdev_error_inject_error', { name: 'EE_M0', io_type: 'read', error_type: 'failure', num: 1 }],
      [
        ['bdev_error_inject_error', 'EE_M0', 'write', 'corrupt_data', '-o', '7', '-v', '255', '-q', '2'],
        'bdev_error_inject_error',
        { name: 'EE_M0', io_type: 'write', error_type: 'corrupt_data', queue_depth: 2, corrupt_offset: 7, corrupt_value: 255 },
      ],
      // {} is sent as no params at all (rpc.py leaves empty params out); --dry-run shows it.
      [['bdev_get_iostat'], 'bdev_get_iostat', {}],
      [['bdev_get_iostat', '-b', 'M0', '-c'], 'bdev_get_iostat', { name: 'M0', per_channel: true }],
    ];
    for (const [args, method, params] of cases) {
      const r = await dry(...args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      assert.deepEqual(r.request, { method, params }, args.join(' '));
    }
    const missing = await dry('bdev_delay_create', '-b', 'M0', '-d', 'D0', '-r', '1', '-t', '1', '-w', '1');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /required option '-n, --nine-nine-write-latency <us>' not specified/);
    const badConfig = await dry('bdev_rbd_create', 'p', 'i', '512', '--config', 'novalue');
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.err, /--config novalue not in key=value form/);
  });

  it('bdev_get_iostat --table: ops, MiB and average latencies per bdev or per channel', () => {
    const table = iostatTable({
      tick_rate: 1e9,
      bdevs: [{ name: 'M0', num_read_ops: 4, bytes_read: 2 ** 21, read_latency_ticks: 40_000, num_write_ops: 0, bytes_written: 0, num_unmap_ops: 1, num_flush_ops: 3, io_error: { failed: 2 } }],
    });
    const lines = table.split('\n');
    assert.match(lines[1], /Name .*Read ops .*Read MiB .*Write ops .*Written MiB .*Unmap ops .*Flush ops .*Read lat \(us\) .*Write lat \(us\) .*Errors/);
    assert.match(lines[2], /M0 +│ 4 +│ 2\.00 +│ 0 +│ 0\.00 +│ 1 +│ 3 +│ 10\.0 +│ +│ 2 /);
    const per = iostatTable({ tick_rate: 1e9, name: 'M0', channels: [{ thread_id: 1, num_read_ops: 1, bytes_read: 512, read_latency_ticks: 1000 }] });
    assert.match(per, /Thread/);
    assert.match(per, /M0 @ 1/);
  });
});
