import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JsonStreamParser } from '../../src/rpc/stream-parser.js';

const enc = (s: string) => Buffer.from(s, 'utf8');

/** Feeds `chunks` and returns every value plus the error, if any. */
function feed(chunks: Uint8Array[], opts?: { maxValueBytes?: number }) {
  const parser = new JsonStreamParser(opts);
  const values: unknown[] = [];
  for (const chunk of chunks) {
    const r = parser.push(chunk);
    values.push(...r.values);
    if (r.error) return { values, error: r.error };
  }
  const r = parser.end();
  values.push(...r.values);
  return { values, error: r.error };
}

/** Exactly what SPDK's rpc.py writes for queued requests: json.dumps(req, indent=2) joined by "\n". */
function rpcPyStream(reqs: object[], joiner = '\n'): string {
  return reqs.map((r) => JSON.stringify(r, null, 2)).join(joiner);
}

const requests = [
  { jsonrpc: '2.0', method: 'bdev_malloc_create', id: 1, params: { num_blocks: 128, block_size: 512, name: 'Mal{loc}0' } },
  { jsonrpc: '2.0', method: 'bdev_get_bdevs', id: 2 },
  [{ jsonrpc: '2.0', method: 'spdk_get_version', id: 3 }, { jsonrpc: '2.0', method: 'x', params: ['a"]', '\\'] }],
  { jsonrpc: '2.0', method: 'weird', id: 'q', params: { s: '\\"}{[]\\\\', u: 'név 名前 😀', e: {} } },
];

describe('JsonStreamParser', () => {
  it('splits rpc.py style pretty-printed values joined by newlines', () => {
    assert.deepEqual(feed([enc(rpcPyStream(requests))]).values, requests);
  });

  it('splits values concatenated with no delimiter at all', () => {
    const { values, error } = feed([enc(requests.map((r) => JSON.stringify(r)).join(''))]);
    assert.equal(error, undefined);
    assert.deepEqual(values, requests);
  });

  it('gives the same result for a split at every byte offset', () => {
    const bytes = enc(`  ${rpcPyStream(requests)}\r\n\t`);
    for (let i = 0; i <= bytes.length; i++) {
      const { values, error } = feed([bytes.subarray(0, i), bytes.subarray(i)]);
      assert.equal(error, undefined, `split at ${i}`);
      assert.deepEqual(values, requests, `split at ${i}`);
    }
  });

  it('handles one byte per chunk, including multi-byte UTF-8 split across chunks', () => {
    const bytes = enc(rpcPyStream(requests, ''));
    const chunks = [...bytes].map((b) => Uint8Array.of(b));
    assert.deepEqual(feed(chunks).values, requests);
  });

  it('splits a 4-byte UTF-8 character at each of its bytes', () => {
    const value = { s: '😀' };
    const bytes = enc(JSON.stringify(value));
    const emoji = bytes.indexOf(0xf0);
    for (let i = emoji; i <= emoji + 4; i++) {
      assert.deepEqual(feed([bytes.subarray(0, i), bytes.subarray(i)]).values, [value]);
    }
  });

  it('returns a batch (array) as one value', () => {
    const batch = [{ method: 'a', id: 1 }, { method: 'b', id: 2 }];
    assert.deepEqual(feed([enc(JSON.stringify(batch, null, 2))]).values, [batch]);
  });

  it('keeps an incomplete value until the rest arrives', () => {
    const parser = new JsonStreamParser();
    assert.deepEqual(parser.push(enc('{"method": "a", "params": {"x": "}')).values, []);
    assert.ok(parser.buffered > 0);
    assert.deepEqual(parser.push(enc('"}}')).values, [{ method: 'a', params: { x: '}' } }]);
    assert.equal(parser.buffered, 0);
  });

  it('handles an escape backslash at the end of a chunk', () => {
    const { values } = feed([enc('{"a": "x\\'), enc('"y"}')]);
    assert.deepEqual(values, [{ a: 'x"y' }]);
  });

  it('parses top-level strings, numbers and literals, flushing the last one at end()', () => {
    assert.deepEqual(feed([enc('"a}" 12 true'), enc(' null{"b":1}-3.5e2')]).values, ['a}', 12, true, null, { b: 1 }, -350]);
  });

  it('reports garbage as a syntax error, after the values that preceded it', () => {
    const { values, error } = feed([enc('{"id": 1} {"id": 2} {"id": }')]);
    assert.deepEqual(values, [{ id: 1 }, { id: 2 }]);
    assert.equal(error?.reason, 'syntax');
  });

  it('rejects a stray closing bracket, bad literals and invalid UTF-8', () => {
    for (const bad of [enc('}'), enc(']{}'), enc('nope '), enc(':'), Buffer.from([0x22, 0xff, 0xfe, 0x22])]) {
      assert.equal(feed([bad]).error?.reason, 'syntax', `input ${bad.toString('hex')}`);
    }
  });

  it('reports a value truncated by end of stream', () => {
    assert.equal(feed([enc('{"a": [1, 2')]).error?.reason, 'syntax');
  });

  it('ignores input after an error', () => {
    const parser = new JsonStreamParser();
    assert.ok(parser.push(enc('}')).error);
    const again = parser.push(enc('{"ok": true}'));
    assert.deepEqual(again.values, []);
    assert.ok(again.error);
  });

  it('caps the size of one value but not of the stream', () => {
    const small = JSON.stringify({ pad: 'x'.repeat(40) });
    const many = Array.from({ length: 50 }, () => small).join('\n');
    assert.equal(feed([enc(many)], { maxValueBytes: 100 }).values.length, 50);

    const big = JSON.stringify({ pad: 'x'.repeat(200) });
    const { values, error } = feed([enc(small + big)], { maxValueBytes: 100 });
    assert.deepEqual(values, [JSON.parse(small)]);
    assert.equal(error?.reason, 'oversize');
  });

  it('detects oversize across many small chunks without buffering past the cap', () => {
    const parser = new JsonStreamParser({ maxValueBytes: 1024 });
    parser.push(enc('['));
    let error: unknown;
    for (let i = 0; i < 1000 && !error; i++) {
      error = parser.push(enc('1,')).error;
      assert.ok(parser.buffered <= 1024);
    }
    assert.ok(error);
  });

  it('handles deep nesting', () => {
    const deep = `${'['.repeat(10000)}${']'.repeat(10000)}`;
    assert.equal(feed([enc(deep)]).values.length, 1);
  });
});
