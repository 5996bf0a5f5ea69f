// Fuzzes the JSON-RPC layer: the stream parser under arbitrary splits of rpc.py-style streams and
// under garbage; every method of the real method table (a real in-process VhostdApp: bdevs,
// controllers with sockets, reactors) with arbitrary params; and the server with arbitrary
// requests over its socket. A method answers a result or an RPC error (VhostdError /
// JSONRPCErrorException), never another exception; a reply is always well-formed JSON-RPC.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { JSONRPCErrorException } from 'json-rpc-2.0';
import pino from 'pino';
import { VhostdApp } from '../../src/app.js';
import { buildMethodTable } from '../../src/rpc/methods/index.js';
import { JsonStreamParser } from '../../src/rpc/stream-parser.js';
import { VhostdError } from '../../src/util/errors.js';
import { fuzzParams } from './lib/fuzz.js';

// ---- stream parser ----------------------------------------------------------------------------

const isBareScalar = (v: unknown) => v === null || typeof v === 'number' || typeof v === 'boolean';

const streamArb = fc.array(
  fc.record({
    value: fc.jsonValue({ maxDepth: 4 }),
    pretty: fc.boolean(),
    sep: fc.constantFrom('', '', ' ', '\n', '\r\n\t '),
  }),
  { minLength: 1, maxLength: 8 },
);

function encodeStream(items: Array<{ value: unknown; pretty: boolean; sep: string }>): { bytes: Uint8Array; expected: unknown[] } {
  let text = '';
  const expected: unknown[] = [];
  items.forEach((it, i) => {
    const enc = JSON.stringify(it.value, null, it.pretty ? 2 : undefined);
    // Two bare scalars need whitespace between them ("1 2"); anything else may abut ("}{", '"a"1').
    const sep = i > 0 && it.sep === '' && isBareScalar(items[i - 1].value) && isBareScalar(it.value) ? ' ' : it.sep;
    text += (i > 0 ? sep : '') + enc;
    expected.push(JSON.parse(enc));
  });
  return { bytes: new TextEncoder().encode(text), expected };
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

describe('fuzz: JSON-RPC stream parser', () => {
  it('back-to-back values split anywhere (inside UTF-8 sequences too) parse back exactly', () => {
    fc.assert(
      fc.property(streamArb, fc.array(fc.nat(), { maxLength: 12 }), (items, cuts) => {
        const { bytes, expected } = encodeStream(items);
        const parser = new JsonStreamParser();
        const got: unknown[] = [];
        for (const chunk of splitAt(bytes, cuts)) {
          const r = parser.push(chunk);
          assert.equal(r.error, undefined);
          got.push(...r.values);
        }
        const end = parser.end();
        assert.equal(end.error, undefined);
        got.push(...end.values);
        assert.deepEqual(got, expected);
      }),
      fuzzParams(1500),
    );
  });

  it('garbage never throws; after an error the parser stays failed', () => {
    const bytesArb = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.string({ unit: fc.constantFrom('{', '}', '[', ']', '"', '\\', ',', ':', ' ', '1', 'e', '-', 'a', 'é', '\u2028') }).map((s) => new TextEncoder().encode(s)),
    );
    fc.assert(
      fc.property(bytesArb, fc.array(fc.nat(), { maxLength: 8 }), fc.integer({ min: 1, max: 300 }), (bytes, cuts, max) => {
        const parser = new JsonStreamParser({ maxValueBytes: max });
        let failed = false;
        for (const chunk of splitAt(bytes, cuts)) {
          const r = parser.push(chunk);
          if (failed) {
            assert.deepEqual(r.values, []);
            assert.ok(r.error);
          }
          if (r.error) failed = true;
          assert.ok(parser.buffered <= max, `holds ${parser.buffered} bytes, cap ${max}`);
        }
        parser.end();
      }),
      fuzzParams(3000),
    );
  });
});

// ---- methods and server ---------------------------------------------------------------------

