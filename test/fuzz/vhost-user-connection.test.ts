// Fuzzes vhost-user framing (VhostUserConnection) over a real Unix socket pair with SCM_RIGHTS:
// well-formed message streams cut into arbitrary sendmsg chunks (fds on any chunk of their message)
// arrive intact, in order, with their fds; arbitrary bytes never make the reader throw, it either
// waits for more or closes once with a reason; every fd received is closed exactly once.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import pino from 'pino';
import { EAGAIN, native } from '../../src/native/index.js';
import { type Message, VhostUserConnection } from '../../src/vhost-user/connection.js';
import { FLAG_VERSION, HEADER_SIZE, MAX_PAYLOAD, encodeHeader } from '../../src/vhost-user/protocol.js';
import { fuzzParams } from './lib/fuzz.js';

let dir: string;
let listenFd: number;
const log = pino({ level: 'silent' });

function pair(): { client: number; server: number } {
  const client = native.socketConnect(join(dir, 'sock'));
  assert.ok(client >= 0, `connect: ${client}`);
  let server = -EAGAIN;
  for (let i = 0; i < 1000 && server === -EAGAIN; i++) server = native.accept(listenFd);
  assert.ok(server >= 0, `accept: ${server}`);
  return { client, server };
}

/** Writes all of `bytes` (fds with the first piece), waiting out a full socket buffer. */
async function sendAll(fd: number, bytes: Uint8Array, fds: number[]): Promise<void> {
  let off = 0;
  let withFds = fds;
  while (off < bytes.length) {
    const n = native.sendMsg(fd, bytes.subarray(off), withFds);
    if (n === -EAGAIN) {
      await sleep(1);
      continue;
    }
    if (n < 0) throw new Error(`sendmsg: ${n}`);
    off += n;
    withFds = [];
  }
}

interface Received {
  messages: Message[];
  closed: string[];
  thrown: unknown[];
}

function serve(server: number, slowEvery: number): { conn: VhostUserConnection; got: Received } {
  const got: Received = { messages: [], closed: [], thrown: [] };
  let n = 0;
  const conn = new VhostUserConnection(
    server,
    async (m) => {
      got.messages.push({ ...m, fds: [...m.fds] });
      for (const fd of m.fds) native.close(fd);
      if (slowEvery > 0 && ++n % slowEvery === 0) await sleep(1);
    },
    (reason) => got.closed.push(reason),
    log,
  );
  return { conn, got };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const t0 = Date.now();
  while (!cond() && Date.now() - t0 < ms) await sleep(2);
}

const messageArb = fc.record({
  request: fc.integer({ min: 0, max: 0xffffffff }),
  flags: fc.integer({ min: 0, max: 0xffffffff }).map((f) => ((f & ~0x3) | FLAG_VERSION) >>> 0),
  payload: fc.oneof({ weight: 4, arbitrary: fc.uint8Array({ maxLength: 64 }) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: MAX_PAYLOAD - 8, maxLength: MAX_PAYLOAD }) }),
  nfds: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 8 }) }),
  // Cut points inside the message (bytes from its start) and which piece carries the fds.
  cuts: fc.array(fc.nat(), { maxLength: 4 }),
  fdPiece: fc.nat(),
});

describe('fuzz: vhost-user connection framing', () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vhostd-fuzz-conn-'));
    listenFd = native.socketListen(join(dir, 'sock'), 64);
    assert.ok(listenFd >= 0);
  });
  after(() => {
    native.close(listenFd);
    rmSync(dir, { recursive: true, force: true });
  });

  it('well-formed streams in arbitrary chunks arrive intact with their fds', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(messageArb, { minLength: 1, maxLength: 12 }), fc.integer({ min: 0, max: 3 }), async (msgs, slowEvery) => {
        const { client, server } = pair();
        const { conn, got } = serve(server, slowEvery);
        try {
          for (const m of msgs) {
            const bytes = new Uint8Array(HEADER_SIZE + m.payload.length);
            bytes.set(encodeHeader(m.request, m.flags, m.payload.length));
            bytes.set(m.payload, HEADER_SIZE);
            const cuts = [...new Set(m.cuts.map((c) => c % bytes.length).filter((c) => c > 0))].sort((a, b) => a - b);
            const pieces = [0, ...cuts, bytes.length];
            const fdPiece = m.fdPiece % (pieces.length - 1);
            for (let i = 0; i + 1 < pieces.length; i++) {
              const fds = i === fdPiece ? Array.from({ length: m.nfds }, () => native.eventfd(0)) : [];
              await sendAll(client, bytes.subarray(pieces[i], pieces[i + 1]), fds);
              for (const fd of fds) native.close(fd); // the receiver got its own copies
            }
          }
          await until(() => got.messages.length >= msgs.length || got.closed.length > 0);
          assert.deepEqual(got.closed, []);
          assert.equal(got.messages.length, msgs.length);
          got.messages.forEach((r, i) => {
            assert.equal(r.request, msgs[i].request);
            assert.equal(r.flags, msgs[i].flags);
            assert.deepEqual(new Uint8Array(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength), msgs[i].payload);
            assert.equal(r.fds.length, msgs[i].nfds, `fds of message ${i}`);
          });
        } finally {
          conn.close('test done');
          native.close(client);
        }
      }),
      fuzzParams(150),
    );
  });

  it('arbitrary bytes and fds: no exception, at most one close, every fd closed', async () => {
    const fdsBefore = countFds();
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ bytes: fc.oneof(fc.uint8Array({ maxLength: 64 }), validishHeader), nfds: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 20 }) }) }), {
          minLength: 1,
          maxLength: 16,
        }),
        fc.boolean(),
        async (chunks, hangUp) => {
          const { client, server } = pair();
          const { conn, got } = serve(server, 2);
          try {
            for (const c of chunks) {
              if (got.closed.length > 0) break;
              const fds = Array.from({ length: c.nfds }, () => native.eventfd(0));
              if (c.bytes.length > 0) await sendAll(client, c.bytes, fds).catch(() => undefined);
              for (const fd of fds) native.close(fd);
            }
            if (hangUp) {
              native.close(client);
              await until(() => got.closed.length > 0);
              assert.equal(got.closed.length, 1);
            } else {
              await sleep(2);
            }
            assert.ok(got.closed.length <= 1);
            for (const m of got.messages) {
              assert.equal(m.flags & 0x3, FLAG_VERSION);
              assert.ok(m.payload.byteLength <= MAX_PAYLOAD);
            }
          } finally {
            conn.close('test done');
            if (!hangUp) native.close(client);
          }
        },
      ),
      fuzzParams(150),
    );
    // Every fd the reader received (queued, pending or delivered) was closed.
    await sleep(10);
    assert.ok(countFds() <= fdsBefore, `fds before ${fdsBefore}, after ${countFds()}`);
  });
});

/** A header with version 1 and a plausible size, followed by some payload bytes. */
const validishHeader = fc
  .tuple(fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 0xffffffff }), fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 0xffffffff })), fc.uint8Array({ maxLength: 64 }))
  .map(([req, flags, size, tail]) => {
    const b = new Uint8Array(HEADER_SIZE + tail.length);
    b.set(encodeHeader(req, ((flags & ~0x3) | (size % 7 === 0 ? 2 : FLAG_VERSION)) >>> 0, size));
    b.set(tail, HEADER_SIZE);
    return b;
  });

function countFds(): number {
  return readdirSync('/proc/self/fd').length;
}
