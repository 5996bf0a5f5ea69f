// Regressions found by test/fuzz/vhost-user-session.test.ts: the session closed fds it had already
// handed on (double close: the number may by then belong to another connection or a reactor's
// file), closed a vring's kick fd while the vring kept it, and leaked guest memory mappings when a
// reactor failed to take a new memory table. Each case is the shrunk counterexample (or the
// smallest message sequence of its class), replayed through the same checks.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FLAG_NEED_REPLY, FLAG_VERSION, Req } from '../../../src/vhost-user/protocol.js';
import { MEMFD_SIZE, type MsgSpec, UVA_BASE, runSession } from '../lib/session-harness.js';

const F = FLAG_VERSION | FLAG_NEED_REPLY;

function region(gpa: number, size: number, uva: number, off = 0): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(gpa), true);
  v.setBigUint64(8, BigInt(size), true);
  v.setBigUint64(16, BigInt(uva), true);
  v.setBigUint64(24, BigInt(off), true);
  return b;
}

function memTable(...regions: Uint8Array[]): MsgSpec {
  const p = new Uint8Array(8 + 32 * regions.length);
  new DataView(p.buffer).setUint32(0, regions.length, true);
  regions.forEach((r, i) => p.set(r, 8 + 32 * i));
  return { request: Req.SET_MEM_TABLE, flags: F, payload: p, fds: regions.map(() => 'memfd' as const) };
}

function memReg(request: number, r: Uint8Array): MsgSpec {
  const p = new Uint8Array(40);
  p.set(r, 8);
  return { request, flags: F, payload: p, fds: ['memfd'] };
}

function vringState(request: number, index: number, num: number): MsgSpec {
  const p = new Uint8Array(8);
  new DataView(p.buffer).setUint32(0, index, true);
  new DataView(p.buffer).setUint32(4, num, true);
  return { request, flags: F, payload: p, fds: [] };
}

function vringAddr(desc: number, avail: number, used: number): MsgSpec {
  const p = new Uint8Array(40);
  const v = new DataView(p.buffer);
  v.setBigUint64(8, BigInt(desc), true);
  v.setBigUint64(16, BigInt(used), true);
  v.setBigUint64(24, BigInt(avail), true);
  return { request: Req.SET_VRING_ADDR, flags: F, payload: p, fds: [] };
}

const vringFd = (request: number): MsgSpec => ({ request, flags: F, payload: new Uint8Array(8), fds: ['eventfd'] });
const u64 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};
const replyAck: MsgSpec = { request: Req.SET_PROTOCOL_FEATURES, flags: FLAG_VERSION, payload: u64(1n << 3n), fds: [] };
const oneRegion = region(0, MEMFD_SIZE, UVA_BASE);
/** A queue 0 ready to run inside oneRegion, started by SET_VRING_ENABLE. */
const queueSetup = [vringState(Req.SET_VRING_NUM, 0, 64), vringAddr(UVA_BASE, UVA_BASE + 0x1000, UVA_BASE + 0x2000), vringFd(Req.SET_VRING_CALL), vringFd(Req.SET_VRING_KICK)];

const cases: Array<[string, MsgSpec[], boolean[]]> = [
  // Shrunk counterexample: ADD_MEM_REG's fd was consumed by the memory table, then closed again
  // by handle() when the reactor failed to take the new table.
  ['ADD_MEM_REG when the reactor fails to take the table', [memReg(Req.ADD_MEM_REG, region(0, 4096, UVA_BASE))], [true]],
  ['ADD_MEM_REG of a region overlapping a mapped one', [memTable(oneRegion), memReg(Req.ADD_MEM_REG, region(4096, 4096, UVA_BASE + 0x100000))], []],
  ['SET_MEM_TABLE with overlapping regions', [memTable(region(0, MEMFD_SIZE, UVA_BASE), region(4096, MEMFD_SIZE, UVA_BASE + 0x100000))], []],
  ['SET_MEM_TABLE whose second region cannot be mapped', [memTable(region(0, 4096, UVA_BASE), region(0x100000, 2 ** 47, UVA_BASE + 0x100000))], []],
  // Shrunk counterexample of the prefix property: the old table's mappings were never released.
  ['SET_MEM_TABLE replacing a table when the reactor fails', [replyAck, memTable(oneRegion), memTable(region(0, 4096, UVA_BASE))], [false, true]],
  ['SET_VRING_KICK for a ring outside guest memory', [replyAck, memTable(oneRegion), vringState(Req.SET_VRING_NUM, 0, 64), vringAddr(UVA_BASE + 0x100000, UVA_BASE, UVA_BASE), vringFd(Req.SET_VRING_KICK), vringState(Req.SET_VRING_ENABLE, 0, 1)], []],
  ['SET_VRING_CALL on a running queue when the reactor fails', [replyAck, memTable(oneRegion), ...queueSetup, vringState(Req.SET_VRING_ENABLE, 0, 1), vringFd(Req.SET_VRING_CALL)], [false, false, true]],
  ['REM_MEM_REG of a region that is not mapped', [memReg(Req.REM_MEM_REG, oneRegion)], []],
];

describe('regressions: vhost-user session fd and mapping ownership', () => {
  for (const [name, specs, failures] of cases) {
    it(name, async () => {
      const { problems } = await runSession(specs, failures);
      assert.deepEqual(problems, []);
    });
  }
});