let dir: string;
let app: VhostdApp;
const errorLogs: string[] = [];
const UNEXPECTED = /RPC method threw an unexpected error|RPC request handling failed|RPC dispatch failed/;
const rpcErrorCode = (e: unknown) => (e instanceof VhostdError || e instanceof JSONRPCErrorException ? e.code : undefined);

/** Methods that reach outside the process (a Ceph cluster): not fuzzed here. */
// bdev_qcow2_create_image and bdev_qcow2_snapshot write a new file wherever the (absolute) filename
// points: not with random names.
const EXCLUDED = /^bdev_rbd_|^bdev_qcow2_create_image$|^bdev_qcow2_snapshot$/;

describe('fuzz: RPC methods and server', () => {
  let file: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhostd-fuzz-rpc-'));
    file = join(dir, 'disk.img');
    writeFileSync(file, new Uint8Array(1 << 20));
    // Errors the RPC server logs when something other than an RPC error escaped a method.
    const logger = pino({ level: 'error' }, { write: (line: string) => void errorLogs.push(line) });
    app = await VhostdApp.start({ socketDir: dir, cpumask: '0x1', rpcSocket: join(dir, 'spdk.sock'), logger });
  });
  after(async () => {
    await app.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Deletes every controller and bdev, so each case starts from an empty daemon. */
  async function reset(): Promise<void> {
    for (const c of app.vhost.getControllers()) await app.vhost.deleteController(c.ctrlr).catch(() => undefined);
    for (const b of app.bdevs.list()) await app.bdevs.delete(b.name).catch(() => undefined);
  }

  const str = fc.oneof(
    fc.constantFrom('Malloc0', 'Null0', 'vhost.0', 'vhost.1', 'M0', '', '.', '..', 'a/b', '0x1', '0x3', '[0]', '0-1', 'vhost_user_blk', 'posix', 'bdev', 'vhost_blk', 'scsi'),
    fc.string({ maxLength: 12 }),
    fc.string({ unit: 'binary', maxLength: 8 }),
    fc.uuid().map(String),
  );
  const num = fc.oneof(
    fc.constantFrom(0, 1, 8, 512, 4096, 1000, 2048, 65536, -1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 64, Number.MAX_SAFE_INTEGER),
    fc.integer({ min: -10, max: 100_000 }),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
  );
  const anyValue = fc.oneof({ weight: 3, arbitrary: str }, { weight: 3, arbitrary: num }, { weight: 2, arbitrary: fc.boolean() }, { weight: 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) });
  const KEYS = [
    'name', 'num_blocks', 'block_size', 'uuid', 'ctrlr', 'dev_name', 'cpumask', 'readonly', 'packed_ring', 'transport', 'delay',
    'scsi_target_num', 'scsi_dev_num', 'bdev_name', 'delay_base_us', 'iops_threshold', 'current', 'include_aliases', 'timeout',
    'physical_block_size', 'md_size', 'dif_type', 'optimal_io_boundary', 'filename', 'fallocate', 'nowait', 'with_batches', 'bdev_io_pool_size',
  ];
  const paramsArb = fc.oneof(
    { weight: 8, arbitrary: fc.dictionary(fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...KEYS) }, { weight: 1, arbitrary: fc.string({ maxLength: 6 }) }), anyValue, { maxKeys: 6 }) },
    { weight: 1, arbitrary: fc.constantFrom(undefined, null, [], [1, 2], 'str', 7, true) },
  );

  // Plausible values per key, so calls get past decoding and reach the services.
  const bdevName = fc.constantFrom('Malloc0', 'Malloc1', 'Null0', 'F0', 'nope');
  const subsystemName = fc.constantFrom('bdev', 'scsi', 'vhost_blk', 'vhost_scsi', 'nvmf');
  const plausible: Record<string, fc.Arbitrary<unknown>> = {
    name: bdevName,
    num_blocks: fc.constantFrom(1, 8, 64, 1024, 4096),
    block_size: fc.constantFrom(512, 512, 4096, 520, 0),
    uuid: fc.uuid().map(String),
    ctrlr: fc.constantFrom('vhost.0', 'vhost.1', 'scsi.0'),
    dev_name: bdevName,
    bdev_name: bdevName,
    cpumask: fc.constantFrom('0x1', '1', '[0]', '0x2', '0', 'zz'),
    readonly: fc.boolean(),
    packed_ring: fc.boolean(),
    delay: fc.boolean(),
    transport: fc.constantFrom('vhost_user_blk', 'vfio_user_blk'),
    scsi_target_num: fc.integer({ min: -1, max: 9 }),
    scsi_dev_num: fc.integer({ min: 0, max: 9 }),
    delay_base_us: fc.integer({ min: 0, max: 1000 }),
    iops_threshold: fc.integer({ min: 0, max: 100000 }),
    current: fc.boolean(),
    include_aliases: fc.boolean(),
    filename: fc.string({ maxLength: 3 }),
    subsystem: subsystemName,
  };
  /** Which keys a method takes (from its SPDK schema); others get random dictionaries. */
  const TEMPLATES: Record<string, string[]> = {
    bdev_malloc_create: ['name', 'num_blocks', 'block_size', 'uuid'],
    bdev_null_create: ['name', 'num_blocks', 'block_size', 'uuid'],
    bdev_aio_create: ['name', 'filename', 'block_size', 'readonly'],
    bdev_uring_create: ['name', 'filename', 'block_size'],
    bdev_malloc_delete: ['name'],
    bdev_null_delete: ['name'],
    bdev_aio_delete: ['name'],
    bdev_uring_delete: ['name'],
    delete_bdev: ['name'],
    bdev_get_bdevs: ['name'],
    vhost_create_blk_controller: ['ctrlr', 'dev_name', 'cpumask', 'readonly', 'packed_ring', 'transport'],
    vhost_create_scsi_controller: ['ctrlr', 'cpumask', 'delay'],
    vhost_start_scsi_controller: ['ctrlr'],
    vhost_scsi_controller_add_target: ['ctrlr', 'scsi_target_num', 'bdev_name'],
    vhost_scsi_controller_remove_target: ['ctrlr', 'scsi_target_num'],
    remove_vhost_scsi_dev: ['ctrlr', 'scsi_dev_num'],
    vhost_delete_controller: ['ctrlr'],
    vhost_get_controllers: ['name'],
    vhost_controller_set_coalescing: ['ctrlr', 'delay_base_us', 'iops_threshold'],
    rpc_get_methods: ['current', 'include_aliases'],
    framework_get_config: ['subsystem'],
  };
  function templatedParams(method: string): fc.Arbitrary<unknown> {
    const keys = TEMPLATES[method];
    if (!keys) return paramsArb;
    // framework_get_config's key is `name`, but a subsystem's.
    const record = fc.record(Object.fromEntries(keys.map((k) => (k === 'subsystem' ? ['name', plausible[k]] : [k, plausible[k]]))), { requiredKeys: keys.slice(0, 2).map((k) => (k === 'subsystem' ? 'name' : k)) });
    // Mostly plausible; sometimes one key gets a random value or a stray key is added.
    return fc.oneof(
      { weight: 6, arbitrary: record },
      { weight: 2, arbitrary: fc.tuple(record, fc.constantFrom(...keys), anyValue).map(([r, k, v]) => ({ ...r, [k]: v })) },
      { weight: 1, arbitrary: fc.tuple(record, fc.string({ maxLength: 5 }), anyValue).map(([r, k, v]) => ({ ...r, [k]: v })) },
      { weight: 1, arbitrary: paramsArb },
    );
  }

  it('every method answers arbitrary params with a result or an RPC error', { timeout: 300_000 }, async () => {
    const table = buildMethodTable(app.ctx);
    const names = [...table.keys()].filter((n) => !EXCLUDED.test(n)).sort();
    // Small numbers of blocks keep malloc allocations small; a few huge ones test ENOMEM paths.
    const callArb = fc.constantFrom(...names).chain((method) => fc.record({ method: fc.constant(method), params: templatedParams(method), smallSizes: fc.boolean() }));
    await fc.assert(
      fc.asyncProperty(fc.array(callArb, { minLength: 1, maxLength: 16 }), async (calls) => {
        try {
          for (const { method, params, smallSizes } of calls) {
            const p = params && typeof params === 'object' && !Array.isArray(params) ? { ...(params as Record<string, unknown>) } : params;
            if (p && typeof p === 'object' && !Array.isArray(p)) {
              const o = p as Record<string, unknown>;
              // Never allocate gigabytes by accident: sizes are small unless clearly absurd.
              if (typeof o.num_blocks === 'number' && o.num_blocks > 4096 && o.num_blocks < 2 ** 40 && smallSizes) o.num_blocks = 4096;
              if (typeof o.num_blocks === 'number' && o.num_blocks > 4096 && o.num_blocks < 2 ** 40) delete o.num_blocks;
              // JSON, not String(): an object whose toString is not a function cannot be converted.
              if ('filename' in o) o.filename = [file, join(dir, 'missing.img'), dir][(JSON.stringify(o.filename) ?? '').length % 3];
            }
            let result: unknown;
            try {
              result = await table.get(method)?.handler(p);
            } catch (e) {
              assert.ok(rpcErrorCode(e) !== undefined, `${method}(${JSON.stringify(p)}) threw ${(e as Error)?.stack ?? String(e)}`);
              assert.ok(Number.isInteger(rpcErrorCode(e)));
              continue;
            }
            assert.doesNotThrow(() => JSON.stringify(result), `${method} returned something JSON cannot encode`);
          }
        } finally {
          await reset();
        }
      }),
      fuzzParams(300),
    );
  });

  it('the server answers arbitrary requests with well-formed JSON-RPC replies', { timeout: 300_000 }, async () => {
    const table = buildMethodTable(app.ctx);
    const names = [...table.keys()].filter((n) => !EXCLUDED.test(n) && !/create|delete|add_target/.test(n));
    const requestArb = fc.oneof(
      { weight: 6, arbitrary: fc.record({ jsonrpc: fc.constantFrom('2.0', '2.0', '1.0', 2), method: fc.oneof(fc.constantFrom(...names), fc.string({ maxLength: 10 })), params: paramsArb, id: fc.oneof(fc.integer(), fc.string({ maxLength: 4 }), fc.constant(null), fc.constant(undefined), fc.constant({})) }, { requiredKeys: ['method'] }) },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
      { weight: 1, arbitrary: fc.array(fc.record({ jsonrpc: fc.constant('2.0'), method: fc.constantFrom(...names), id: fc.nat() }), { maxLength: 3 }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(requestArb, { minLength: 1, maxLength: 6 }), fc.boolean(), async (requests, pretty) => {
        const text = requests.map((r) => JSON.stringify(r, null, pretty ? 2 : undefined) ?? 'null').join(pretty ? '' : '\n');
        const replies = await exchange(join(dir, 'spdk.sock'), text);
        for (const reply of replies) {
          for (const r of Array.isArray(reply) ? reply : [reply]) {
            assert.equal(r.jsonrpc, '2.0');
            assert.ok('id' in r);
            assert.ok(('result' in r) !== ('error' in r), JSON.stringify(r));
            if ('error' in r) assert.ok(Number.isInteger(r.error.code) && typeof r.error.message === 'string', JSON.stringify(r));
          }
        }
        // -32603 is a legitimate SPDK code for some methods; an exception that was not an RPC
        // error is what must never happen, and the server logs exactly that.
        assert.deepEqual(errorLogs.filter((l) => UNEXPECTED.test(l)), []);
      }),
      fuzzParams(200),
    );
  });
});

/** Sends `text`, half-closes, collects the replies until the server closes. */
function exchange(path: string, text: string): Promise<Array<Record<string, any>>> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const parser = new JsonStreamParser();
    const replies: Array<Record<string, any>> = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no end of replies for ${text.slice(0, 200)}`));
    }, 10_000);
    sock.on('connect', () => sock.end(text));
    sock.on('data', (d: Buffer) => replies.push(...(parser.push(d).values as Array<Record<string, any>>)));
    sock.on('error', reject);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(replies);
    });
  });
}
