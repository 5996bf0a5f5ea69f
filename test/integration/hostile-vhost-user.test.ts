// Hostile front-ends against a real vhostd: every malformed message or ring gets a log line and
// an error (or a stopped device), while the daemon and another controller keep serving.
import assert from 'node:assert/strict';
import { ftruncateSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { DESC_F_NEXT, DESC_F_WRITE } from '../../src/initiator/driver-ring.js';
import { VhostUserFrontend } from '../../src/initiator/frontend.js';
import { native } from '../../src/native/index.js';
import { VirtioFeature, bit } from '../../src/virtio/features.js';
import { FLAG_NEED_REPLY, FLAG_VERSION, Req, encodeHeader, encodeU64 } from '../../src/vhost-user/protocol.js';
import { VhostdProcess } from '../lib/vhostd.js';

let d: VhostdProcess;
const pattern = (seed: number, len: number) => Uint8Array.from({ length: len }, (_, i) => (i * 31 + seed) & 0xff);

/** The healthy controller still does verified I/O, and RPC still answers. */
async function assertHealthy(seed: number): Promise<void> {
  assert.ok(d.alive, 'vhostd died');
  const ini = await BlkInitiator.connect(d.socket('healthy'));
  try {
    const data = pattern(seed, 8192);
    assert.equal((await ini.write(seed * 16, data)).status, BlkStatus.OK);
    const r = await ini.read(seed * 16, 8192);
    assert.equal(r.status, BlkStatus.OK);
    assert.deepEqual(r.data, data);
  } finally {
    ini.close();
  }
  const v = await d.rpc<{ version: string }>('spdk_get_version');
  assert.match(v.version, /SPDK/);
}

/** A victim session with its queue 0 rings, ready for hand-made descriptors. */
async function victimQueue() {
  const ini = await BlkInitiator.connect(d.socket('victim'), { queues: 1, queueSize: 16 });
  return { ini, q: ini.queues[0], ring: ini.queues[0].ring, mem: ini.mem };
}

function kick(fd: number): void {
  native.eventfdWrite(fd);
}

describe('hostile vhost-user front-ends', () => {
  before(async () => {
    d = await VhostdProcess.start(['-L', 'info']);
    await d.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 8192, block_size: 512 });
    await d.rpc('bdev_malloc_create', { name: 'M1', num_blocks: 8192, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'victim', dev_name: 'M0' });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'healthy', dev_name: 'M1' });
    await d.rpc('bdev_malloc_create', { name: 'M2', num_blocks: 8192, block_size: 512 });
    await d.rpc('vhost_create_blk_controller', { ctrlr: 'packable', dev_name: 'M2', packed_ring: true });
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  test('a truncated message followed by a hang-up', async () => {
    const fe = VhostUserFrontend.connect(d.socket('victim'));
    const msg = new Uint8Array(16);
    msg.set(encodeHeader(Req.SET_FEATURES, FLAG_VERSION, 8));
    fe.sendRaw(msg);
    fe.close();
    await assertHealthy(1);
  });

  test('an oversized payload closes the connection with a log line', async () => {
    const fe = VhostUserFrontend.connect(d.socket('victim'));
    fe.sendRaw(encodeHeader(Req.SET_FEATURES, FLAG_VERSION, 1 << 20));
    assert.equal(await fe.waitClosed(3000), true);
    await d.waitForLog(/declares a 1048576-byte payload/);
    fe.close();
    await assertHealthy(2);
  });

  test('a wrong protocol version closes the connection', async () => {
    const fe = VhostUserFrontend.connect(d.socket('victim'));
    fe.sendRaw(encodeHeader(Req.GET_FEATURES, 0x2, 0));
    assert.equal(await fe.waitClosed(3000), true);
    fe.close();
    await assertHealthy(3);
  });

  test('wrong descriptor counts are refused', async () => {
    const ini = await BlkInitiator.negotiate(d.socket('victim'));
    try {
      const efd = native.eventfd(0);
      // SET_FEATURES carries no fd; SET_VRING_KICK needs exactly one.
      assert.notEqual(await ini.fe.callAck(Req.SET_OWNER, undefined, [efd]), 0n);
      assert.notEqual(await ini.fe.callAck(Req.SET_VRING_KICK, encodeU64(0), []), 0n);
      // SET_MEM_TABLE announcing one region but sending no fd.
      const p = new Uint8Array(40);
      new DataView(p.buffer).setUint32(0, 1, true);
      new DataView(p.buffer).setBigUint64(16, 4096n, true);
      assert.notEqual(await ini.fe.callAck(Req.SET_MEM_TABLE, p, []), 0n);
      native.close(efd);
      await d.waitForLog(/came with 1 file descriptors, expected 0/);
    } finally {
      ini.close();
    }
    await assertHealthy(4);
  });

  test('invalid and overlapping memory regions are refused', async () => {
    const ini = await BlkInitiator.negotiate(d.socket('victim'));
    try {
      const region = (gpa: number, size: number, uva: number) => {
        const b = new Uint8Array(32);
        const v = new DataView(b.buffer);
        v.setBigUint64(0, BigInt(gpa), true);
        v.setBigUint64(8, BigInt(size), true);
        v.setBigUint64(16, BigInt(uva), true);
        return b;
      };
      const table = (regions: Uint8Array[]) => {
        const p = new Uint8Array(8 + 32 * regions.length);
        new DataView(p.buffer).setUint32(0, regions.length, true);
        regions.forEach((r, i) => p.set(r, 8 + 32 * i));
        return p;
      };
      const overlapping = table([region(0, 1 << 20, 0x10000000), region(1 << 19, 1 << 20, 0x20000000)]);
      assert.notEqual(await ini.fe.callAck(Req.SET_MEM_TABLE, overlapping, [native.eventfd(0), native.eventfd(0)]), 0n);
      await d.waitForLog(/overlaps gpa/);
      const empty = table([region(0, 0, 0x10000000)]);
      assert.notEqual(await ini.fe.callAck(Req.SET_MEM_TABLE, empty, [native.eventfd(0)]), 0n);
      // A region larger than the file behind it cannot be mapped.
      const tooBig = table([region(0, 1 << 40, 0x10000000)]);
      assert.notEqual(await ini.fe.callAck(Req.SET_MEM_TABLE, tooBig, [native.eventfd(0)]), 0n);
    } finally {
      ini.close();
    }
    await assertHealthy(5);
  });

  test('vring addresses outside guest memory do not start the ring', async () => {
    const ini = await BlkInitiator.negotiate(d.socket('victim'));
    try {
      await ini.setMemTable();
      await assert.rejects(ini.startQueue(0, 16, 4096, { desc: 0x1000, avail: 0x2000, used: 0x3000 }), /failed/);
      await d.waitForLog(/outside guest memory/);
    } finally {
      ini.close();
    }
    await assertHealthy(6);
  });

  test('a queue kicked and enabled without ever being set up is refused with a log line', async () => {
    const ini = await BlkInitiator.negotiate(d.socket('victim'));
    try {
      await ini.setMemTable();
      const kick = native.eventfd(0);
      assert.equal(await ini.fe.callAck(Req.SET_VRING_KICK, encodeU64(3), [kick]), 0n);
      const enable = new Uint8Array(8);
      new DataView(enable.buffer).setUint32(0, 3, true);
      new DataView(enable.buffer).setUint32(4, 1, true);
      assert.notEqual(await ini.fe.callAck(Req.SET_VRING_ENABLE, enable), 0n);
      native.eventfdWrite(kick);
      await d.waitForLog(/vring 3 is kicked and enabled but was never set up/);
      native.close(kick);
    } finally {
      ini.close();
    }
    await assertHealthy(11);
  });

  test('a too-short header gets IOERR and the queue keeps serving', async () => {
    const { ini, q, ring, mem } = await victimQueue();
    try {
      const hdr = mem.alloc(8, 8);
      const status = mem.alloc(1, 1);
      mem.view.setUint8(mem.off(status), 0xff);
      ring.writeDesc(0, hdr, 8, DESC_F_NEXT, 1);
      ring.writeDesc(1, status, 1, DESC_F_WRITE, 0);
      ring.pushAvail(0);
      ring.publish();
      kick(q.kickFd);
      // Polled up to 20 s: a loaded machine can keep the reactor off a core for a while.
      for (const until = Date.now() + 20_000; Date.now() < until && mem.view.getUint8(mem.off(status)) === 0xff; ) await new Promise((r) => setTimeout(r, 10));
      assert.equal(mem.view.getUint8(mem.off(status)), BlkStatus.IOERR);
    } finally {
      ini.close();
    }
    await assertHealthy(7);
  });

  const deviceStoppers: Array<[string, (ctx: Awaited<ReturnType<typeof victimQueue>>) => void, RegExp]> = [
    [
      'a descriptor index beyond the queue size',
      ({ ring }) => {
        ring.pushAvail(200);
        ring.publish();
      },
      /descriptor head 200 is beyond the queue size/,
    ],
    [
      'a descriptor loop',
      ({ ring, mem }) => {
        const buf = mem.alloc(16, 16);
        ring.writeDesc(0, buf, 16, DESC_F_NEXT, 1);
        ring.writeDesc(1, buf, 16, DESC_F_NEXT, 0);
        ring.pushAvail(0);
        ring.publish();
      },
      /loop/,
    ],
    [
      'a chain whose buffer crosses the end of guest memory',
      ({ ring, mem }) => {
        ring.writeDesc(0, mem.size - 8, 16, DESC_F_NEXT, 1);
        ring.writeDesc(1, mem.size - 8, 64, DESC_F_WRITE, 0);
        ring.pushAvail(0);
        ring.publish();
      },
      /outside guest memory/,
    ],
    [
      'a request with no status buffer',
      ({ ring, mem }) => {
        const hdr = mem.alloc(16, 16);
        ring.writeDesc(0, hdr, 16, 0, 0);
        ring.pushAvail(0);
        ring.publish();
      },
      /no device-writable status byte/,
    ],
    [
      'an avail index that jumps past the ring size',
      ({ ring }) => ring.publish(1000),
      /avail index moved by 1000/,
    ],
  ];

  for (const [name, act, logRe] of deviceStoppers) {
    test(`${name} stops the device with a log line`, async () => {
      const ctx = await victimQueue();
      try {
        act(ctx);
        kick(ctx.q.kickFd);
        await d.waitForLog(logRe);
        await d.waitForLog(/device stopped/);
      } finally {
        ctx.ini.close();
      }
      await assertHealthy(8);
      // The victim controller serves a fresh, well-behaved session again.
      const ini = await BlkInitiator.connect(d.socket('victim'));
      try {
        assert.equal((await ini.write(0, pattern(9, 4096))).status, BlkStatus.OK);
      } finally {
        ini.close();
      }
    });
  }

  // A front-end that negotiated split rings and then switches to the packed layout, with or without
  // the device offering it: rings that run must not go on being read in the old layout.
  for (const ctrlr of ['victim', 'packable']) {
    test(`switching running rings to the packed layout stops the device (${ctrlr === 'victim' ? 'never offered' : 'offered, not negotiated'})`, async () => {
      const ini = await BlkInitiator.connect(d.socket(ctrlr), { queues: 1, queueSize: 16 });
      try {
        assert.equal(ini.has(VirtioFeature.RING_PACKED), false);
        assert.equal((await ini.write(0, pattern(12, 4096))).status, BlkStatus.OK);
        const { ring, mem, kickFd } = { ring: ini.queues[0].ring, mem: ini.mem, kickFd: ini.queues[0].kickFd };
        assert.notEqual(await ini.fe.callAck(Req.SET_FEATURES, encodeU64(ini.features | bit(VirtioFeature.RING_PACKED))), 0n);
        await d.waitForLog(ctrlr === 'victim' ? /device stopped: SET_FEATURES: .* never offered \(VIRTIO_F_RING_PACKED/ : /device stopped: SET_FEATURES switches the rings to the packed layout/);
        // A well-formed request on the stopped queue is not served.
        const hdr = mem.alloc(16, 16);
        const data = mem.alloc(512, 512);
        const status = mem.alloc(1, 1);
        mem.view.setUint8(mem.off(status), 0xff);
        ring.writeDesc(8, hdr, 16, DESC_F_NEXT, 9);
        ring.writeDesc(9, data, 512, DESC_F_NEXT | DESC_F_WRITE, 10);
        ring.writeDesc(10, status, 1, DESC_F_WRITE, 0);
        ring.pushAvail(8);
        ring.publish();
        kick(kickFd);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(mem.view.getUint8(mem.off(status)), 0xff, 'a stopped device served a request');
      } finally {
        ini.close();
      }
      await assertHealthy(13);
      // A new session on the same controller is served again.
      const again = await BlkInitiator.connect(d.socket(ctrlr));
      try {
        assert.equal((await again.read(0, 4096)).status, BlkStatus.OK);
      } finally {
        again.close();
      }
    });
  }

  test('a front-end that truncates its guest memory gets its device stopped (SIGBUS guarded), the daemon keeps serving', async () => {
    const ini = await BlkInitiator.connect(d.socket('victim'), { queues: 1, queueSize: 16 });
    try {
      assert.equal((await ini.write(0, pattern(14, 4096))).status, BlkStatus.OK);
      // A request is published without a kick, the memory shrinks under it, then the kick comes.
      const { ring, mem, kickFd } = { ring: ini.queues[0].ring, mem: ini.mem, kickFd: ini.queues[0].kickFd };
      const hdr = mem.alloc(16, 16);
      const status = mem.alloc(1, 1);
      ring.writeDesc(8, hdr, 16, DESC_F_NEXT, 9);
      ring.writeDesc(9, status, 1, DESC_F_WRITE, 0);
      ring.pushAvail(8);
      ring.publish();
      ftruncateSync(mem.fd, 0);
      kick(kickFd);
      await d.waitForLog(/device stopped: .*guest memory region gpa 0x0 .*the front-end truncated its memory file/);
    } finally {
      ini.close();
    }
    await assertHealthy(15);
    const again = await BlkInitiator.connect(d.socket('victim'));
    try {
      assert.equal((await again.read(0, 4096)).status, BlkStatus.OK);
    } finally {
      again.close();
    }
  });

  test('unknown requests are refused and the session continues', async () => {
    const ini = await BlkInitiator.negotiate(d.socket('victim'));
    try {
      assert.notEqual(await ini.fe.callAck(999), 0n);
      assert.notEqual(await ini.fe.callAck(Req.SET_LOG_BASE, new Uint8Array(16)), 0n);
      const f = await ini.fe.call(Req.GET_FEATURES);
      assert.ok(f.getBigUint64(0, true) > 0n);
    } finally {
      ini.close();
    }
    await assertHealthy(10);
  });

  test('flags without NEED_REPLY on a SET request get no reply', async () => {
    const fe = VhostUserFrontend.connect(d.socket('victim'));
    fe.send(Req.SET_OWNER);
    fe.send(Req.SET_PROTOCOL_FEATURES, encodeU64(1n << 3n));
    const rc = await fe.callAck(Req.SET_OWNER);
    assert.equal(rc, 0n);
    fe.send(Req.SET_OWNER, undefined, [], FLAG_VERSION | FLAG_NEED_REPLY);
    fe.close();
  });
});
