// Numbers at the edges against every RPC method of a real vhostd process, over its socket: huge,
// negative, fractional, 2^53+1, digit strings, and cpumask ranges and lists that name billions of
// cores. Every call must be answered (a result or a JSON-RPC error) within bounds on the daemon's
// CPU time and on wall time, the daemon must stay alive, and its RSS must stay bounded: nothing may
// be allocated or walked in proportion to a number the caller wrote. (A cpumask of
// "[0-1000000000]" once aborted the daemon after 6 s.)
//
// Parameter names come from the methods' own decoder schemas (src/rpc/methods/*.ts), so a method or
// parameter added later is fuzzed without touching this file.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { VhostdProcess } from '../lib/vhostd.js';
import { fuzzParams } from './lib/fuzz.js';

const methodsDir = new URL('../../src/rpc/methods/', import.meta.url).pathname;
const modulesDir = new URL('../../src/bdev/modules/', import.meta.url).pathname;

interface Schemas {
  /** Every decoder key and its kind. */
  kinds: Map<string, string>;
  /** Per method name (and alias): the decoder keys of the file that defines it. */
  keysOf: Map<string, string[]>;
}

const KEY_RE = /\b([a-z_0-9]+): (?:required|optional)\('([a-z0-9]+)'\)/g;

/** The text of `const NAME = { ... }` (braces balanced), or undefined. */
function constObject(text: string, name: string): string | undefined {
  const at = text.search(new RegExp(`const ${name}\\b[^=]*= \\{`));
  if (at < 0) return undefined;
  let depth = 0;
  for (let i = text.indexOf('{', at); i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(at, i + 1);
  }
  return undefined;
}

/** Keys of a schema constant, following `...OTHER` spreads within the file. */
function schemaKeysOf(text: string, name: string, depth = 0): string[] {
  const body = constObject(text, name);
  if (!body || depth > 4) return [];
  const keys = [...body.matchAll(KEY_RE)].map((m) => m[1]);
  for (const m of body.matchAll(/\.\.\.([A-Za-z_0-9]+)/g)) keys.push(...schemaKeysOf(text, m[1], depth + 1));
  return keys;
}

/**
 * Reads the method decoders: every `key: required('kind')` / `optional('kind')`, and per method
 * (and alias) the keys of the schema constants its definition names (`...Schema`), or else the
 * keys of its whole file.
 */
function readSchemas(): Schemas {
  const kinds = new Map<string, string>();
  const keysOf = new Map<string, string[]>();
  // The RPC files, and the bdev modules that declare their own methods (src/bdev/modules/*/module.ts).
  const files = [
    ...readdirSync(methodsDir).filter((f) => f.endsWith('.ts')).map((f) => join(methodsDir, f)),
    ...readdirSync(modulesDir, { withFileTypes: true }).filter((e) => e.isDirectory() && existsSync(join(modulesDir, e.name, 'module.ts'))).map((e) => join(modulesDir, e.name, 'module.ts')),
  ];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    const fileKeys = new Set<string>();
    for (const m of text.matchAll(KEY_RE)) {
      kinds.set(m[1], m[2]);
      fileKeys.add(m[1]);
    }
    const starts = [...text.matchAll(/name: '([a-z_0-9]+)'/g)];
    starts.forEach((m, i) => {
      const chunk = text.slice(m.index, starts[i + 1]?.index ?? text.length);
      const keys = new Set<string>();
      for (const ref of chunk.matchAll(/\b([A-Za-z_0-9]*[sS]chema)\b/g)) for (const k of schemaKeysOf(text, ref[1])) keys.add(k);
      const chosen = [...(keys.size > 0 ? keys : fileKeys)].sort();
      keysOf.set(m[1], chosen);
      const aliases = /aliases: \[([^\]]*)\]/.exec(chunk);
      for (const a of aliases ? aliases[1].matchAll(/'([a-z_0-9]+)'/g) : []) keysOf.set(a[1], chosen);
    });
  }
  return { kinds, keysOf };
}

