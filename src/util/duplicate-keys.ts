// Duplicate object keys. JSON.parse keeps the last of repeated keys silently, while SPDK's
// spdk_json_decode_object refuses a request whose object repeats a key ("Duplicate key"), so the
// RPC server has to find repetitions in the text itself. markDuplicateKeys makes one linear pass
// over the text of a value JSON.parse has already accepted and tags the parsed objects that
// repeat a key (and every container above them); the request validation and decodeParams read
// the tags. The pass allocates a reused frame per nesting level and, per object of two or more
// keys, a set of its keys: nothing beyond the size of the input.
//
// The tags are enumerable symbol-keyed properties: invisible to Object.keys, for..in and
// JSON.stringify, but copied by object spread, so params a handler splits with `{ a, ...rest }`
// keep them.
//
// One imprecision, harmless to every reader: the scan pairs the text of a repeated key's earlier
// value with the parsed (later) value, so inside an object that repeats a key its subtree can get
// tags that belong to the replaced value. The repeating object itself and every container above
// it are always tagged, and readers only ever look from the request or its params downwards.

/** On an object that itself repeats a key: the (decoded) key, the first one found repeated. */
const OWN = Symbol('vhostd.duplicateKey');
/** On an object or array that repeats a key at or below it: that key. */
const WITHIN = Symbol('vhostd.duplicateKeyWithin');

type Tagged = { [OWN]?: string; [WITHIN]?: string };

/** The key repeated by `value` itself (not by a nested object), if any. */
export function ownDuplicateKey(value: unknown): string | undefined {
  return typeof value === 'object' && value !== null ? (value as Tagged)[OWN] : undefined;
}

/** A key repeated by `value` or by any object nested in it, if any. */
export function duplicateKeyWithin(value: unknown): string | undefined {
  return typeof value === 'object' && value !== null ? (value as Tagged)[WITHIN] : undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/** One open object or array of the text, and the parsed value it became (undefined if none). */
interface Frame {
  target: Tagged | undefined;
  isObject: boolean;
  /** Object: the next string is a key (after '{' or ','). */
  expectKey: boolean;
  /** Object: the key whose value comes next. */
  key: string;
  /** Object: its first key, kept alone until a second one needs a set. */
  first: string | undefined;
  keys: Set<string> | undefined;
  /** Array: index of the current element. */
  index: number;
  /** This object repeats a key. */
  ownDup: boolean;
  /** A key repeated in this container or below. */
  dup: string | undefined;
}

function newFrame(): Frame {
  return { target: undefined, isObject: false, expectKey: false, key: '', first: undefined, keys: undefined, index: 0, ownDup: false, dup: undefined };
}

/** The parsed counterpart of the container opening under `parent`, when it is of the right kind. */
function childOf(parent: Frame | undefined, root: unknown, isObject: boolean): Tagged | undefined {
  let v: unknown;
  if (parent === undefined) v = root;
  else if (parent.target === undefined) return undefined;
  else if (parent.isObject) {
    // A repeated key's earlier value is not in the parsed result; its subtree stays untracked
    // (the object repeating the key is tagged anyway).
    if (!Object.hasOwn(parent.target, parent.key)) return undefined;
    v = (parent.target as Record<string, unknown>)[parent.key];
  } else {
    v = (parent.target as unknown[])[parent.index];
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v) === isObject) return undefined;
  return v as Tagged;
}

/**
 * Tags the objects of `value` (JSON.parse(text)) that repeat a key in `text`, and the containers
 * holding them; returns the first repeated key found, or undefined. Keys compare decoded, as SPDK
 * compares them ("a" and "\u0061" are the same key). `text` must be the valid JSON `value` came from.
 */
export function markDuplicateKeys(text: string, value: unknown): string | undefined {
  // No comma, no object with two keys.
  if (typeof value !== 'object' || value === null || text.indexOf(',') < 0) return undefined;
  const frames: Frame[] = [];
  let depth = 0;
  let found: string | undefined;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // Find the closing quote; note whether the string has escapes.
      let j = i + 1;
      let escapes = false;
      for (; j < n; j++) {
        const d = text.charCodeAt(j);
        if (d === QUOTE) break;
        if (d === BACKSLASH) {
          escapes = true;
          j++;
        }
      }
      const top = depth > 0 ? frames[depth - 1] : undefined;
      if (top?.isObject && top.expectKey) {
        const key = escapes ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        top.expectKey = false;
        top.key = key;
        let repeated = false;
        if (top.first === undefined) top.first = key;
        else if (top.keys === undefined) {
          if (key === top.first) repeated = true;
          else top.keys = new Set([top.first, key]);
        } else if (top.keys.has(key)) repeated = true;
        else top.keys.add(key);
        if (repeated && !top.ownDup) {
          top.ownDup = true;
          top.dup ??= key;
          found ??= key;
          if (top.target !== undefined) top.target[OWN] = key;
        }
      }
      i = j;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      const isObject = c === OPEN_BRACE;
      const target = childOf(depth > 0 ? frames[depth - 1] : undefined, value, isObject);
      if (depth === frames.length) frames.push(newFrame());
      const f = frames[depth++] as Frame;
      f.target = target;
      f.isObject = isObject;
      f.expectKey = isObject;
      f.key = '';
      f.first = undefined;
      f.keys = undefined;
      f.index = 0;
      f.ownDup = false;
      f.dup = undefined;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (depth === 0) break;
      const f = frames[--depth] as Frame;
      if (f.dup !== undefined) {
        if (f.target !== undefined) f.target[WITHIN] = f.dup;
        const parent = depth > 0 ? frames[depth - 1] : undefined;
        if (parent !== undefined) parent.dup ??= f.dup;
      }
      f.target = undefined;
      f.keys = undefined;
      if (depth === 0) break;
    } else if (c === COMMA && depth > 0) {
      const top = frames[depth - 1] as Frame;
      if (top.isObject) top.expectKey = true;
      else top.index++;
    }
  }
  return found;
}
