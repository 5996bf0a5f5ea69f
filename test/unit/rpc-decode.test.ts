// Params decoding as strict as SPDK's spdk_json_decode_object: a null value is not "not given",
// and a repeated key (found in the request text by duplicate-keys.ts) fails the decode.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeParams, optional, required } from '../../src/util/decode.js';
import { duplicateKeyWithin, markDuplicateKeys, ownDuplicateKey } from '../../src/util/duplicate-keys.js';
import { JsonStreamParser } from '../../src/rpc/stream-parser.js';
import { VhostdError } from '../../src/util/errors.js';

const schema = { name: optional('string'), num_blocks: required('uint64'), readonly: optional('bool'), uuid: optional('uuid') };
const opts = { message: 'spdk_json_decode_object failed' };

/** Asserts `fn` throws the method's -32602 with `opts.message`, and a detail matching `detail`. */
function failsDecode(fn: () => unknown, detail: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VhostdError, String(e));
    assert.equal(e.code, -32602);
    assert.equal(e.message, opts.message);
    assert.match(e.detail ?? '', detail);
    return true;
  });
}

/** JSON.parse plus the duplicate-key tags the RPC server's stream parser adds. */
function parseTagged(text: string): unknown {
  const value: unknown = JSON.parse(text);
  markDuplicateKeys(text, value);
  return value;
}

describe('decodeParams: null values', () => {
  it('refuses null for an optional key of every kind, as SPDK type decoders do', () => {
    for (const key of ['name', 'readonly', 'uuid']) {
      failsDecode(() => decodeParams({ num_blocks: 8, [key]: null }, schema, opts), new RegExp(`^${key}: null`));
    }
  });

  it('refuses null for a required key', () => {
    failsDecode(() => decodeParams({ num_blocks: null }, schema, opts), /^num_blocks: null/);
  });

  it('still accepts an optional key left out, and null or absent params where params are optional', () => {
    assert.deepEqual(decodeParams({ num_blocks: 8 }, schema, opts), { num_blocks: 8 });
    const optionalSchema = { name: optional('string') };
    assert.deepEqual(decodeParams(null, optionalSchema, { ...opts, paramsOptional: true }), {});
    assert.deepEqual(decodeParams(undefined, optionalSchema, { ...opts, paramsOptional: true }), {});
    failsDecode(() => decodeParams({ name: null }, optionalSchema, { ...opts, paramsOptional: true }), /^name: null/);
  });
});

