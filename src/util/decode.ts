// Declarative params decoding modelled on SPDK's spdk_json_decode_object: every key must be known
// (unless relaxed), required keys must be present, no key may repeat, and each value must have the
// declared JSON type; null is not a value of any of these types, so a null value (even for an
// optional key) fails like SPDK's spdk_json_decode_string/_bool/_uint32... do, instead of counting
// as "not given". SPDK answers any failure with one fixed message per method; the specific reason
// is kept in `detail` so it is logged without changing the reply clients see.
import { type VhostdError, invalidParams } from './errors.js';
import { duplicateKeyWithin } from './duplicate-keys.js';

export type FieldKind = 'string' | 'bool' | 'int32' | 'uint32' | 'uint64' | 'uuid';

export interface FieldSpec<K extends FieldKind = FieldKind, R extends boolean = boolean> {
  kind: K;
  required: R;
}

export type Schema = Record<string, FieldSpec>;

type KindType<K extends FieldKind> = K extends 'bool' ? boolean : K extends 'string' | 'uuid' ? string : number;

/** The decoded object: required keys are always present, optional ones may be undefined. */
export type Decoded<S extends Schema> = {
  [P in keyof S as S[P]['required'] extends true ? P : never]: KindType<S[P]['kind']>;
} & {
  [P in keyof S as S[P]['required'] extends true ? never : P]?: KindType<S[P]['kind']>;
};

export const required = <K extends FieldKind>(kind: K): FieldSpec<K, true> => ({ kind, required: true });
export const optional = <K extends FieldKind>(kind: K): FieldSpec<K, false> => ({ kind, required: false });

export interface DecodeOptions {
  /** The error message SPDK sends for this method when decoding fails. */
  message: string;
  /** Accept (and drop) keys not in the schema, like spdk_json_decode_object_relaxed. */
  relaxed?: boolean;
  /** Treat missing/null params as `{}` (for methods SPDK calls with `params && decode(...)`). */
  paramsOptional?: boolean;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const INT_RANGES = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  // uint64 values beyond 2^53 cannot be represented exactly by a JS number, so they are refused.
  uint64: [0, Number.MAX_SAFE_INTEGER],
} as const;

function fail(opts: DecodeOptions, detail: string): VhostdError {
  const err = invalidParams(opts.message);
  err.detail = detail;
  return err;
}

function decodeField(key: string, kind: FieldKind, value: unknown, opts: DecodeOptions): unknown {
  switch (kind) {
    case 'string':
      if (typeof value !== 'string') throw fail(opts, `${key}: expected a string`);
      return value;
    case 'uuid':
      if (typeof value !== 'string' || !UUID_RE.test(value)) throw fail(opts, `${key}: expected a UUID string`);
      return value.toLowerCase();
    case 'bool':
      if (typeof value !== 'boolean') throw fail(opts, `${key}: expected true or false`);
      return value;
    case 'int32':
    case 'uint32':
    case 'uint64': {
      const [min, max] = INT_RANGES[kind];
      if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
        throw fail(opts, `${key}: expected an integer in [${min}, ${max}]`);
      }
      return value;
    }
  }
}

/** Decodes `params` against `schema`, throwing -32602 with `opts.message` on any mismatch. */
export function decodeParams<S extends Schema>(params: unknown, schema: S, opts: DecodeOptions): Decoded<S> {
  if (params === undefined || params === null) {
    if (opts.paramsOptional) params = {};
    else throw fail(opts, 'params: missing');
  }
  if (typeof params !== 'object' || Array.isArray(params)) throw fail(opts, 'params: expected an object');

  // Tagged by the RPC server's stream parser (duplicate-keys.ts). SPDK refuses a repeated key of
  // the object it decodes and, through the nested decoders, of the objects inside; vhostd refuses
  // one anywhere in params.
  const repeated = duplicateKeyWithin(params);
  if (repeated !== undefined) throw fail(opts, `${repeated}: duplicate key`);

  const input = params as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(input)) {
    const spec = Object.hasOwn(schema, key) ? schema[key] : undefined;
    if (!spec) {
      if (opts.relaxed) continue;
      throw fail(opts, `${key}: unknown parameter`);
    }
    // Not "not given": every SPDK type decoder refuses a JSON null (rpc.py leaves unset options out).
    if (input[key] === null) throw fail(opts, `${key}: null is not a value of type ${spec.kind}`);
    out[key] = decodeField(key, spec.kind, input[key], opts);
  }
  for (const [key, spec] of Object.entries(schema)) {
    if (spec.required && !Object.hasOwn(out, key)) throw fail(opts, `${key}: required parameter missing`);
  }
  return out as Decoded<S>;
}
