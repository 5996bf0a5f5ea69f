import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { RpcClient, RpcError } from '../../src/rpc/client.js';
import { RpcServer } from '../../src/rpc/server.js';
import { JsonStreamParser } from '../../src/rpc/stream-parser.js';
import { VhostdError } from '../../src/util/errors.js';
import { type TestServer, startTestServer } from './helpers/rpc-fixture.js';

/** Rejects unless `promise` fails with a JSON-RPC error of `code` (and `message`, if given). */
async function rejectsWith(promise: Promise<unknown>, code: number, message?: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${String(err)}`);
    assert.equal(err.code, code, `code for "${err.message}"`);
    if (message !== undefined) assert.equal(err.message, message);
    return true;
  });
}

interface RawResult {
  replies: unknown[];
  text: string;
  closedByServer: boolean;
}

/** Writes `chunks` on a fresh connection, waits for `expect` replies (or close / a quiet period). */
function rawExchange(socketPath: string, chunks: (string | Buffer)[], expect: number, quietMs = 300): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const sock: Socket = connect(socketPath);
    const parser = new JsonStreamParser();
    const replies: unknown[] = [];
    let text = '';
    let closedByServer = false;
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ replies, text, closedByServer });
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(done, quietMs);
    };
    sock.on('connect', async () => {
      for (const c of chunks) {
        sock.write(c);
        if (chunks.length > 1) await sleep(1);
      }
      arm();
    });
    sock.on('data', (d: Buffer) => {
      text += d.toString();
      replies.push(...parser.push(d).values);
      if (replies.length >= expect && expect > 0) setImmediate(done);
      else arm();
    });
    sock.on('end', () => {
      closedByServer = true;
      done();
    });
    sock.on('error', reject);
  });
}

/** A request as rpc.py's JSONRPCClient.flush() writes it. */
function rpcPyRequest(method: string, id: number, params?: object): string {
  const req: Record<string, unknown> = { jsonrpc: '2.0', method, id };
  if (params) req.params = params;
  return JSON.stringify(req, null, 2);
}

describe('RPC methods over a real RpcServer', () => {
  let t: TestServer;
  let client: RpcClient;

  // A fresh server per test: auto-naming counters and configuration start from scratch.
  beforeEach(async () => {
    t = await startTestServer();
    client = new RpcClient(t.socketPath, { timeoutMs: 5000 });
  });
  afterEach(async () => {
    client.close();
    await t.stop();
  });

  describe('server', () => {
    it('creates the socket with mode 0600', () => {
      const st = statSync(t.socketPath);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o600);
    });

    it('answers an unknown method with -32601 "Method not found"', async () => {
      await rejectsWith(client.call('no_such_method'), -32601, 'Method not found');
    });

    it('answers back-to-back pretty-printed requests with no delimiter, in order, compact + newline', async () => {
      const stream = [
        rpcPyRequest('bdev_malloc_create', 1, { num_blocks: 32, block_size: 512 }),
        rpcPyRequest('bdev_malloc_create', 2, { num_blocks: 32, block_size: 4096, name: 'named' }),
        rpcPyRequest('spdk_get_version', 3),
      ];
      const { replies, text } = await rawExchange(t.socketPath, [stream.join('')], 3);
      assert.deepEqual(replies, [
        { jsonrpc: '2.0', id: 1, result: 'Malloc0' },
        { jsonrpc: '2.0', id: 2, result: 'named' },
        (replies as Array<Record<string, unknown>>)[2],
      ]);
      const lines = text.split('\n');
      assert.equal(lines.length, 4); // three replies, each one line ending in "\n"
      assert.equal(lines[0], '{"jsonrpc":"2.0","id":1,"result":"Malloc0"}');
    });

    it('accepts rpc.py newline-joined requests split into single bytes', async () => {
      const stream = Buffer.from([rpcPyRequest('rpc_get_methods', 7), rpcPyRequest('bdev_get_bdevs', 8)].join('\n'));
      const chunks = [...stream].map((b) => Buffer.of(b));
      const { replies } = await rawExchange(t.socketPath, chunks, 2);
      assert.deepEqual(
        replies.map((r) => (r as { id: number }).id),
        [7, 8],
      );
    });

    it('accepts a request without "jsonrpc" (SPDK treats it as optional)', async () => {
      const { replies } = await rawExchange(t.socketPath, ['{"method":"bdev_get_bdevs","id":"a"}'], 1);
      assert.deepEqual(replies, [{ jsonrpc: '2.0', id: 'a', result: [] }]);
    });

    it('answers a batch with an array and does not answer notifications', async () => {
      const batch = JSON.stringify([
        { jsonrpc: '2.0', method: 'bdev_malloc_create', params: { num_blocks: 8, block_size: 512, name: 'N1' } },
        { jsonrpc: '2.0', method: 'bdev_get_bdevs', id: 1 },
        { jsonrpc: '2.0', method: 'nope', id: 2 },
      ]);
      const { replies } = await rawExchange(t.socketPath, [batch], 1);
      assert.equal(replies.length, 1);
      const arr = replies[0] as Array<Record<string, unknown>>;
      assert.ok(Array.isArray(arr));
      assert.deepEqual(
        arr.map((r) => r.id),
        [1, 2],
      );
      assert.equal((arr[0]?.result as unknown[] | undefined)?.length, 1); // the notification ran before
      assert.deepEqual(arr[1]?.error, { code: -32601, message: 'Method not found' });

      const notifyOnly = await rawExchange(t.socketPath, ['{"jsonrpc":"2.0","method":"bdev_get_bdevs"}'], 0, 200);
      assert.deepEqual(notifyOnly.replies, []);
    });

    it('rejects malformed requests with -32600 "Invalid request"', async () => {
      const bad = [
        '[]',
        '{"jsonrpc":"2.0","id":1}',
        '{"jsonrpc":"2.0","method":5,"id":1}',
        '{"jsonrpc":"1.0","method":"bdev_get_bdevs","id":1}',
        '{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":{},"x":1}',
        '{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1,"extra":true}',
        '{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1,"params":"str"}',
        '5 ',
        '"just a string"',
        '[1, null, "x"]',
      ];
      for (const req of bad) {
        const { replies } = await rawExchange(t.socketPath, [req], 1);
        const reply = (Array.isArray(replies[0]) ? replies[0][0] : replies[0]) as { error?: { code: number; message: string } };
        assert.deepEqual(reply.error, { code: -32600, message: 'Invalid request' }, req);
      }
    });

    it('answers garbage with -32700 "Parse error" and closes the connection', async () => {
      const { replies, closedByServer } = await rawExchange(t.socketPath, ['{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1} {"x": ]'], 0, 2000);
      assert.deepEqual(replies[0], { jsonrpc: '2.0', id: 1, result: [] });
      assert.deepEqual(replies[1], { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
      assert.ok(closedByServer);
    });

    it('refuses an oversized request with a parse error', async () => {
      const huge = `{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1,"params":{"name":"${'x'.repeat(1100 * 1024)}"}}`;
      const { replies } = await rawExchange(t.socketPath, [huge], 1, 2000);
      assert.equal((replies[0] as { error: { code: number } }).error.code, -32700);
    });

    it('survives 200 concurrent garbage connections', async () => {
      const garbage = ['}{', '\u0000\u0001\u00ff', '{"a":', '{"method": ]', '[[[[', 'nul'];
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          new Promise<void>((resolve) => {
            const s = connect(t.socketPath);
            s.on('connect', () => {
              s.write(garbage[i % garbage.length] as string);
              if (i % 3 === 0) s.destroy();
              else s.end();
            });
            s.on('error', () => resolve());
            s.on('close', () => resolve());
            s.resume();
          }),
        ),
      );
      assert.deepEqual(await client.call('bdev_get_bdevs'), []);
    });

    it('pipelines concurrent calls from one client', async () => {
      const names = await Promise.all(Array.from({ length: 10 }, () => client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512 })));
      assert.deepEqual(
        names,
        Array.from({ length: 10 }, (_, i) => `Malloc${i}`),
      );
    });

    it('maps an unexpected exception to -32603 with its message and keeps running', async () => {
      await client.call('vhost_create_scsi_controller', { ctrlr: 'vhost.0' });
      t.vhost.failNext = new TypeError('boom');
      await rejectsWith(client.call('vhost_controller_set_coalescing', { ctrlr: 'vhost.0', delay_base_us: 1, iops_threshold: 2 }), -32603, 'boom');
      assert.equal(await client.call('vhost_controller_set_coalescing', { ctrlr: 'vhost.0', delay_base_us: 1, iops_threshold: 2 }), true);
    });
  });

  describe('bdev methods', () => {
    it('bdev_malloc_create auto-names Malloc0, Malloc1 and returns the name', async () => {
      assert.equal(await client.call('bdev_malloc_create', { num_blocks: 128, block_size: 512 }), 'Malloc0');
      assert.equal(await client.call('bdev_malloc_create', { num_blocks: 128, block_size: 4096 }), 'Malloc1');
      assert.equal(await client.call('construct_malloc_bdev', { num_blocks: 1, block_size: 512, name: 'Legacy' }), 'Legacy');
      const bdev = t.bdevs.get('Malloc1');
      assert.equal(bdev.blockSize, 4096);
      assert.equal(bdev.numBlocks, 128);
    });

    it('bdev_malloc_create accepts rpc.py optional keys at their defaults and honours uuid', async () => {
      const uuid = '1b2e3c4d-0000-4000-8000-00000000abcd';
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'U', uuid: uuid.toUpperCase(), optimal_io_boundary: 16, md_interleave: false });
      assert.equal(t.bdevs.get('U').uuid, uuid);
      await rejectsWith(client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'U2', uuid }), -17, 'File exists');
      await rejectsWith(client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, md_size: 8 }), -95, 'Operation not supported');
    });

    it('refuses a duplicate name with -17 "File exists"', async () => {
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'Dup' });
      await rejectsWith(client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'Dup' }), -17, 'File exists');
      await rejectsWith(client.call('bdev_null_create', { num_blocks: 8, block_size: 512, name: 'Dup' }), -17, 'File exists');
    });

    it('rejects bad params with -32602 and never crashes', async () => {
      const bad: unknown[] = [
        undefined,
        [],
        [128, 512],
        { block_size: 512 },
        { num_blocks: '128', block_size: 512 },
        { num_blocks: 128, block_size: '512' },
        { num_blocks: -1, block_size: 512 },
        { num_blocks: 1.5, block_size: 512 },
        { num_blocks: 1e300, block_size: 512 },
        { num_blocks: 2 ** 53 + 2, block_size: 512 },
        { num_blocks: 8, block_size: 512, name: 5 },
        { num_blocks: 8, block_size: 512, uuid: 'not-a-uuid' },
        { num_blocks: 8, block_size: 512, bogus: 1 },
        { num_blocks: 8, block_size: 512, md_interleave: 'yes' },
        { num_blocks: null, block_size: 512 },
      ];
      for (const params of bad) {
        const raw = JSON.stringify({ jsonrpc: '2.0', method: 'bdev_malloc_create', id: 1, ...(params !== undefined ? { params } : {}) });
        const { replies } = await rawExchange(t.socketPath, [raw], 1);
        assert.deepEqual((replies[0] as { error: unknown }).error, { code: -32602, message: 'spdk_json_decode_object failed' }, raw);
      }
      assert.equal(t.bdevs.list().length, 0);
    });

    it('rejects unsupported geometry with -22 "Invalid argument"', async () => {
      for (const p of [
        { num_blocks: 8, block_size: 520 },
        { num_blocks: 8, block_size: 1024 },
        { num_blocks: 0, block_size: 512 },
        { num_blocks: 8, block_size: 512, physical_block_size: 100 },
        { num_blocks: 8, block_size: 512, name: '' },
      ]) {
        await rejectsWith(client.call('bdev_malloc_create', p), -22, 'Invalid argument');
      }
      await rejectsWith(client.call('bdev_null_create', { name: 'n', num_blocks: 8, block_size: 2048 }), -22, 'Invalid argument');
    });

    it('maps an impossible allocation to -12 "Cannot allocate memory"', async () => {
      await rejectsWith(client.call('bdev_malloc_create', { num_blocks: 2 ** 40, block_size: 4096 }), -12, 'Cannot allocate memory');
      await rejectsWith(client.call('bdev_malloc_create', { num_blocks: 2 ** 52, block_size: 4096 }), -12, 'Cannot allocate memory');
    });

    it('bdev_get_bdevs returns SPDK-shaped objects', async () => {
      await client.call('bdev_null_create', { name: 'Null0', num_blocks: 1024, block_size: 4096 });
      const [info] = await client.call<Array<Record<string, unknown>>>('bdev_get_bdevs', { name: 'Null0', timeout: 0 });
      assert.deepEqual(Object.keys(info ?? {}), [
        'name',
        'aliases',
        'product_name',
        'block_size',
        'num_blocks',
        'uuid',
        'assigned_rate_limits',
        'claimed',
        'zoned',
        'supported_io_types',
        'driver_specific',
      ]);
      assert.deepEqual(info, {
        name: 'Null0',
        aliases: [],
        product_name: 'Null disk',
        block_size: 4096,
        num_blocks: 1024,
        uuid: t.bdevs.get('Null0').uuid,
        assigned_rate_limits: { rw_ios_per_sec: 0, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 },
        claimed: false,
        zoned: false,
        supported_io_types: {
          read: true,
          write: true,
          unmap: false,
          write_zeroes: true,
          flush: true,
          reset: false,
          compare: false,
          compare_and_write: false,
          abort: false,
          nvme_admin: false,
          nvme_io: false,
        },
        driver_specific: {},
      });
      // Lookup by uuid, the legacy alias, and listing all.
      const byUuid = await client.call<unknown[]>('get_bdevs', { name: t.bdevs.get('Null0').uuid });
      assert.equal(byUuid.length, 1);
      assert.equal((await client.call<unknown[]>('bdev_get_bdevs')).length, 1);
    });

    it('bdev_get_bdevs reports claims and -19 "No such device" for an unknown name', async () => {
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512 });
      t.bdevs.claim('Malloc0', 'vhost.0');
      const [info] = await client.call<Array<Record<string, unknown>>>('bdev_get_bdevs', { name: 'Malloc0' });
      assert.equal(info?.claimed, true);
      assert.equal(info?.claim_type, 'exclusive_write');
      await rejectsWith(client.call('bdev_get_bdevs', { name: 'nope' }), -19, 'No such device');
      await rejectsWith(client.call('bdev_get_bdevs', { name: 5 }), -32602);
    });

    it('deletes by module, refuses a claimed bdev, and supports legacy delete_bdev', async () => {
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'M' });
      await client.call('bdev_null_create', { num_blocks: 8, block_size: 512, name: 'N' });
      await rejectsWith(client.call('bdev_null_delete', { name: 'M' }), -19, 'No such device');
      await rejectsWith(client.call('bdev_malloc_delete', { name: 'nope' }), -19, 'No such device');
      await rejectsWith(client.call('bdev_malloc_delete', { name: 'M', extra: 1 }), -32602);

      t.bdevs.claim('M', 'vhost.9');
      await rejectsWith(client.call('bdev_malloc_delete', { name: 'M' }), -16, 'Device or resource busy');
      await rejectsWith(client.call('delete_bdev', { name: 'M' }), -16);
      assert.ok(t.bdevs.has('M'));
      t.bdevs.release('M', 'vhost.9');

      assert.equal(await client.call('bdev_malloc_delete', { name: 'M' }), true);
      assert.equal(await client.call('delete_bdev', { name: 'N' }), true);
      await rejectsWith(client.call('delete_bdev', { name: 'N' }), -32602, 'Invalid parameters');
      assert.equal(t.bdevs.list().length, 0);
    });
  });

  describe('vhost methods', () => {
    it('vhost_create_blk_controller passes the decoded params to the service', async () => {
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512 });
      // Exactly what rpc.py sends for `vhost_create_blk_controller --cpumask 0x1 -r vhost.1 Malloc0`.
      assert.equal(
        await client.call('vhost_create_blk_controller', { ctrlr: 'vhost.1', dev_name: 'Malloc0', cpumask: '0x1', readonly: true, packed_ring: false }),
        true,
      );
      assert.deepEqual(t.vhost.calls.at(-1), {
        method: 'createBlkController',
        args: [{ ctrlr: 'vhost.1', devName: 'Malloc0', cpumask: '0x1', readonly: true, packedRing: false }],
      });
      // Opened for writing, not claimed (SPDK's vhost claims nothing; controllers may share a bdev).
      assert.deepEqual(t.bdevs.openedBy('Malloc0'), ['vhost.1']);
      assert.equal(t.bdevs.claimedBy('Malloc0'), undefined);
      await rejectsWith(client.call('bdev_malloc_delete', { name: 'Malloc0' }), -16);
    });

    it('reports vhost failures as SPDK does: -32602 with strerror text', async () => {
      await rejectsWith(client.call('vhost_create_blk_controller', { ctrlr: 'v', dev_name: 'missing' }), -32602, 'No such device');
      await rejectsWith(client.call('vhost_delete_controller', { ctrlr: 'missing' }), -32602, 'No such device');
      await rejectsWith(client.call('vhost_create_blk_controller', { ctrlr: 'v', dev_name: 'x', transport: 'pci' }), -32602, 'Invalid argument');
      await rejectsWith(client.call('vhost_create_blk_controller', { ctrlr: 'v' }), -32602, 'Invalid argument');
      await rejectsWith(client.call('vhost_create_blk_controller', { ctrlr: 'v', dev_name: 'x', readonly: 'yes' }), -32602, 'Invalid argument');
      await rejectsWith(client.call('vhost_get_controllers', { name: 'missing' }), -32603, 'No such device');
      await client.call('vhost_create_scsi_controller', { ctrlr: 'vhost.0' });
      await rejectsWith(client.call('vhost_create_scsi_controller', { ctrlr: 'vhost.0' }), -32602, 'File exists');
    });

    it('scsi controller lifecycle, including legacy aliases', async () => {
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'A' });
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'B' });
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512, name: 'C' });
      // rpc.py always sends `delay`.
      assert.equal(await client.call('construct_vhost_scsi_controller', { ctrlr: 'vhost.0', delay: false, cpumask: '0x3' }), true);
      assert.equal(await client.call('vhost_start_scsi_controller', { ctrlr: 'vhost.0' }), true);
      assert.equal(await client.call('vhost_scsi_controller_add_target', { ctrlr: 'vhost.0', scsi_target_num: 0, bdev_name: 'A' }), 0);
      assert.equal(await client.call('add_vhost_scsi_lun', { ctrlr: 'vhost.0', scsi_target_num: -1, bdev_name: 'B' }), 1);
      assert.equal(await client.call('vhost_scsi_controller_add_target', { ctrlr: 'vhost.0', scsi_target_num: 5, bdev_name: 'C' }), 5);
      await rejectsWith(client.call('vhost_scsi_controller_add_target', { ctrlr: 'vhost.0', scsi_target_num: '1', bdev_name: 'C' }), -32602);

      const [ctrl] = await client.call<Array<Record<string, unknown>>>('get_vhost_controllers', { name: 'vhost.0' });
      assert.equal(ctrl?.cpumask, '0x3');
      assert.equal((ctrl?.backend_specific as { scsi: unknown[] } | undefined)?.scsi.length, 3);

      assert.equal(await client.call('vhost_scsi_controller_remove_target', { ctrlr: 'vhost.0', scsi_target_num: 0 }), true);
      assert.equal(await client.call('remove_vhost_scsi_target', { ctrlr: 'vhost.0', scsi_target_num: 1 }), true);
      assert.equal(await client.call('remove_vhost_scsi_dev', { ctrlr: 'vhost.0', scsi_dev_num: 5 }), true);
      await rejectsWith(client.call('vhost_scsi_controller_remove_target', { ctrlr: 'vhost.0', scsi_target_num: -1 }), -32602, 'Invalid argument');
      assert.deepEqual(
        t.vhost.calls.filter((c) => c.method === 'scsiRemoveTarget').map((c) => c.args),
        [
          ['vhost.0', 0],
          ['vhost.0', 1],
          ['vhost.0', 5],
        ],
      );

      assert.equal(await client.call('set_vhost_controller_coalescing', { ctrlr: 'vhost.0', delay_base_us: 50, iops_threshold: 1000 }), true);
      const [after] = await client.call<Array<Record<string, unknown>>>('vhost_get_controllers');
      assert.equal(after?.delay_base_us, 50);
      assert.equal(await client.call('remove_vhost_controller', { ctrlr: 'vhost.0' }), true);
      assert.deepEqual(await client.call('vhost_get_controllers'), []);
    });

    it('construct_vhost_blk_controller (legacy) works', async () => {
      await client.call('bdev_malloc_create', { num_blocks: 8, block_size: 512 });
      assert.equal(await client.call('construct_vhost_blk_controller', { ctrlr: 'vhost.2', dev_name: 'Malloc0' }), true);
      assert.equal((await client.call<unknown[]>('vhost_get_controllers')).length, 1);
    });
  });

  describe('framework methods', () => {
    it('rpc_get_methods lists aliases only with include_aliases', async () => {
      const methods = await client.call<string[]>('rpc_get_methods');
      const all = await client.call<string[]>('get_rpc_methods', { include_aliases: true, current: true });
      for (const m of ['bdev_malloc_create', 'vhost_create_blk_controller', 'spdk_get_version', 'rpc_get_methods']) assert.ok(methods.includes(m), m);
      for (const legacy of ['construct_malloc_bdev', 'get_vhost_controllers', 'delete_bdev', 'remove_vhost_scsi_dev']) {
        assert.ok(!methods.includes(legacy), legacy);
        assert.ok(all.includes(legacy), legacy);
      }
      await rejectsWith(client.call('rpc_get_methods', { include_aliases: 1 }), -32602, 'Invalid parameters');
    });

    it('get_rpc_methods (the pre-v19.10 name) lists the legacy names by default, for SPDK v18.10 load_config', async () => {
      const legacy = await client.call<string[]>('get_rpc_methods');
      const current = await client.call<string[]>('get_rpc_methods', { current: true });
      for (const m of ['construct_malloc_bdev', 'construct_vhost_blk_controller', 'construct_vhost_scsi_controller', 'add_vhost_scsi_lun', 'get_subsystems', 'get_subsystem_config', 'bdev_malloc_create']) {
        assert.ok(legacy.includes(m), m);
        assert.ok(current.includes(m), m);
      }
      // STARTUP-only, as in SPDK v18.10: listed, but not as callable now.
      for (const m of ['start_subsystem_init', 'set_bdev_options']) {
        assert.ok(legacy.includes(m), m);
        assert.ok(!current.includes(m), m);
      }
      assert.deepEqual(await client.call('get_rpc_methods', { include_aliases: false }), await client.call('rpc_get_methods'));
      assert.equal(await client.call('start_subsystem_init'), true);
      assert.deepEqual(await client.call('get_subsystems'), await client.call('framework_get_subsystems'));
      await rejectsWith(client.call('get_subsystems', { x: 1 }), -32602, "'get_subsystems' requires no arguments");
      await rejectsWith(client.call('get_subsystem_config', { name: 'bdev', with_batches: true }), -32602, 'Invalid arguments');
      await rejectsWith(client.call('get_subsystem_config', { name: 'nvmf' }), -32602, "Subsystem 'nvmf' not found");
    });

    it('spdk_get_version has SPDK v24.01 shape and refuses params', async () => {
      assert.deepEqual(await client.call('spdk_get_version'), {
        version: 'SPDK v24.01 compatible (vhostd 0.1.0-test)',
        fields: { major: 24, minor: 1, patch: 0, suffix: '' },
      });
      assert.ok(await client.call('get_spdk_version'));
      await rejectsWith(client.call('spdk_get_version', { x: 1 }), -32602, 'spdk_get_version method requires no parameters');
    });
  });

  // As strict as SPDK's spdk_json_decode_object, over the real socket framing.
  describe('null values and repeated keys', () => {
    const error = (reply: unknown) => (reply as { error?: unknown }).error;

    it('refuses a null value, for optional keys too, with the method usual -32602 (no auto-named bdev)', async () => {
      const cases: Array<[string, object, string]> = [
        ['bdev_malloc_create', { num_blocks: 8, block_size: 512, name: null }, 'spdk_json_decode_object failed'],
        ['construct_malloc_bdev', { num_blocks: 8, block_size: 512, uuid: null }, 'spdk_json_decode_object failed'],
        ['bdev_null_create', { name: 'N', num_blocks: 8, block_size: 512, md_size: null }, 'spdk_json_decode_object failed'],
        ['bdev_get_bdevs', { name: null }, 'spdk_json_decode_object failed'],
        ['vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: null }, 'Invalid argument'],
        ['rpc_get_methods', { current: null }, 'Invalid parameters'],
      ];
      for (const [method, params, message] of cases) {
        const { replies } = await rawExchange(t.socketPath, [rpcPyRequest(method, 1, params)], 1);
        assert.deepEqual(error(replies[0]), { code: -32602, message }, `${method} ${JSON.stringify(params)}`);
      }
      assert.equal(t.bdevs.list().length, 0);
      assert.equal(t.vhost.controllers.size, 0);
      // "params": null itself still means no params, as in SPDK's parse_single_request.
      const { replies } = await rawExchange(t.socketPath, ['{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1,"params":null}'], 1);
      assert.deepEqual(replies[0], { jsonrpc: '2.0', id: 1, result: [] });
    });

    it('refuses a repeated params key with the method usual -32602, whatever the framing', async () => {
      await client.call('bdev_malloc_create', { name: 'M', num_blocks: 8, block_size: 512 });
      const dupName = '{\n  "jsonrpc": "2.0",\n  "method": "bdev_malloc_create",\n  "id": 1,\n  "params": {\n    "num_blocks": 8,\n    "block_size": 512,\n    "name": "a",\n    "name": "b"\n  }\n}';
      // One chunk, and one byte at a time.
      for (const chunks of [[dupName], [...Buffer.from(dupName)].map((b) => Buffer.of(b))]) {
        const { replies } = await rawExchange(t.socketPath, chunks, 1);
        assert.deepEqual(replies[0], { jsonrpc: '2.0', id: 1, error: { code: -32602, message: 'spdk_json_decode_object failed' } });
      }
      const cases: Array<[string, string]> = [
        // The same key written differently is the same key.
        ['{"method":"bdev_malloc_create","id":2,"params":{"num_blocks":8,"block_size":512,"name":"a","n\\u0061me":"b"}}', 'spdk_json_decode_object failed'],
        ['{"method":"vhost_create_blk_controller","id":2,"params":{"ctrlr":"v0","dev_name":"M","ctrlr":"v1"}}', 'Invalid argument'],
        ['{"method":"rpc_get_methods","id":2,"params":{"current":true,"current":false}}', 'Invalid parameters'],
        // Nested: a key repeated inside bdev_rbd_create's config map (refused before any connection).
        ['{"method":"bdev_rbd_create","id":2,"params":{"pool_name":"p","rbd_name":"r","block_size":512,"config":{"mon_host":"a","mon_host":"b"}}}', 'spdk_json_decode_object failed'],
        ['{"method":"framework_get_config","id":2,"params":{"name":"bdev","name":"scsi"}}', 'Invalid arguments'],
      ];
      for (const [raw, message] of cases) {
        const { replies } = await rawExchange(t.socketPath, [raw], 1);
        assert.deepEqual(error(replies[0]), { code: -32602, message }, raw);
      }
      assert.deepEqual(
        t.bdevs.list().map((b) => b.name),
        ['M'],
      );
      assert.equal(t.vhost.controllers.size, 0);
      // Without the repeat, the same vhost call succeeds.
      const { replies } = await rawExchange(t.socketPath, ['{"method":"vhost_create_blk_controller","id":3,"params":{"ctrlr":"v1","dev_name":"M"}}'], 1);
      assert.deepEqual(replies[0], { jsonrpc: '2.0', id: 3, result: true });
    });

    it('answers a request repeating its own key with -32600, and goes on with the next ones', async () => {
      const stream = [
        '{"jsonrpc":"2.0","method":"bdev_get_bdevs","method":"spdk_get_version","id":4}',
        '{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":5,"id":6}',
        '{"jsonrpc":"2.0","method":"bdev_get_bdevs","params":{},"params":{"name":"x"},"id":7}',
        // A batch: only its element with the repeated key fails; the same key in sibling objects is fine.
        '[{"method":"bdev_malloc_create","id":8,"params":{"name":"a","num_blocks":8,"block_size":512,"num_blocks":16}},' +
          '{"method":"bdev_malloc_create","id":9,"params":{"name":"b","num_blocks":8,"block_size":512}}]',
        rpcPyRequest('bdev_get_bdevs', 10, { name: 'b' }),
      ];
      const { replies, closedByServer } = await rawExchange(t.socketPath, [stream.join('\n')], 5);
      assert.equal(closedByServer, false);
      assert.deepEqual(replies.slice(0, 4), [
        { jsonrpc: '2.0', id: 4, error: { code: -32600, message: 'Invalid request' } },
        { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid request' } },
        { jsonrpc: '2.0', id: 7, error: { code: -32600, message: 'Invalid request' } },
        [
          { jsonrpc: '2.0', id: 8, error: { code: -32602, message: 'spdk_json_decode_object failed' } },
          { jsonrpc: '2.0', id: 9, result: 'b' },
        ],
      ]);
      assert.equal((replies[4] as { result: Array<{ name: string }> }).result[0]?.name, 'b');
      assert.deepEqual(
        t.bdevs.list().map((b) => b.name),
        ['b'],
      );
    });
  });
});

describe('RpcServer lifecycle', () => {
  const logger = pino({ level: 'silent' });

  it('refuses to start while another server answers on the path', async () => {
    const t = await startTestServer();
    try {
      const second = new RpcServer({ socketPath: t.socketPath, logger });
      await assert.rejects(second.start(), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
      assert.deepEqual(await new RpcClient(t.socketPath).call('bdev_get_bdevs').finally(() => {}), []);
    } finally {
      await t.stop();
    }
  });

  it('replaces a stale socket left by a dead process and removes it on close', async () => {
    const t = await startTestServer();
    await t.server.close();
    const path = join(t.dir, 'stale.sock');
    // A process killed with SIGKILL leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    assert.ok(existsSync(path));

    const server = new RpcServer({ socketPath: path, logger });
    server.addMethod('ping', () => 'pong');
    await server.start();
    const c = new RpcClient(path);
    assert.equal(await c.call('ping'), 'pong');
    c.close();
    await server.close();
    assert.ok(!existsSync(path));
    await t.stop();
  });

  it('refuses to replace a path that is not a socket', async () => {
    const t = await startTestServer();
    const path = join(t.dir, 'file');
    writeFileSync(path, 'keep me');
    await assert.rejects(new RpcServer({ socketPath: path, logger }).start());
    assert.ok(existsSync(path));
    await t.stop();
  });

  it('caps concurrent connections and recovers when they close', async () => {
    const t = await startTestServer({ maxConnections: 4 });
    const idle = await Promise.all(
      Array.from({ length: 4 }, () => new Promise<Socket>((resolve) => {
        const s = connect(t.socketPath, () => resolve(s));
      })),
    );
    await sleep(50);
    const overflow = new RpcClient(t.socketPath, { timeoutMs: 2000 });
    await assert.rejects(overflow.call('bdev_get_bdevs'));
    overflow.close();
    for (const s of idle) s.destroy();
    await sleep(50);
    const c = new RpcClient(t.socketPath);
    assert.deepEqual(await c.call('bdev_get_bdevs'), []);
    c.close();
    await t.stop();
  });

  it('maps VhostdError codes from handlers directly', async () => {
    const t = await startTestServer();
    t.server.addMethod('custom_fail', () => {
      throw new VhostdError(-5, 'Input/output error');
    });
    const c = new RpcClient(t.socketPath);
    await rejectsWith(c.call('custom_fail'), -5, 'Input/output error');
    c.close();
    await t.stop();
  });
});
