// Resource limits against a real vhostd: a flood of idle and malformed vhost-user connections on
// one controller neither disturbs I/O on another controller nor locks a real front-end out of the
// flooded one (idle sessions are evicted, oldest first); the RPC server's connection cap holds.
import assert from 'node:assert/strict';
import { type Socket, connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostUserFrontend } from '../../src/initiator/frontend.js';
import { RpcClient } from '../../src/rpc/client.js';
import { DEFAULT_MAX_CONNECTIONS } from '../../src/rpc/server.js';
import { MAX_SESSIONS_PER_CONTROLLER } from '../../src/services/controller.js';
import { FLAG_VERSION, Req, encodeHeader } from '../../src/vhost-user/protocol.js';
import { VhostdProcess } from '../lib/vhostd.js';

const IDLE_CONNECTIONS = 1000;
const MALFORMED_CONNECTIONS = 100;
const MESSAGES_PER_CONNECTION = 100;

let d: VhostdProcess;

/** Connects a plain Unix socket that never says anything; resolves once connected. */
function idleConnect(path: string, onClose?: () => void): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => {
      s.on('error', () => {});
      if (onClose) s.once('close', onClose);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function idleConnectRetrying(path: string, onClose: () => void): Promise<Socket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await idleConnect(path, onClose);
    } catch (e) {
      // A full listen backlog answers EAGAIN to a non-blocking connect; the daemon drains it fast.
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || attempt > 200) throw e;
      await sleep(5);
    }
  }
}

function message(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + payload.length);
  out.set(encodeHeader(request, FLAG_VERSION, payload.length));
  out.set(payload, 12);
  return out;
}

/** Malformed messages the session rejects (logs) and survives, then one that ends the connection. */
function malformedStream(seed: number): Uint8Array {
  const msgs: Uint8Array[] = [];
  for (let i = 0; i < MESSAGES_PER_CONNECTION - 1; i++) {
    const vringState = new Uint8Array(8);
    new DataView(vringState.buffer).setUint32(0, 200 + i, true); // no such vring
    const choices = [
      message(1000 + ((seed + i) % 50), new Uint8Array((i % 7) * 4)), // unknown request
      message(Req.SET_FEATURES, new Uint8Array(3)), // wrong payload size
      message(Req.SET_VRING_NUM, vringState),
      message(Req.SET_MEM_TABLE, new Uint8Array(8)), // zero regions
      message(Req.SET_VRING_ADDR, new Uint8Array(39)),
      message(Req.SET_PROTOCOL_FEATURES, new Uint8Array(8).fill(0xff)), // bits never offered
    ];
    msgs.push(choices[(seed + i) % choices.length]);
  }
  // GET_FEATURES with a payload: a request that needs a reply cannot be NACKed, so it closes.
  msgs.push(message(Req.GET_FEATURES, new Uint8Array(4)));
  const out = new Uint8Array(msgs.reduce((n, m) => n + m.length, 0));
  let off = 0;
  for (const m of msgs) {
    out.set(m, off);
    off += m.length;
  }
  return out;
}

/** `f()`, tried again every 50 ms while it fails, for up to 20 s (the daemon may lag on a loaded machine). */
async function within20s<T>(f: () => Promise<T>): Promise<T> {
  for (const until = Date.now() + 20_000; ; ) {
    try {
      return await f();
    } catch (e) {
      if (Date.now() > until) throw e;
      await sleep(50);
    }
  }
}

const pattern = (seed: number, len: number) => Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed * 31) & 0xff);

/** Verified write/read cycles on `ctrlr` until `stop` resolves; returns cycles done. */
async function verifiedIo(ctrlr: string, stop: { done: boolean }): Promise<number> {
  const ini = await BlkInitiator.connect(d.socket(ctrlr), { queues: 1, queueSize: 32 });
  let cycles = 0;
  try {
    while (!stop.done) {
      const data = pattern(cycles, 4096);
      const sector = (cycles % 256) * 8;
      const w = await ini.write(sector, data);
      assert.equal(w.status, BlkStatus.OK, `write ${cycles}`);
      const r = await ini.read(sector, 4096);
      assert.equal(r.status, BlkStatus.OK, `read ${cycles}`);
      assert.deepEqual(r.data, data, `data of cycle ${cycles}`);
      cycles++;
    }
  } finally {
    ini.close();
  }
  return cycles;
}

