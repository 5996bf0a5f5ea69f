// The addon's fd watch at the edges of a thread's life: workers terminated while their watches
// fire (the reactor shutdown case: once aborted the process, then crashed in a close callback of
// an unloaded addon), a callback that throws (must reach uncaughtException, not vanish), and a
// closed watch that must not keep its owner alive.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

const addon = new URL('../../build/Release/vhostd_native.node', import.meta.url).pathname;

describe('native FdWatch', () => {
  it('workers terminated while their fd watches fire end cleanly (no abort, no crash)', () => {
    // In a child process: a crash there is a failed assertion here, not a dead test runner.
    const script = `
      const { Worker } = require('node:worker_threads');
      const code = ${JSON.stringify(`
        const n = require(${JSON.stringify(addon)});
        const fd = n.eventfd(0);
        const w = new n.FdWatch(fd, () => { n.eventfdWrite(fd); });
        w.start(); n.eventfdWrite(fd);
        require('node:worker_threads').parentPort.postMessage('ready');
        setInterval(() => {}, 1000);
      `)};
      (async () => {
        for (let i = 0; i < 20; i++) {
          const w = new Worker(code, { eval: true });
          await new Promise((r) => w.once('message', r));
          await new Promise((r) => setTimeout(r, 2));
          await w.terminate();
        }
        console.log('survived');
      })();
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.signal, null, `child died by ${r.signal}: ${r.stderr.slice(-500)}`);
    assert.equal(r.status, 0, r.stderr.slice(-500));
    assert.match(r.stdout, /survived/);
  });

  it('a closed watch lets go of its callback, so an owner the callback closes over can be collected', () => {
    // The owner holds its watch and the callback holds the owner (a controller, a connection):
    // while the addon kept its global handle on the callback after close(), none ever went.
    const script = `
      const n = require(${JSON.stringify(addon)});
      let collected = 0;
      const registry = new FinalizationRegistry(() => { collected++; });
      for (let i = 0; i < 1000; i++) {
        const fd = n.eventfd(0);
        const owner = { fd, hits: 0 };
        owner.watch = new n.FdWatch(fd, () => { owner.hits++; });
        owner.watch.start();
        owner.watch.close();
        n.close(fd);
        registry.register(owner, i);
      }
      (async () => {
        for (let round = 0; round < 10 && collected < 1000; round++) {
          gc();
          await new Promise((r) => setTimeout(r, 20));
        }
        console.log('collected ' + collected);
      })();
    `;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr.slice(-500));
    const collected = Number(/collected (\d+)/.exec(r.stdout)?.[1]);
    assert.ok(collected >= 990, `only ${collected} of 1000 owners of closed watches were collected`);
  });

  it('an exception thrown by a watch callback reaches uncaughtException', () => {
    const script = `
      const n = require(${JSON.stringify(addon)});
      const fd = n.eventfd(0);
      const w = new n.FdWatch(fd, () => { n.eventfdRead(fd); throw new Error('boom from callback'); });
      process.on('uncaughtException', (e) => { console.log('caught: ' + e.message); w.close(); process.exit(0); });
      w.start(); n.eventfdWrite(fd);
      setTimeout(() => { console.log('lost'); process.exit(1); }, 2000);
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /caught: boom from callback/);
  });
});