const EDGE_NUMBERS = [
  2 ** 53 + 1, 2 ** 53, Number.MAX_SAFE_INTEGER, 2 ** 64, 2 ** 63, 2 ** 32, 2 ** 32 - 1, 2 ** 31, 2 ** 31 - 1, -(2 ** 31) - 1,
  1e21, 1e308, -1e308, Number.MIN_VALUE, -1, -0, 0, 0.5, 1.5, 7, 8, 512, 4096, 1024, 1023, 1000000000, 99999999999999999999,
];
const CPUMASKS = [
  '[0-1000000000]', '[99999999999999999999]', '[0-10000000]', `0x${'f'.repeat(300)}`, `0x${'0'.repeat(5000)}1`, '[0-1023]',
  '[1023]', '[1024]', '[0,1]', '0x3', '0x1', '1', '[]', '[1-0]', '[-1]', '[0-]', '0x', '-1', '1e9', `[${Array(2000).fill('0').join(',')}]`,
];
const DIGIT_STRINGS = ['0', '1', '-1', '4096', '99999999999999999999', '9007199254740993', '1e400', '0x10', ' 1', '1.5', 'NaN', 'Infinity'];

const numberArb = fc.oneof(
  fc.constantFrom(...EDGE_NUMBERS),
  fc.integer(),
  fc.double(),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map((b) => Number(b)),
  fc.constantFrom(...DIGIT_STRINGS),
);
/** Names of the objects the setup creates, so lookups succeed and the numbers get looked at. */
const stringArb = fc.oneof(
  fc.constantFrom('N0', 'M0', 'c0', 's0', 'D0', 'EE_N1', 'vhost.x', 'x'),
  fc.constantFrom(...CPUMASKS),
  fc.constantFrom(...DIGIT_STRINGS),
);

/**
 * Work in proportion to a number is CPU time: each call may cost the daemon (all its threads) at
 * most CPU_BOUND_MS, which a loaded machine's pauses do not inflate as they do wall time (the
 * costliest call seen, a reactor's first stats, takes ~350 ms). The wall-clock bound catches a
 * call that never returns, or waits on something in proportion to a number.
 */
const CPU_BOUND_MS = 2000;
const REPLY_BOUND_MS = 20_000;
/** RSS growth allowed over the whole run (reactors' pools, V8 heap growth, a few small bdevs). */
const RSS_BOUND_BYTES = 384 * 1024 * 1024;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** utime + stime of a process (every thread), in ms (10 ms resolution). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

