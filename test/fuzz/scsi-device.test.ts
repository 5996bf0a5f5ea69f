// Fuzzes the virtio-scsi device (src/devices/scsi/scsi-device.ts: command, control and event
// queues, over the SCSI target layer of src/scsi/) with random request chains walked by the real
// ChainWalker: random CDBs (mostly supported opcodes with random fields), LUN addresses, data
// layouts and buffer placements, on malloc and null LUNs. Properties: a chain is refused by
// throwing only when it has no room for the response (the device stops); otherwise exactly one
// completion, used length within the writable bytes, a valid virtio-scsi response code, SCSI status
// GOOD / CHECK CONDITION, and guest memory changed only inside the writable buffers.
// (The SCSI target layer's own CDB fuzzing is test/unit/scsi-cdb-fuzz.test.ts.)
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import fc from 'fast-check';
import { MallocBdev } from '../../src/bdev/modules/malloc/malloc.js';
import { NullBdev } from '../../src/bdev/modules/null/null.js';
import { ScsiDevice } from '../../src/devices/scsi/scsi-device.js';
import { CMD_RESP_BYTES, ControlType } from '../../src/devices/scsi/scsi-spec.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Opcode, scsiLunInfoFromBdev } from '../../src/scsi/index.js';
import type { QueueRunner } from '../../src/virtio/queue-runner.js';
import { Chain, ChainError, ChainWalker } from '../../src/virtio/desc-chain.js';
import { fuzzParams } from './lib/fuzz.js';
import { openSpecOf } from '../unit/helpers/open-spec.js';

const MEM = 128 * 1024;
const QUEUE_SIZE = 64;
const OPCODES = Object.values(Opcode);

const cdbArb = fc.tuple(fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...OPCODES) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }), fc.uint8Array({ minLength: 31, maxLength: 31 }), fc.array(fc.tuple(fc.integer({ min: 1, max: 15 }), fc.constantFrom(0, 1, 2, 8, 0x10, 0x80, 0xff)), { maxLength: 6 })).map(([op, rest, pokes]) => {
  const cdb = new Uint8Array(32);
  cdb[0] = op;
  // Mostly small fields (LBA, length) so commands hit the disk: zero the rest, then poke a few bytes.
  if ((rest[0] & 3) === 0) cdb.set(rest.subarray(1), 1);
  for (const [i, v] of pokes) cdb[i] = v;
  return cdb;
});

const lenArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 8 }).map((k) => k * 512) },
  { weight: 2, arbitrary: fc.constantFrom(0, 1, 8, 36, 51, 96, 107, 108, 109, 255, 4096) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 20000 }) },
);

const caseArb = fc.record({
  queue: fc.constantFrom(2, 2, 2, 3, 0, 1),
  target: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 9 }) }),
  lunFormat: fc.constantFrom(0, 0, 0, 1, 2),
  lun: fc.constantFrom(0, 0, 1, 0x3fff),
  cdb: cdbArb,
  ctrl: fc.record({ type: fc.constantFrom(ControlType.TMF, ControlType.AN_QUERY, ControlType.AN_SUBSCRIBE, 7), subtype: fc.integer({ min: 0, max: 8 }) }),
  headerLen: fc.oneof({ weight: 6, arbitrary: fc.constant(51) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 80 }) }),
  outs: fc.array(lenArb, { maxLength: 3 }),
  respLen: fc.oneof({ weight: 6, arbitrary: fc.constant(CMD_RESP_BYTES) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 200 }) }),
  ins: fc.array(lenArb, { maxLength: 3 }),
  placement: fc.array(fc.integer({ min: 0, max: MEM - 1 }), { minLength: 8, maxLength: 8 }),
  packedLayout: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  backend: fc.constantFrom('malloc', 'null'),
  blockSize: fc.constantFrom(512, 4096),
});

type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

