// Incremental splitter for a byte stream of back-to-back JSON values. SPDK's rpc.py writes
// pretty-printed requests with no delimiter between them, so value boundaries must be found by
// tracking nesting depth, strings and escapes. Scanning works on raw bytes: every structural JSON
// character is ASCII and never occurs inside a multi-byte UTF-8 sequence, so a character split
// across chunks is only decoded once its whole value has arrived. A server can also have each
// value's repeated object keys tagged (detectDuplicateKeys), which JSON.parse alone would hide.
import { markDuplicateKeys } from '../util/duplicate-keys.js';

/**
 * Default cap on one JSON value, in bytes. SPDK itself refuses requests over its 32 KiB receive
 * buffer; 1 MiB leaves ample room while bounding memory at 64 connections x 1 MiB.
 */
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;

export class JsonStreamError extends Error {
  constructor(
    message: string,
    /** Why the stream could not be parsed; oversize values are reported separately so callers can log them. */
    readonly reason: 'syntax' | 'oversize',
  ) {
    super(message);
  }
}

export interface PushResult {
  /** Every complete value found so far, in stream order. */
  values: unknown[];
  /** Set once the stream is unparseable; the parser then ignores all further input. */
  error?: JsonStreamError;
}

const Byte = {
  TAB: 0x09,
  LF: 0x0a,
  CR: 0x0d,
  SPACE: 0x20,
  QUOTE: 0x22,
  COMMA: 0x2c,
  COLON: 0x3a,
  OPEN_BRACKET: 0x5b,
  BACKSLASH: 0x5c,
  CLOSE_BRACKET: 0x5d,
  OPEN_BRACE: 0x7b,
  CLOSE_BRACE: 0x7d,
} as const;

const State = {
  /** Between values, skipping whitespace. */
  IDLE: 0,
  /** Inside an object/array or a top-level string. */
  NESTED: 1,
  /** Inside a top-level number or literal, which ends at the next delimiter. */
  SCALAR: 2,
} as const;
type State = (typeof State)[keyof typeof State];

function isWhitespace(b: number): boolean {
  return b === Byte.SPACE || b === Byte.LF || b === Byte.CR || b === Byte.TAB;
}

function isDelimiter(b: number): boolean {
  return (
    isWhitespace(b) ||
    b === Byte.OPEN_BRACE ||
    b === Byte.OPEN_BRACKET ||
    b === Byte.QUOTE ||
    b === Byte.CLOSE_BRACE ||
    b === Byte.CLOSE_BRACKET ||
    b === Byte.COMMA ||
    b === Byte.COLON
  );
}

export interface JsonStreamParserOptions {
  maxValueBytes?: number;
  /**
   * Tag parsed objects that repeat a key (see duplicate-keys.ts), for a server that must refuse
   * them like SPDK; costs one more linear pass over each value's text.
   */
  detectDuplicateKeys?: boolean;
}

export class JsonStreamParser {
  readonly maxValueBytes: number;
  private readonly detectDuplicateKeys: boolean;
  private state: State = State.IDLE;
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** Byte slices of the value being assembled (kept as slices to avoid re-copying on each chunk). */
  private pieces: Uint8Array[] = [];
  private pendingBytes = 0;
  private failure: JsonStreamError | undefined;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(opts: JsonStreamParserOptions = {}) {
    this.maxValueBytes = opts.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
    this.detectDuplicateKeys = opts.detectDuplicateKeys ?? false;
  }

  /** Bytes of an incomplete value currently held. */
  get buffered(): number {
    return this.pendingBytes;
  }

  get failed(): JsonStreamError | undefined {
    return this.failure;
  }