describe('connection limits', () => {
  before(async () => {
    d = await VhostdProcess.start(['-L', 'info']);
    await d.rpc('bdev_malloc_create', { name: 'Flooded', num_blocks: 8192, block_size: 512 });
    await d.rpc('bdev_malloc_create', { name: 'Served', num_blocks: 8192, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'flooded', dev_name: 'Flooded' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'served', dev_name: 'Served' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  test('idle and malformed floods do not disturb I/O elsewhere nor lock out a front-end', async (t) => {
    const stop = { done: false };
    const io = verifiedIo('served', stop);
    const idle: Socket[] = [];
    try {
      t.diagnostic(await flood(idle));
    } finally {
      stop.done = true;
      for (const s of idle) s.destroy();
    }
    const cycles = await io;
    assert.ok(cycles > 0, 'the other controller served I/O during the flood');
    assert.ok(d.alive);
    t.diagnostic(`${cycles} verified I/O cycles on the other controller during the flood`);
  });

  /** The flood, the checks on the flooded controller, and a real front-end getting in. */
  async function flood(idle: Socket[]): Promise<string> {
    const t0 = Date.now();
    // 1,000 connections that never speak, 16 at a time (the listen backlog).
    let closedByDaemon = 0;
    const countClose = () => closedByDaemon++;
    for (let i = 0; i < IDLE_CONNECTIONS; i += 16) {
      const n = Math.min(16, IDLE_CONNECTIONS - i);
      idle.push(...(await Promise.all(Array.from({ length: n }, () => idleConnectRetrying(d.socket('flooded'), countClose)))));
    }
    // All but the newest MAX_SESSIONS_PER_CONTROLLER were evicted, oldest first. Polled up to 20 s
    // (a loaded machine delays the daemon), for the log lines too: they come on another pipe.
    const evictions = () => d.logsMatching(/evicting the oldest connection that never negotiated/).length;
    for (const until = Date.now() + 20_000; Date.now() < until && (closedByDaemon < IDLE_CONNECTIONS - MAX_SESSIONS_PER_CONTROLLER || evictions() < closedByDaemon); ) await sleep(20);
    assert.equal(closedByDaemon, IDLE_CONNECTIONS - MAX_SESSIONS_PER_CONTROLLER);
    assert.ok(idle.slice(-MAX_SESSIONS_PER_CONTROLLER).every((s) => !s.destroyed), 'the newest idle connections are still open');
    assert.equal(evictions(), IDLE_CONNECTIONS - MAX_SESSIONS_PER_CONTROLLER);

    // 10,000 malformed messages over 100 connections, 4 at a time: each newcomer evicts one of the
    // (older) idle sessions, so every malformed message is parsed and rejected by a live session.
    let malformedClosed = 0;
    const rejectedBefore = d.logsMatching(/rejected vhost-user message/).length;
    for (let c = 0; c < MALFORMED_CONNECTIONS; c += 4) {
      await Promise.all(
        Array.from({ length: 4 }, async (_, k) => {
          const fe = VhostUserFrontend.connect(d.socket('flooded'));
          try {
            fe.sendRaw(malformedStream(c + k));
            // The last message needs a reply it cannot get: the daemon closes the connection.
            if (await fe.waitClosed(10_000)) malformedClosed++;
          } finally {
            fe.close();
          }
        }),
      );
    }
    assert.equal(malformedClosed, MALFORMED_CONNECTIONS);
    await d.waitForLog(/handling GET_FEATURES failed/);
    // The log lines come on another pipe than the closes: polled up to 20 s.
    const rejectedNow = () => d.logsMatching(/rejected vhost-user message/).length - rejectedBefore;
    for (const until = Date.now() + 20_000; Date.now() < until && rejectedNow() < MALFORMED_CONNECTIONS * MESSAGES_PER_CONNECTION; ) await sleep(20);
    const rejected = rejectedNow();
    assert.equal(rejected, MALFORMED_CONNECTIONS * MESSAGES_PER_CONNECTION);
    const summary = `flood: ${IDLE_CONNECTIONS} idle connections + ${rejected} malformed messages in ${Date.now() - t0} ms`;

    // Refill the slots with idle connections, then a real front-end connects and does verified I/O.
    for (let i = 0; i < MAX_SESSIONS_PER_CONTROLLER; i++) idle.push(await idleConnectRetrying(d.socket('flooded'), countClose));
    const ini = await BlkInitiator.connect(d.socket('flooded'));
    try {
      const data = pattern(99, 8192);
      assert.equal((await ini.write(64, data)).status, BlkStatus.OK);
      const r = await ini.read(64, 8192);
      assert.equal(r.status, BlkStatus.OK);
      assert.deepEqual(r.data, data);
    } finally {
      ini.close();
    }
    return summary;
  }

  test('negotiated sessions are never evicted: past the limit a newcomer is refused', async () => {
    const sessions: BlkInitiator[] = [];
    try {
      for (let i = 0; i < MAX_SESSIONS_PER_CONTROLLER; i++) sessions.push(await BlkInitiator.negotiate(d.socket('flooded')));
      const extra = VhostUserFrontend.connect(d.socket('flooded'));
      assert.equal(await extra.waitClosed(3000), true);
      extra.close();
      await d.waitForLog(/refusing connection: 8 negotiated sessions already open/);
      // The established sessions still answer.
      for (const s of sessions) assert.ok((await s.fe.call(Req.GET_FEATURES)).getBigUint64(0, true) > 0n);
    } finally {
      for (const s of sessions) s.close();
    }
    // And once they are gone the controller accepts again (their teardown can lag on a loaded machine).
    const ini = await within20s(() => BlkInitiator.connect(d.socket('flooded')));
    assert.equal((await ini.read(0, 512)).status, BlkStatus.OK);
    ini.close();
  });

  test(`the RPC server caps connections at ${DEFAULT_MAX_CONNECTIONS} and recovers`, async () => {
    const idle = await Promise.all(Array.from({ length: DEFAULT_MAX_CONNECTIONS }, () => idleConnect(d.rpcSocket)));
    try {
      await sleep(50);
      const overflow = new RpcClient(d.rpcSocket, { timeoutMs: 2000 });
      await assert.rejects(overflow.call('spdk_get_version'));
      overflow.close();
      await d.waitForLog(/RPC connection refused: too many connections/);
    } finally {
      for (const s of idle) s.destroy();
    }
    const version = await within20s(() => d.rpc<{ version: string }>('spdk_get_version'));
    assert.match(version.version, /SPDK/);
  });
});
