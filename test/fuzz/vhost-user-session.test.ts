// Fuzzes the vhost-user back-end state machine with arbitrary message sequences (mostly
// well-formed per request, with real eventfds and memfds, sometimes random), against a fake data
// plane that injects reactor failures. Properties: handle() either completes or throws the error
// that closes the connection (never a TypeError/RangeError-style bug); at most one reply per
// message and exactly one for requests that need one; every fd handed over is closed exactly once
// and never while a running queue uses it; every guest memory mapping is released exactly once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Req } from '../../src/vhost-user/protocol.js';
import { fuzzParams } from './lib/fuzz.js';
import { type MsgSpec, messageArb, runSession } from './lib/session-harness.js';

const failuresArb = fc.array(fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }), { maxLength: 8 });

describe('fuzz: vhost-user session', () => {
  it('arbitrary message sequences keep the session sound', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(messageArb, { minLength: 1, maxLength: 40 }), failuresArb, fc.boolean(), async (specs, failures, packed) => {
        const { problems } = await runSession(specs, failures, packed);
        assert.deepEqual(problems, []);
      }),
      fuzzParams(300),
    );
  });

  it('a QEMU-like prefix followed by arbitrary messages keeps the session sound', async () => {
    // Gets the session into states random sequences rarely reach: memory mapped, vring 0 running.
    const region = new Uint8Array(40);
    const rv = new DataView(region.buffer);
    rv.setUint32(0, 1, true);
    rv.setBigUint64(8, 0n, true);
    rv.setBigUint64(16, 65536n, true);
    rv.setBigUint64(24, 0x7f0000000000n, true);
    const vs = (i: number, n: number) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setUint32(0, i, true);
      new DataView(b.buffer).setUint32(4, n, true);
      return b;
    };
    const addr = new Uint8Array(40);
    const av = new DataView(addr.buffer);
    av.setBigUint64(8, 0x7f0000000000n, true);
    av.setBigUint64(16, 0x7f0000002000n, true);
    av.setBigUint64(24, 0x7f0000001000n, true);
    const u64 = (v: bigint) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, v, true);
      return b;
    };
    const prefix: MsgSpec[] = [
      { request: Req.GET_FEATURES, flags: 1, payload: new Uint8Array(0), fds: [] },
      { request: Req.SET_PROTOCOL_FEATURES, flags: 1, payload: u64(1n << 3n), fds: [] },
      { request: Req.SET_OWNER, flags: 1, payload: new Uint8Array(0), fds: [] },
      { request: Req.SET_FEATURES, flags: 1, payload: u64((1n << 32n) | (1n << 30n)), fds: [] },
      { request: Req.SET_MEM_TABLE, flags: 9, payload: region, fds: ['memfd'] },
      { request: Req.SET_VRING_NUM, flags: 9, payload: vs(0, 64), fds: [] },
      { request: Req.SET_VRING_BASE, flags: 9, payload: vs(0, 0), fds: [] },
      { request: Req.SET_VRING_ADDR, flags: 9, payload: addr, fds: [] },
      { request: Req.SET_VRING_CALL, flags: 9, payload: u64(0n), fds: ['eventfd'] },
      { request: Req.SET_VRING_KICK, flags: 9, payload: u64(0n), fds: ['eventfd'] },
      { request: Req.SET_VRING_ENABLE, flags: 9, payload: vs(0, 1), fds: [] },
    ];
    await fc.assert(
      fc.asyncProperty(fc.array(messageArb, { minLength: 1, maxLength: 25 }), failuresArb, async (specs, failures) => {
        const { problems } = await runSession([...prefix, ...specs], failures);
        assert.deepEqual(problems, []);
      }),
      fuzzParams(300),
    );
  });
});
