// Fuzzes the vhost-user payload decoders (src/vhost-user/protocol.ts) with arbitrary payloads:
// each either returns values that respect the wire format's limits or throws ProtocolError,
// never anything else (a RangeError from a DataView read would be a missing size check).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  MAX_CONFIG_SIZE,
  MEMORY_REGION_SIZE,
  ProtocolError,
  Req,
  decodeConfig,
  decodeMemTable,
  decodeSingleRegion,
  decodeVringAddr,
  decodeVringState,
  expectedFds,
  getU64,
} from '../../src/vhost-user/protocol.js';
import { fuzzParams } from './lib/fuzz.js';

/** Payloads: random, or of a decoder's exact size, with extreme u32/u64 values likely. */
const word = fc.oneof(fc.constantFrom(0, 1, 2, 8, 32, 33, 256, 0x100, 0x1ff, 0x1fffff, 0x200000, 0x7fffffff, 0xffffffff), fc.integer({ min: 0, max: 0xffffffff }));
const payloadArb = fc.oneof(
  fc.uint8Array({ maxLength: 320 }),
  fc.tuple(fc.constantFrom(8, 12, 40, 8 + 32, 8 + 64, 8 + 32 * 8, 12 + 256), fc.array(word, { minLength: 80, maxLength: 80 })).map(([len, words]) => {
    const b = new Uint8Array(len);
    const v = new DataView(b.buffer);
    for (let off = 0, i = 0; off + 4 <= len; off += 4, i++) v.setUint32(off, words[i], true);
    return b;
  }),
);

function view(b: Uint8Array): DataView {
  // Decoders get views into a larger buffer (the connection's frame), so test an offset view too.
  const big = new Uint8Array(b.length + 16);
  big.set(b, 7);
  return new DataView(big.buffer, 7, b.length);
}

function outcome<T>(fn: () => T): { ok: true; value: T } | { ok: false } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    assert.ok(e instanceof ProtocolError, `threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    return { ok: false };
  }
}

const safe = (n: number) => Number.isSafeInteger(n) && n >= 0;

describe('fuzz: vhost-user payload decoders', () => {
  it('decodeMemTable', () => {
    fc.assert(
      fc.property(payloadArb, fc.integer({ min: 1, max: 32 }), (b, max) => {
        const r = outcome(() => decodeMemTable(view(b), max));
        if (!r.ok) return;
        const n = new DataView(b.buffer).getUint32(0, true);
        assert.equal(r.value.length, n);
        assert.ok(n >= 1 && n <= max);
        assert.ok(b.length >= 8 + n * MEMORY_REGION_SIZE);
        for (const reg of r.value) for (const x of Object.values(reg)) assert.ok(safe(x));
      }),
      fuzzParams(2000),
    );
  });

  it('decodeSingleRegion, decodeVringState, decodeVringAddr, getU64', () => {
    fc.assert(
      fc.property(payloadArb, (b) => {
        const region = outcome(() => decodeSingleRegion('ADD_MEM_REG', view(b)));
        if (region.ok) {
          assert.equal(b.length, 8 + MEMORY_REGION_SIZE);
          for (const x of Object.values(region.value)) assert.ok(safe(x));
        }
        const state = outcome(() => decodeVringState('SET_VRING_NUM', view(b)));
        if (state.ok) assert.equal(b.length, 8);
        const addr = outcome(() => decodeVringAddr(view(b)));
        if (addr.ok) {
          assert.equal(b.length, 40);
          for (const x of [addr.value.descUserAddr, addr.value.usedUserAddr, addr.value.availUserAddr, addr.value.logGuestAddr]) assert.ok(safe(x));
        }
        if (b.length >= 8) {
          const u = outcome(() => getU64(view(b), 0));
          if (u.ok) assert.equal(BigInt(u.value), new DataView(b.buffer).getBigUint64(0, true));
        }
      }),
      fuzzParams(2000),
    );
  });

  it('decodeConfig', () => {
    fc.assert(
      fc.property(payloadArb, (b) => {
        const r = outcome(() => decodeConfig('GET_CONFIG', view(b)));
        if (!r.ok) return;
        const { offset, size, data } = r.value;
        assert.ok(offset + size <= MAX_CONFIG_SIZE);
        assert.equal(data.length, size);
        assert.equal(b.length, 12 + size);
        assert.deepEqual(data, b.subarray(12, 12 + size));
      }),
      fuzzParams(2000),
    );
  });

  it('expectedFds never throws and gives a sane range', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 45 }), fc.integer({ min: 0, max: 0xffffffff })), payloadArb, (req, b) => {
        const { min, max } = expectedFds(req, view(b));
        assert.ok(Number.isInteger(min) && Number.isInteger(max) && min >= 0 && min <= max);
        if (req !== Req.SET_MEM_TABLE) assert.ok(max <= 1);
      }),
      fuzzParams(2000),
    );
  });
});
