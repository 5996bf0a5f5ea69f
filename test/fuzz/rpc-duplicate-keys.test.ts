// Fuzzes the duplicate-key scan (src/rpc/duplicate-keys.ts) against a reference: JSON texts built
// from trees whose objects may repeat keys, written with random whitespace and random \u escapes
// in keys and strings (the scan compares keys decoded), checked against what the tree says.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { duplicateKeyWithin, markDuplicateKeys, ownDuplicateKey } from '../../src/util/duplicate-keys.js';
import { JsonStreamParser } from '../../src/rpc/stream-parser.js';
import { fuzzParams } from './lib/fuzz.js';

type Tree = number | string | { arr: Tree[] } | { obj: Array<[string, Tree]> };

/** Few distinct keys so repeats are frequent; quotes, backslashes and braces to confuse a scanner. */
const keyArb = fc.constantFrom('a', 'b', 'name', '"', '\\', '{', '}', ',', ':', 'é', '');
const stringArb = fc.oneof(keyArb, fc.string({ maxLength: 6 }));
const treeArb = fc.letrec<{ tree: Tree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.integer(),
    stringArb,
    fc.record({ arr: fc.array(tie('tree'), { maxLength: 4 }) }),
    fc.record({ obj: fc.array(fc.tuple(keyArb, tie('tree')), { maxLength: 5 }) }),
  ),
})).tree;

/** A JSON string literal with each character randomly written as a \u escape. */
function writeString(s: string, escapes: boolean[], at: { i: number }): string {
  let out = '"';
  for (const ch of s) {
    const esc = escapes[at.i++ % escapes.length] ?? false;
    if (esc) out += `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;
    else out += JSON.stringify(ch).slice(1, -1);
  }
  return `${out}"`;
}

function write(t: Tree, ws: string[], escapes: boolean[], at: { i: number }): string {
  const w = () => ws[at.i++ % ws.length] ?? '';
  if (typeof t === 'number') return String(t);
  if (typeof t === 'string') return writeString(t, escapes, at);
  if ('arr' in t) return `[${w()}${t.arr.map((x) => write(x, ws, escapes, at)).join(`,${w()}`)}${w()}]`;
  return `{${w()}${t.obj.map(([k, v]) => `${writeString(k, escapes, at)}${w()}:${w()}${write(v, ws, escapes, at)}`).join(`,${w()}`)}${w()}}`;
}

const ownRepeat = (t: Tree) => typeof t === 'object' && 'obj' in t && new Set(t.obj.map(([k]) => k)).size < t.obj.length;
function anyRepeat(t: Tree): boolean {
  if (typeof t !== 'object') return false;
  if ('arr' in t) return t.arr.some(anyRepeat);
  return ownRepeat(t) || t.obj.some(([, v]) => anyRepeat(v));
}

/** Every object and array of a parsed value. */
function* containers(v: unknown): Generator<object> {
  if (typeof v !== 'object' || v === null) return;
  yield v;
  for (const x of Object.values(v)) yield* containers(x);
}

const caseArb = fc.record({
  tree: treeArb,
  ws: fc.array(fc.constantFrom('', '', ' ', '\n  ', '\t'), { minLength: 1, maxLength: 8 }),
  escapes: fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
});

describe('fuzz: duplicate JSON keys', () => {
  it('the scan finds a repeated key exactly when the text has one, and tags exactly the right objects when it has none', () => {
    fc.assert(
      fc.property(caseArb, ({ tree, ws, escapes }) => {
        const text = write(tree, ws, escapes, { i: 0 });
        const value: unknown = JSON.parse(text);
        const found = markDuplicateKeys(text, value);
        assert.equal(found !== undefined, anyRepeat(tree), text);
        if (typeof value === 'object' && value !== null) {
          assert.equal(duplicateKeyWithin(value) !== undefined, anyRepeat(tree), text);
          assert.equal(ownDuplicateKey(value) !== undefined, ownRepeat(tree), text);
        }
        if (found === undefined) {
          for (const c of containers(value)) assert.equal(duplicateKeyWithin(c), undefined, text);
        }
      }),
      fuzzParams(2000),
    );
  });

  it('through the stream parser, split anywhere, the tags are the same', () => {
    fc.assert(
      fc.property(caseArb, fc.array(fc.nat(), { maxLength: 4 }), ({ tree, ws, escapes }, cuts) => {
        if (typeof tree !== 'object') return;
        const bytes = Buffer.from(write(tree, ws, escapes, { i: 0 }));
        const parser = new JsonStreamParser({ detectDuplicateKeys: true });
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1))), bytes.length].sort((a, b) => a - b);
        const values: unknown[] = [];
        let prev = 0;
        for (const p of points) {
          const r = parser.push(bytes.subarray(prev, p));
          assert.equal(r.error, undefined);
          values.push(...r.values);
          prev = p;
        }
        assert.equal(values.length, 1);
        assert.equal(duplicateKeyWithin(values[0]) !== undefined, anyRepeat(tree));
      }),
      fuzzParams(500),
    );
  });
});