  push(chunk: Uint8Array): PushResult {
    const values: unknown[] = [];
    if (this.failure) return { values, error: this.failure };
    let start = -1; // where the current value's bytes begin in this chunk, -1 when idle
    if (this.state !== State.IDLE) start = 0;

    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i] as number;
      switch (this.state) {
        case State.IDLE:
          if (isWhitespace(b)) continue;
          start = i;
          if (b === Byte.OPEN_BRACE || b === Byte.OPEN_BRACKET) {
            this.state = State.NESTED;
            this.depth = 1;
          } else if (b === Byte.QUOTE) {
            this.state = State.NESTED;
            this.depth = 0;
            this.inString = true;
          } else if (b === Byte.CLOSE_BRACE || b === Byte.CLOSE_BRACKET || b === Byte.COMMA || b === Byte.COLON) {
            return this.fail(values, `unexpected '${String.fromCharCode(b)}' between values`);
          } else {
            this.state = State.SCALAR;
          }
          break;

        case State.NESTED:
          if (this.inString) {
            if (this.escaped) this.escaped = false;
            else if (b === Byte.BACKSLASH) this.escaped = true;
            else if (b === Byte.QUOTE) {
              this.inString = false;
              if (this.depth === 0) {
                if (!this.complete(chunk, start, i + 1, values)) return this.fail(values);
                start = -1;
              }
            }
          } else if (b === Byte.QUOTE) {
            this.inString = true;
          } else if (b === Byte.OPEN_BRACE || b === Byte.OPEN_BRACKET) {
            this.depth++;
          } else if (b === Byte.CLOSE_BRACE || b === Byte.CLOSE_BRACKET) {
            this.depth--;
            if (this.depth === 0) {
              if (!this.complete(chunk, start, i + 1, values)) return this.fail(values);
              start = -1;
            }
          }
          break;

        case State.SCALAR:
          if (isDelimiter(b)) {
            if (!this.complete(chunk, start, i, values)) return this.fail(values);
            start = -1;
            i--; // the delimiter may begin the next value; rescan it while idle
          }
          break;
      }
      if (start >= 0 && this.pendingBytes + (i + 1 - start) > this.maxValueBytes) {
        return this.fail(values, `JSON value exceeds ${this.maxValueBytes} bytes`, 'oversize');
      }
    }

    if (start >= 0) this.hold(chunk.subarray(start));
    return { values };
  }

  /** Signals end of stream: flushes a trailing top-level scalar and reports a truncated value. */
  end(): PushResult {
    const values: unknown[] = [];
    if (this.failure) return { values, error: this.failure };
    if (this.state === State.SCALAR) {
      if (!this.complete(new Uint8Array(0), 0, 0, values)) return this.fail(values);
    } else if (this.state === State.NESTED) {
      return this.fail(values, 'stream ended inside a JSON value');
    }
    return { values };
  }

  private hold(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    // Copy: the socket may reuse its chunk buffer.
    this.pieces.push(Uint8Array.prototype.slice.call(bytes));
    this.pendingBytes += bytes.length;
  }

  /** Parses the held bytes plus chunk[start, end) as one value; returns false (with failure set) on bad JSON. */
  private complete(chunk: Uint8Array, start: number, end: number, values: unknown[]): boolean {
    const tail = chunk.subarray(start, end);
    const bytes = this.pieces.length === 0 ? tail : Buffer.concat([...this.pieces, tail]);
    this.pieces = [];
    this.pendingBytes = 0;
    this.state = State.IDLE;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    try {
      const text = this.decoder.decode(bytes);
      const value: unknown = JSON.parse(text);
      if (this.detectDuplicateKeys) markDuplicateKeys(text, value);
      values.push(value);
      return true;
    } catch (err) {
      this.failure = new JsonStreamError(`invalid JSON: ${(err as Error).message}`, 'syntax');
      return false;
    }
  }

  private fail(values: unknown[], message?: string, reason: 'syntax' | 'oversize' = 'syntax'): PushResult {
    if (message !== undefined) this.failure = new JsonStreamError(message, reason);
    this.pieces = [];
    this.pendingBytes = 0;
    return { values, error: this.failure };
  }
}
