// Regressions found by test/fuzz/vhost-user-connection.test.ts: descriptors that came with a chunk
// whose header was rejected (wrong version, oversized payload) were never closed, and descriptors
// sent with an unfinished message piled up without bound; either let a peer pin any number of fds
// in the daemon (and run it out of them: EMFILE for every other connection).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { EAGAIN, native } from '../../../src/native/index.js';
import { VhostUserConnection } from '../../../src/vhost-user/connection.js';
import { FLAG_VERSION, Req, encodeHeader } from '../../../src/vhost-user/protocol.js';

let dir: string;
let listenFd: number;
const openFds = () => readdirSync('/proc/self/fd').length;

function connection(): { client: number; closed: string[] } {
  const client = native.socketConnect(join(dir, 'sock'));
  let server = -EAGAIN;
  while (server === -EAGAIN) server = native.accept(listenFd);
  const closed: string[] = [];
  new VhostUserConnection(
    server,
    async (m) => {
      for (const fd of m.fds) native.close(fd);
    },
    (reason) => closed.push(reason),
    pino({ level: 'silent' }),
  );
  return { client, closed };
}

async function send(client: number, bytes: Uint8Array, nfds: number): Promise<void> {
  const fds = Array.from({ length: nfds }, () => native.eventfd(0));
  assert.equal(native.sendMsg(client, bytes, fds), bytes.length);
  for (const fd of fds) native.close(fd);
  await sleep(20);
}

describe('regressions: vhost-user connection fds', () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhostd-reg-conn-'));
    listenFd = native.socketListen(join(dir, 'sock'), 8);
    // The process's own fds settle after start-up (CI once saw one close during the first test,
    // 29 before and 28 after): count from a stable baseline.
    for (let last = -1, n = openFds(); n !== last; last = n, n = openFds()) await sleep(50);
  });
  after(() => {
    native.close(listenFd);
    rmSync(dir, { recursive: true, force: true });
  });

  const rejected: Array<[string, Uint8Array]> = [
    ['a header with protocol version 0', encodeHeader(Req.SET_VRING_KICK, 0, 8)],
    ['a header declaring a 1 MiB payload', encodeHeader(Req.SET_MEM_TABLE, FLAG_VERSION, 1 << 20)],
  ];
  for (const [name, header] of rejected) {
    it(`fds sent with ${name} are closed with the connection`, async () => {
      const before = openFds();
      const { client, closed } = connection();
      await send(client, header, 4);
      assert.equal(closed.length, 1);
      native.close(client);
      assert.equal(openFds(), before);
    });
  }

  it('fds piling up for an unfinished message close the connection', async () => {
    const before = openFds();
    const { client, closed } = connection();
    // A header announcing 64 payload bytes, then the payload a byte at a time, 3 fds each time.
    await send(client, encodeHeader(Req.SET_MEM_TABLE, FLAG_VERSION, 64), 0);
    for (let i = 0; i < 8 && closed.length === 0; i++) await send(client, new Uint8Array(1), 3);
    assert.equal(closed.length, 1);
    assert.match(closed[0], /file descriptors for one unfinished message/);
    native.close(client);
    assert.equal(openFds(), before);
  });
});