describe('fuzz: edge numbers against every RPC method of a running vhostd', () => {
  let d: VhostdProcess;
  let methods: string[];
  const { kinds: keys, keysOf } = readSchemas();
  before(async () => {
    d = await VhostdProcess.start(['-m', '0x1']);
    methods = (await d.rpc<string[]>('rpc_get_methods', { include_aliases: true })).sort();
  });
  after(async () => {
    await d?.stop();
  });

  /** The objects most methods look up; recreated whenever a call deleted one of them. */
  async function ensureObjects(): Promise<void> {
    const quiet = async (m: string, p: object) => d.rpc(m, p).catch(() => undefined);
    await quiet('bdev_null_create', { name: 'N0', num_blocks: 1024, block_size: 512 });
    await quiet('bdev_null_create', { name: 'N1', num_blocks: 1024, block_size: 512 });
    await quiet('bdev_malloc_create', { name: 'M0', num_blocks: 64, block_size: 512 });
    await quiet('vhost_create_blk_controller', { ctrlr: 'c0', dev_name: 'M0' });
    await quiet('vhost_create_scsi_controller', { ctrlr: 's0' });
    await quiet('bdev_error_create', { base_name: 'N1' });
  }

  it('schemas were found', () => {
    for (const k of ['num_blocks', 'block_size', 'cpumask', 'scsi_target_num', 'delay_base_us', 'iops_threshold']) assert.ok(keys.has(k), k);
    assert.ok(methods.includes('vhost_create_blk_controller'));
    assert.deepEqual(keysOf.get('vhost_create_blk_controller'), ['cpumask', 'ctrlr', 'dev_name', 'packed_ring', 'readonly', 'transport']);
    assert.ok(keysOf.get('construct_malloc_bdev')?.includes('num_blocks'));
  });

  it('every method answers within the bound, the daemon lives and its RSS stays bounded', async () => {
    await ensureObjects();
    const baseline = rssBytes(d.proc.pid!);
    const allKeys = [...keys.keys()].sort();
    // The keys of the method's own decoders, most of the time; any decoder's keys now and then.
    const callArb = fc.constantFrom(...methods).chain((method) =>
      fc.record({
        method: fc.constant(method),
        params: fc.oneof(
          { weight: 9, arbitrary: fc.subarray(keysOf.get(method) ?? allKeys) },
          { weight: 1, arbitrary: fc.subarray(allKeys, { minLength: 1, maxLength: 6 }) },
        ),
        numbers: fc.array(numberArb, { minLength: 64, maxLength: 64 }),
        strings: fc.array(stringArb, { minLength: 64, maxLength: 64 }),
        cpumask: fc.constantFrom(...CPUMASKS),
      }),
    );
    let calls = 0;
    await fc.assert(
      fc.asyncProperty(callArb, async ({ method, params, numbers, strings, cpumask }) => {
        const p: Record<string, unknown> = {};
        params.forEach((k, i) => {
          const kind = keys.get(k);
          if (k === 'cpumask' || k === 'core_mask') p[k] = cpumask;
          else if (kind === 'string' || kind === 'uuid') p[k] = strings[i];
          else if (kind === 'bool') p[k] = numbers[i] === 0;
          else p[k] = numbers[i];
        });
        // An RBD cluster connect would wait on a monitor that is not there; keep the numbers.
        if (method.includes('rbd') || method.includes('cluster')) p.config_file = '/nonexistent/ceph.conf';
        const t0 = Date.now();
        const c0 = cpuMs(d.proc.pid!);
        let timer: NodeJS.Timeout | undefined;
        const bound = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${method} ${JSON.stringify(p)}: no reply within ${REPLY_BOUND_MS} ms`)), REPLY_BOUND_MS);
        });
        try {
          await Promise.race([
            d.rpc(method, p).catch((e: { code?: number }) => {
              assert.equal(typeof e.code, 'number', `${method}: not a JSON-RPC error: ${String(e)}`);
            }),
            bound,
          ]);
        } finally {
          clearTimeout(timer);
        }
        assert.ok(d.alive, `vhostd died on ${method} ${JSON.stringify(p)}:\n${d.logs.slice(-5).join('\n')}`);
        const cpu = cpuMs(d.proc.pid!) - c0;
        assert.ok(cpu <= CPU_BOUND_MS, `${method} ${JSON.stringify(p)} cost the daemon ${cpu} ms of CPU (${Date.now() - t0} ms)`);
        const rss = rssBytes(d.proc.pid!);
        assert.ok(rss - baseline < RSS_BOUND_BYTES, `RSS grew by ${((rss - baseline) / 2 ** 20).toFixed(0)} MiB after ${method} ${JSON.stringify(p)} (${Date.now() - t0} ms)`);
        if (++calls % 50 === 0) await ensureObjects();
      }),
      fuzzParams(600),
    );
    // Still serving after it all.
    assert.ok(await d.rpc('spdk_get_version'));
  });

  it('each cpumask edge case through every cpumask-taking entry is answered at once', async () => {
    await ensureObjects();
    for (const mask of CPUMASKS) {
      // A walk of the range is slow every time (the old parser: ~5 s for [0-10000000]), a loaded
      // machine's pause once: a mask over the bound is tried twice more, and one quick try counts.
      const took: number[] = [];
      while (took.length < 3 && !took.some((ms) => ms < 1000)) {
        const t0 = Date.now();
        for (const [method, params] of [
          ['vhost_create_blk_controller', { ctrlr: 'cm', dev_name: 'N0', cpumask: mask }],
          ['vhost_create_scsi_controller', { ctrlr: 'cm', cpumask: mask }],
        ] as const) {
          try {
            await d.rpc(method, params);
            await d.rpc('vhost_delete_controller', { ctrlr: 'cm' });
          } catch (e) {
            assert.equal((e as { code: number }).code, -32602, `${method} ${mask.slice(0, 40)}: ${(e as Error).message}`);
          }
        }
        took.push(Date.now() - t0);
      }
      assert.ok(took.some((ms) => ms < 1000), `cpumask ${mask.slice(0, 40)} took ${took.join(', ')} ms`);
    }
  });
});
