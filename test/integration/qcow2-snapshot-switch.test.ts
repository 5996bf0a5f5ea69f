// The control thread's side of the qcow2 live switch (src/bdev/modules/qcow2/switch.ts), in
// process, against a stand-in for the reactor: the request withdrawn when nobody takes it (the
// timeout error, the old generation kept), a reactor's failure reported with its reason, a
// reactor's success, the control thread switching an image no engine owns, EBUSY while a switch
// is under way, and the description slots read back by generation.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Qcow2FileShare } from '../../src/bdev/modules/qcow2/bdev.js';
import {
  CTL,
  type ChainDescription,
  SWITCH,
  SWITCHER_OWNER,
  currentDescription,
  newDescBuffer,
  readSlot,
  requestSwitch,
  writeSwitchError,
} from '../../src/bdev/modules/qcow2/switch.js';
import { VhostdError } from '../../src/util/errors.js';

const share = (filename: string, fd: number): Qcow2FileShare => ({ filename, fd, format: 'qcow2', direct: true, dioAlign: 512, inline: false, virtualSize: 1 << 20 });
const desc = (...names: string[]): ChainDescription => ({ image: share(names[0]!, 10), chain: names.slice(1).map((n, i) => share(n, 11 + i)) });

function buffers(owner: number): { ctl: SharedArrayBuffer; d: SharedArrayBuffer; w: Int32Array } {
  const ctl = new SharedArrayBuffer(4 * CTL.WORDS);
  const w = new Int32Array(ctl);
  w[CTL.OWNER] = owner;
  return { ctl, d: newDescBuffer(), w };
}

async function rejection(p: Promise<unknown>): Promise<VhostdError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(e instanceof VhostdError, `rejected with a VhostdError, got ${String(e)}`);
  return e;
}

/** A stand-in reactor: takes the next request and ends it in `outcome` after `ms`. */
function fakeReactor(w: Int32Array, d: SharedArrayBuffer, outcome: 'done' | 'failed', ms: number): Promise<ChainDescription> {
  return new Promise((resolve) => {
    const poll = setInterval(() => {
      if (Atomics.compareExchange(w, CTL.STATE, SWITCH.REQUESTED, SWITCH.TAKEN) !== SWITCH.REQUESTED) return;
      clearInterval(poll);
      const target = Atomics.load(w, CTL.GEN) + 1;
      const next = readSlot(d, target);
      setTimeout(() => {
        if (outcome === 'done') {
          Atomics.store(w, CTL.GEN, target);
          Atomics.store(w, CTL.STATE, SWITCH.DONE);
        } else {
          writeSwitchError(d, 'the overlay would not open');
          Atomics.store(w, CTL.STATE, SWITCH.FAILED);
        }
        resolve(next);
      }, ms);
    }, 1);
  });
}

describe('qcow2 live switch protocol (control thread)', () => {
  it('a request nobody takes is withdrawn: ETIMEDOUT, STATE idle, GEN unchanged', async () => {
    const { ctl, d, w } = buffers(3); // owned by a reactor that never answers
    const t0 = Date.now();
    const e = await rejection(requestSwitch(ctl, d, desc('b.qcow2', 'a.qcow2'), { takeTimeoutMs: 50 }));
    assert.equal(e.code, -110);
    assert.match(e.message, /did not take the switch within 50 ms/);
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(w[CTL.STATE], SWITCH.IDLE);
    assert.equal(w[CTL.GEN], 0);
    assert.equal(w[CTL.OWNER], 3);
  });

  it('the reactor fails the switch: EIO with its reason; then succeeds on the next request', async () => {
    const { ctl, d, w } = buffers(2);
    const failing = fakeReactor(w, d, 'failed', 5);
    const e = await rejection(requestSwitch(ctl, d, desc('b.qcow2', 'a.qcow2'), { takeTimeoutMs: 5000 }));
    assert.equal(e.code, -5);
    assert.match(e.message, /could not switch to the new image: the overlay would not open/);
    assert.deepEqual(await failing, desc('b.qcow2', 'a.qcow2'));
    assert.equal(w[CTL.GEN], 0);
    const ok = fakeReactor(w, d, 'done', 5);
    await requestSwitch(ctl, d, desc('c.qcow2', 'b.qcow2', 'a.qcow2'), { takeTimeoutMs: 5000 });
    assert.deepEqual(await ok, desc('c.qcow2', 'b.qcow2', 'a.qcow2'));
    assert.equal(w[CTL.GEN], 1);
    assert.equal(w[CTL.STATE], SWITCH.DONE);
  });

  it('no engine owns the image: the control thread switches it (OWNER taken and given back)', async () => {
    const { ctl, d, w } = buffers(0);
    const own = desc('a.qcow2');
    assert.deepEqual(currentDescription(ctl, d, 0, own), { gen: 0, d: own });
    await requestSwitch(ctl, d, desc('b.qcow2', 'a.qcow2'), { takeTimeoutMs: 50 });
    assert.equal(w[CTL.GEN], 1);
    assert.equal(w[CTL.OWNER], 0);
    assert.notEqual(w[CTL.OWNER], SWITCHER_OWNER);
    await requestSwitch(ctl, d, desc('c.qcow2', 'b.qcow2', 'a.qcow2'), { takeTimeoutMs: 50 });
    assert.equal(w[CTL.GEN], 2);
    // An engine opened from an old spec (generation 0) gets the chain in effect; a spec made now (2) its own.
    assert.deepEqual(currentDescription(ctl, d, 0, own), { gen: 2, d: desc('c.qcow2', 'b.qcow2', 'a.qcow2') });
    const now = desc('c.qcow2', 'b.qcow2', 'a.qcow2');
    assert.equal(currentDescription(ctl, d, 2, now).d, now);
  });

  it('EBUSY while a switch is under way; E2BIG for a description beyond its slot', async () => {
    const { ctl, d, w } = buffers(2);
    w[CTL.STATE] = SWITCH.TAKEN;
    const e = await rejection(requestSwitch(ctl, d, desc('b.qcow2', 'a.qcow2'), { takeTimeoutMs: 50 }));
    assert.equal(e.code, -16);
    w[CTL.STATE] = SWITCH.DONE;
    const long = desc('top.qcow2', ...Array.from({ length: 400 }, (_, i) => `/some/rather/long/directory/name/for/backing-file-number-${i}.qcow2`));
    const e2 = await rejection(requestSwitch(ctl, d, long, { takeTimeoutMs: 50 }));
    assert.equal(e2.code, -7);
    assert.equal(w[CTL.STATE], SWITCH.DONE, 'nothing requested');
  });
});