async function runCase(c: Case): Promise<void> {
  const buffer = new SharedArrayBuffer(MEM);
  const u8 = new Uint8Array(buffer);
  for (let i = 0; i < MEM; i++) u8[i] = (i * 97 + 13) & 0xff;
  const mem = new GuestMemory([{ gpa: 0x200000, size: MEM, uva: 0x7f0000000000, base: 0, buffer }]);

  // The request header: lun[8] tag[8] attr prio crn cdb[32] (command queue), or a control request.
  const header = new Uint8Array(Math.max(c.headerLen, 0));
  const full = new Uint8Array(80);
  if (c.queue >= 2) {
    full[0] = c.lunFormat === 2 ? 0 : 1;
    full[1] = c.target;
    full[2] = c.lunFormat === 1 ? 0 : 0x40 | (c.lun >> 8);
    full[3] = c.lun & 0xff;
    full.set(c.cdb, 19);
  } else {
    const v = new DataView(full.buffer);
    v.setUint32(0, c.ctrl.type, true);
    v.setUint32(4, c.ctrl.subtype, true);
    full[8] = 1;
    full[9] = c.target;
    full[10] = 0x40;
  }
  header.set(full.subarray(0, header.length));
  const specs: Array<[number, boolean]> = [[header.length, false], ...c.outs.map((l) => [l, false] as [number, boolean]), [c.respLen, true], ...c.ins.map((l) => [l, true] as [number, boolean])];
  const bufs: Array<{ off: number; len: number; write: boolean }> = [];
  let cursor = 4096;
  specs.forEach(([len, write], i) => {
    let off = c.packedLayout ? cursor : c.placement[i % c.placement.length];
    if (off + len > MEM) off = Math.max(0, MEM - len);
    cursor = off + len;
    bufs.push({ off, len: Math.min(len, MEM), write });
  });
  u8.set(header, bufs[0].off);
  const table = new DataView(new ArrayBuffer(QUEUE_SIZE * 16));
  bufs.forEach((b, i) => {
    table.setBigUint64(i * 16, BigInt(0x200000 + b.off), true);
    table.setUint32(i * 16 + 8, b.len, true);
    table.setUint16(i * 16 + 12, (b.write ? 2 : 0) | (i + 1 < bufs.length ? 1 : 0), true);
    table.setUint16(i * 16 + 14, i + 1, true);
  });
  const chain = new Chain(128 + 8);
  if (new ChainWalker(mem, true).walk(new Uint32Array(table.buffer), 0, QUEUE_SIZE, 0, chain) !== ChainError.OK) return;

  const bdev = c.backend === 'malloc' ? new MallocBdev('L0', c.blockSize, 64 * 4096) : new NullBdev('L0', c.blockSize, (64 * 4096) / c.blockSize);
  const device = new ScsiDevice({ kind: 'scsi', name: 'fuzz', segMax: 126, hotplug: true, targets: [{ target: 0, lun: scsiLunInfoFromBdev(bdev), bdev: openSpecOf(bdev) }] }, () => {});
  const completions: Array<[number, number]> = [];
  const runner = { qid: c.queue, queue: { size: QUEUE_SIZE }, complete: (head: number, len: number) => completions.push([head, len]) } as unknown as QueueRunner;
  const handler = device.handlerFor(runner);
  const before = u8.slice();
  try {
    handler.handle(0, chain);
  } catch (e) {
    // Refusing a chain (the device then stops) is allowed only when the response cannot fit.
    const need = c.queue === 1 ? 16 : CMD_RESP_BYTES;
    assert.ok(chain.writableLen < need, `handle threw with ${chain.writableLen} writable bytes: ${(e as Error).stack}`);
    assert.deepEqual(completions, []);
    return;
  }
  // The event queue keeps buffers until there is an event; stopping gives them back.
  if (c.queue === 1) (handler as unknown as { stop(): void }).stop();
  for (let i = 0; i < 100 && completions.length === 0; i++) await tick();
  await tick();
  assert.equal(completions.length, 1, `completions ${JSON.stringify(completions)}`);
  const [head, used] = completions[0];
  assert.equal(head, 0);
  assert.ok(used >= 0 && used <= chain.writableLen, `used length ${used} > ${chain.writableLen} writable bytes`);
  if (c.queue >= 2) {
    // The response header sits at the start of the writable part.
    const resp = new Uint8Array(12);
    let got = 0;
    for (let i = chain.firstWritable; i < chain.iov.count && got < 12; i++) {
      const n = Math.min(12 - got, chain.iov.lens[i]);
      resp.set(chain.iov.bufs[i].subarray(chain.iov.offs[i], chain.iov.offs[i] + n), got);
      got += n;
    }
    assert.ok(resp[11] <= 12, `virtio-scsi response ${resp[11]}`);
    if (resp[11] === 0) assert.ok([0x00, 0x02].includes(resp[10]), `SCSI status 0x${resp[10].toString(16)}`);
  }
  const writable = (i: number) => bufs.some((b) => b.write && i >= b.off && i < b.off + b.len);
  for (let i = 0; i < MEM; i++) if (u8[i] !== before[i] && !writable(i)) assert.fail(`byte ${i} changed outside the writable buffers`);
  await device.close();
}

describe('fuzz: virtio-scsi device queues', () => {
  it('random command, control and event chains complete once and write only writable buffers', { timeout: 300_000 }, async () => {
    await fc.assert(fc.asyncProperty(caseArb, runCase), fuzzParams(500));
  });
});