describe('duplicate keys', () => {
  it('tags an object repeating a key and refuses it in decodeParams', () => {
    const p = parseTagged('{"name": "a", "num_blocks": 8, "name": "b"}');
    assert.equal(ownDuplicateKey(p), 'name');
    assert.equal(duplicateKeyWithin(p), 'name');
    failsDecode(() => decodeParams(p, schema, opts), /^name: duplicate key$/);
    // The same keys once each are fine.
    assert.deepEqual(decodeParams(parseTagged('{"name": "a", "num_blocks": 8}'), schema, opts), { name: 'a', num_blocks: 8 });
  });

  it('compares keys decoded, as SPDK does ("a" and "\\u0061" are one key)', () => {
    const p = parseTagged('{"name": "a", "num_blocks": 8, "n\\u0061me": "b"}');
    assert.equal(ownDuplicateKey(p), 'name');
    assert.equal(ownDuplicateKey(parseTagged('{"a\\"": 1, "a\\\\": 2, "a": 3}')), undefined);
    assert.equal(ownDuplicateKey(parseTagged('{"a\\"": 1, "a\\\\": 2, "a\\u0022": 3}')), 'a"');
  });

  it('tags nested objects and every container above them, not siblings', () => {
    const v = parseTagged('[{"jsonrpc":"2.0","method":"m","id":1,"params":{"config":{"k":"1","x":[1,{"q":1,"q":2}]}}},{"method":"n","params":{"k":1,"j":2}}]') as Array<
      Record<string, any>
    >;
    const [first, second] = v;
    assert.equal(ownDuplicateKey(first), undefined);
    assert.equal(duplicateKeyWithin(first), 'q');
    assert.equal(duplicateKeyWithin(first.params), 'q');
    assert.equal(duplicateKeyWithin(first.params.config), 'q');
    assert.equal(ownDuplicateKey(first.params.config.x[1]), 'q');
    assert.equal(duplicateKeyWithin(v), 'q');
    assert.equal(duplicateKeyWithin(second), undefined);
    assert.equal(duplicateKeyWithin(second.params), undefined);
    // Not confused by keys of sibling objects, strings that look like keys, or objects in arrays.
    const clean = parseTagged('{"a":{"b":1,"c":"\\"b\\":"},"b":[{"a":1},{"a":2}],"c":{"a":{"a":{"a":1}}}}');
    assert.equal(duplicateKeyWithin(clean), undefined);
  });

  it('tags the request when a repeated key held an object that the later value replaced', () => {
    const v = parseTagged('{"params":{"a":{"b":{"c":1,"c":2}}},"params":{"a":{"b":5}},"method":"m"}') as Record<string, any>;
    assert.equal(ownDuplicateKey(v), 'params');
    assert.equal(duplicateKeyWithin(v), 'c');
    assert.equal(JSON.stringify(v.params), '{"a":{"b":5}}');
  });

  it('keeps the tag through object spread, and out of JSON and Object.keys', () => {
    const p = parseTagged('{"config":{"a":"1","a":"2"},"name":"x"}') as Record<string, unknown>;
    const { config, ...rest } = p;
    assert.ok(config);
    assert.equal(duplicateKeyWithin(rest), 'a');
    assert.deepEqual(Object.keys(p), ['config', 'name']);
    assert.equal(JSON.stringify(p), '{"config":{"a":"2"},"name":"x"}');
  });

  it('leaves scalars, keys named like prototype properties and empty keys alone unless repeated', () => {
    assert.equal(markDuplicateKeys('"a"', 'a'), undefined);
    assert.equal(markDuplicateKeys('1', 1), undefined);
    const v = parseTagged('{"__proto__":{"x":1,"x":2},"constructor":1,"":2}') as Record<string, unknown>;
    assert.equal(ownDuplicateKey(v), undefined);
    assert.equal(duplicateKeyWithin(v), 'x');
    assert.equal(ownDuplicateKey(Object.getOwnPropertyDescriptor(v, '__proto__')?.value), 'x');
    assert.equal(ownDuplicateKey(parseTagged('{"":1,"":2}')), '');
  });

  it('is linear: large objects, many repeats, deep nesting', () => {
    const time = (text: string) => {
      const value: unknown = JSON.parse(text);
      const t0 = performance.now();
      const found = markDuplicateKeys(text, value);
      return { found, ms: performance.now() - t0, value };
    };
    // ~1.5 MB: 100k distinct keys, then the same 100k keys repeated.
    const keys = Array.from({ length: 100_000 }, (_, i) => `"key${i}":${i}`);
    const distinct = time(`{${keys.join(',')}}`);
    assert.equal(distinct.found, undefined);
    const repeated = time(`{${keys.join(',')},${keys.join(',')}}`);
    assert.equal(repeated.found, 'key0');
    const same = time(`{${Array.from({ length: 200_000 }, () => '"k":1').join(',')}}`);
    assert.equal(same.found, 'k');
    // 100k levels of objects, each repeating its key.
    const deep = time(`${'{"a":1,"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`);
    assert.equal(deep.found, 'a');
    assert.equal(ownDuplicateKey(deep.value), 'a');
    // 100k nested arrays with a repeated key at the bottom.
    const arrays = time(`${'[0,'.repeat(100_000)}{"b":1,"b":2}${']'.repeat(100_000)}`);
    assert.equal(arrays.found, 'b');
    assert.equal(duplicateKeyWithin(arrays.value), 'b');
    for (const r of [distinct, repeated, same, deep, arrays]) assert.ok(r.ms < 2000, `${r.ms} ms`);
  });

  it('the stream parser tags only when asked (the server does, the client does not)', () => {
    const text = Buffer.from('{"method":"m","method":"n"}');
    const [tagged] = new JsonStreamParser({ detectDuplicateKeys: true }).push(text).values;
    const [plain] = new JsonStreamParser().push(text).values;
    assert.equal(ownDuplicateKey(tagged), 'method');
    assert.equal(ownDuplicateKey(plain), undefined);
  });
});
