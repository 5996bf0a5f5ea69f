// Fuzzes a real vhostd over its controller socket: arbitrary vhost-user message sequences (with
// real eventfds and memfds passed by SCM_RIGHTS) and raw garbage, one connection per case. The
// daemon must stay up, keep serving verified I/O on another controller, and hold no more file
// descriptors once the fuzzing connections are gone than before (no fd leak in any error path).
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { VhostUserFrontend } from '../../src/initiator/frontend.js';
import { native } from '../../src/native/index.js';
import { HEADER_SIZE, encodeHeader } from '../../src/vhost-user/protocol.js';
import { VhostdProcess } from '../lib/vhostd.js';
import { fuzzParams } from './lib/fuzz.js';
import { type MsgSpec, messageArb } from './lib/session-harness.js';

let d: VhostdProcess;
const daemonFds = () => readdirSync(`/proc/${d.proc.pid}/fd`).length;

/** The daemon's fds as "fd -> what it is", to name what a leak left open. */
function daemonFdLinks(): Map<string, string> {
  const links = new Map<string, string>();
  for (const fd of readdirSync(`/proc/${d.proc.pid}/fd`)) {
    try {
      links.set(fd, readlinkSync(`/proc/${d.proc.pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return links;
}

function alive(): void {
  assert.ok(d.alive, `vhostd exited:\n${d.logs.slice(-30).join('\n')}`);
}

/** `p`, or a failure naming `what` after `ms` (an I/O whose daemon died never completes). */
function within<T>(p: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms; vhostd ${d.alive ? 'alive' : 'exited'}; last logs:\n${d.logs.slice(-30).join('\n')}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function healthy(seed: number): Promise<void> {
  alive();
  const ini = await within(BlkInitiator.connect(d.socket('healthy')), 'connect to the healthy controller');
  try {
    const data = Uint8Array.from({ length: 4096 }, (_, i) => (i + seed) & 0xff);
    assert.equal((await within(ini.write(seed % 1000, data), 'write')).status, BlkStatus.OK);
    const r = await within(ini.read(seed % 1000, 4096), 'read');
    assert.equal(r.status, BlkStatus.OK);
    assert.deepEqual(r.data, data);
  } finally {
    ini.close();
  }
}

/** Sends each message (with fresh fds) on one connection, then hangs up. */
async function play(target: string, specs: MsgSpec[], garbage: Uint8Array | undefined): Promise<void> {
  const fe = VhostUserFrontend.connect(d.socket(target));
  try {
    for (const s of specs) {
      if (fe.closed) break;
      const fds = s.fds.map((k) => (k === 'memfd' ? native.memfdCreate('fuzz', 64 * 1024) : native.eventfd(0)));
      const msg = new Uint8Array(HEADER_SIZE + s.payload.length);
      msg.set(encodeHeader(s.request, s.flags, s.payload.length));
      msg.set(s.payload, HEADER_SIZE);
      fe.sendRaw(msg, fds);
      for (const fd of fds) native.close(fd);
    }
    if (garbage && !fe.closed) fe.sendRaw(garbage);
    // Let the daemon work through what it got (replies are read and dropped by the front-end).
    await sleep(5);
  } finally {
    fe.close();
  }
}

describe('fuzz: vhost-user against a running vhostd', () => {
  before(async () => {
    d = await VhostdProcess.start(['-L', 'warn']);
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 8192, block_size: 512 });
    await d.rpc('bdev_malloc_create', { name: 'M1', num_blocks: 8192, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'victim', dev_name: 'M0' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'healthy', dev_name: 'M1' });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  it('arbitrary message sequences: the daemon survives, serves, and leaks no fds', { timeout: 600_000 }, async () => {
    await healthy(0);
    await sleep(100);
    const baseline = daemonFds();
    const before = daemonFdLinks();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(messageArb, { minLength: 1, maxLength: 30 }), fc.option(fc.uint8Array({ minLength: 1, maxLength: 64 }), { freq: 4 }), async (specs, garbage) => {
        await play('victim', specs, garbage ?? undefined);
        if (++n % 25 === 0) await healthy(n);
        alive();
      }),
      fuzzParams(120),
    );
    await healthy(n + 1);
    // Sessions are torn down asynchronously (reactors detach): give them up to 10 s on a loaded machine.
    let fds = daemonFds();
    for (let i = 0; i < 200 && fds > baseline; i++) {
      await sleep(50);
      fds = daemonFds();
    }
    const added = [...daemonFdLinks()].filter(([fd, link]) => before.get(fd) !== link).map(([fd, link]) => `${fd} -> ${link}`);
    assert.ok(fds <= baseline, `vhostd holds ${fds} fds, ${baseline} before the fuzzing; new since: ${added.join(', ')}`);
    assert.deepEqual(d.logsMatching(/"level":60/), [], 'fatal log lines');
  });
});
