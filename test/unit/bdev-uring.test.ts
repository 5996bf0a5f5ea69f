// The uring/aio file bdev on real files: channels driven directly with IoVecs over page-aligned
// shared memory (as guest memory is), on io_uring and on the synchronous fallback, on a file
// system with O_DIRECT (/tmp), without ZERO_RANGE (/dev/shm, tmpfs), without O_DIRECT at all
// (ramfs, when it can be mounted), on a loop block device (when losetup works), and the RPC
// methods through a real RpcServer.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, constants as fsConst, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, statfsSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { type BdevIo, IoStatus, IoType, IoVecs } from '../../src/bdev/io.js';
import { type EngineKind, FILE_IO_DEFAULTS, FileBdev, type FileBdevParams, FileChannel, type FileChannelSpec } from '../../src/bdev/modules/uring/uring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { check, mmapShared, native } from '../../src/native/index.js';
import { fileConst, uringNative } from '../../src/native/uring.js';
import { openRing } from '../../src/bdev/modules/uring/ring-setup.js';
import { RpcClient, RpcError } from '../../src/rpc/client.js';
import { type TestServer, startTestServer } from './helpers/rpc-fixture.js';

const MiB = 1 << 20;

/** A logger whose lines the tests can inspect. */
function recordingLogger() {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(s) });
  return { log, lines };
}

/** Page-aligned shared memory from a memfd, like the guest memory a reactor maps. */
function guestMemory(size: number): Uint8Array {
  const fd = check('memfd', native.memfdCreate('uring-test', size));
  try {
    return new Uint8Array(mmapShared(fd, size, 0).buffer);
  } finally {
    native.close(fd);
  }
}

const mem = guestMemory(8 * MiB);

function fillPattern(off: number, len: number, seed: number): void {
  for (let i = 0; i < len; i++) mem[off + i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** Segments [memOff, len] of `mem` concatenated. */
function gather(segs: Array<[number, number]>): Buffer {
  return Buffer.concat(segs.map(([o, l]) => Buffer.from(mem.subarray(o, o + l))));
}

function io(ch: FileChannel, type: IoType, offset: number, segs: Array<[number, number]> = [], length?: number): Promise<IoStatus> {
  const iov = new IoVecs(Math.max(1, segs.length));
  for (const [o, l] of segs) iov.push(mem, o, l);
  return new Promise((resolve) => {
    const req: BdevIo = { type, offset, length: length ?? iov.totalLen, iov, complete: resolve };
    ch.submit(req);
  });
}

/** Splits [base, base+len) of mem into segments of the given sizes (cycled). */
function segments(base: number, len: number, sizes: number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let off = 0;
  for (let i = 0; off < len; i++) {
    const n = Math.min(sizes[i % sizes.length], len - off);
    out.push([base + off, n]);
    off += n;
  }
  return out;
}

function canODirect(path: string): boolean {
  try {
    closeSync(openSync(path, fsConst.O_RDWR | fsConst.O_CREAT | fsConst.O_DIRECT));
    return true;
  } catch {
    return false;
  } finally {
    rmSync(path, { force: true });
  }
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

const tmp = mkdtempSync(join(tmpdir(), 'vhostd-uring-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Opened {
  bdev: FileBdev;
  ch: FileChannel;
  file: string;
  close(): Promise<void>;
}

function open(file: string, size: number, over: Partial<FileChannelSpec> = {}, p: Partial<FileBdevParams> = {}, log = recordingLogger().log): Opened {
  if (size > 0) writeFileSync(file, Buffer.alloc(size));
  const bdev = FileBdev.create({ flavor: 'uring', name: 'u0', filename: file, ...p }, log);
  const ch = new FileChannel({ ...bdev.channelSpec(), logLevel: 'silent', ...over });
  return {
    bdev,
    ch,
    file,
    async close() {
      ch.close();
      await bdev.destroy();
    },
  };
}

/** The data-path checks every engine and file system must pass. */
function dataPath(label: string, dir: () => string, over: Partial<FileChannelSpec>, expect: { engine: EngineKind }): void {
  describe(`data path: ${label}`, () => {
    let o: Opened;
    let n = 0;
    before(() => {
      o = open(join(dir(), `data-${label.replace(/\W+/g, '_')}-${n++}.img`), 4 * MiB, over);
      assert.equal(o.ch.engineKind, expect.engine);
    });
    after(async () => {
      await o.close();
      rmSync(o.file, { force: true });
    });

    it('writes a multi-segment scatter list and reads it back into other views', async () => {
      const segs = segments(0, 64 * 1024, [4096, 512, 8192, 1024, 2048]);
      fillPattern(0, 64 * 1024, 1);
      assert.equal(await io(o.ch, IoType.WRITE, 128 * 1024, segs), IoStatus.SUCCESS);
      const file = readFileSync(o.file);
      assert.ok(file.subarray(128 * 1024, 192 * 1024).equals(pattern(64 * 1024, 1)), 'file holds the written bytes');
      assert.ok(file.subarray(0, 128 * 1024).equals(Buffer.alloc(128 * 1024)), 'bytes before are untouched');
      assert.ok(file.subarray(192 * 1024, 256 * 1024).equals(Buffer.alloc(64 * 1024)), 'bytes after are untouched');
      const rsegs = segments(1 * MiB, 64 * 1024, [512, 16384, 4096]);
      mem.fill(0xee, 1 * MiB, 1 * MiB + 64 * 1024);
      assert.equal(await io(o.ch, IoType.READ, 128 * 1024, rsegs), IoStatus.SUCCESS);
      assert.ok(gather(rsegs).equals(pattern(64 * 1024, 1)));
    });

    it('bounces unaligned buffers (address and length) without failing, also beyond one bounce buffer', async () => {
      // 300 KiB: more than one bounce buffer, so the copy is done in chunks.
      const len = 300 * 1024;
      const segs = segments(2 * MiB + 1, len, [1000, 3000, 7192, 5000]);
      fillPattern(2 * MiB + 1, len, 2);
      const bouncedBefore = o.ch.stats.bounced;
      assert.equal(await io(o.ch, IoType.WRITE, 1 * MiB, segs), IoStatus.SUCCESS);
      assert.ok(readFileSync(o.file).subarray(1 * MiB, 1 * MiB + len).equals(pattern(len, 2)));
      const rsegs = segments(4 * MiB + 3, len, [777, 4096, 100]);
      assert.equal(await io(o.ch, IoType.READ, 1 * MiB, rsegs), IoStatus.SUCCESS);
      assert.ok(gather(rsegs).equals(pattern(len, 2)));
      if (o.ch.stats.direct && o.ch.engineKind !== 'mapped') assert.equal(o.ch.stats.bounced, bouncedBefore + 2, 'O_DIRECT: both went through a bounce buffer');
      else assert.equal(o.ch.stats.bounced, bouncedBefore, 'buffered or mapped: no bounce needed');
    });

    it('one-segment requests (the prepRw1 / pread path): aligned and not, at once and in slot order', async () => {
      const bouncedBefore = o.ch.stats.bounced;
      fillPattern(3 * MiB, 4096, 5);
      assert.equal(await io(o.ch, IoType.WRITE, 8192, [[3 * MiB, 4096]]), IoStatus.SUCCESS);
      assert.ok(readFileSync(o.file).subarray(8192, 12288).equals(pattern(4096, 5)));
      mem.fill(0xee, 5 * MiB, 5 * MiB + 4096);
      assert.equal(await io(o.ch, IoType.READ, 8192, [[5 * MiB, 4096]]), IoStatus.SUCCESS);
      assert.ok(Buffer.from(mem.subarray(5 * MiB, 5 * MiB + 4096)).equals(pattern(4096, 5)));
      // One segment at an odd address: bounced under O_DIRECT, the same bytes either way.
      fillPattern(3 * MiB + 7, 4096, 6);
      assert.equal(await io(o.ch, IoType.WRITE, 16384, [[3 * MiB + 7, 4096]]), IoStatus.SUCCESS);
      mem.fill(0xee, 5 * MiB + 3, 5 * MiB + 3 + 4096);
      assert.equal(await io(o.ch, IoType.READ, 16384, [[5 * MiB + 3, 4096]]), IoStatus.SUCCESS);
      assert.ok(Buffer.from(mem.subarray(5 * MiB + 3, 5 * MiB + 3 + 4096)).equals(pattern(4096, 6)));
      if (o.ch.stats.direct && o.ch.engineKind !== 'mapped') assert.equal(o.ch.stats.bounced, bouncedBefore + 2, 'O_DIRECT: the unaligned two bounced');
      else assert.equal(o.ch.stats.bounced, bouncedBefore);
      // A batch of one-segment reads in flight together, each into its own buffer.
      const reads = Array.from({ length: 48 }, (_, i) => io(o.ch, IoType.READ, (i % 4) * 4096 + 8192, [[6 * MiB + i * 4096, 4096]]));
      assert.ok((await Promise.all(reads)).every((st) => st === IoStatus.SUCCESS));
      const file = readFileSync(o.file);
      for (let i = 0; i < 48; i++) {
        const at = (i % 4) * 4096 + 8192;
        assert.ok(Buffer.from(mem.subarray(6 * MiB + i * 4096, 6 * MiB + (i + 1) * 4096)).equals(file.subarray(at, at + 4096)), `read ${i}`);
      }
    });

    it('takes scatter lists longer than a slot holds', async () => {
      const segs = segments(0, (FILE_IO_DEFAULTS.maxIov + 44) * 512, [512]);
      fillPattern(0, (FILE_IO_DEFAULTS.maxIov + 44) * 512, 3);
      assert.equal(await io(o.ch, IoType.WRITE, 2 * MiB, segs), IoStatus.SUCCESS);
      assert.ok(readFileSync(o.file).subarray(2 * MiB, 2 * MiB + segs.length * 512).equals(pattern(segs.length * 512, 3)));
    });

    it('flushes with fdatasync, counted', async () => {
      const before = o.ch.stats.fdatasyncs;
      assert.equal(await io(o.ch, IoType.FLUSH, 0), IoStatus.SUCCESS);
      assert.equal(await io(o.ch, IoType.FLUSH, 0), IoStatus.SUCCESS);
      assert.equal(o.ch.stats.fdatasyncs, before + 2);
    });

    it('WRITE_ZEROES zeroes the range', async () => {
      fillPattern(0, 256 * 1024, 4);
      assert.equal(await io(o.ch, IoType.WRITE, 3 * MiB, [[0, 256 * 1024]]), IoStatus.SUCCESS);
      assert.equal(await io(o.ch, IoType.WRITE_ZEROES, 3 * MiB + 64 * 1024, [], 128 * 1024), IoStatus.SUCCESS);
      const f = readFileSync(o.file).subarray(3 * MiB, 3 * MiB + 256 * 1024);
      const p = pattern(256 * 1024, 4);
      assert.ok(f.subarray(0, 64 * 1024).equals(p.subarray(0, 64 * 1024)));
      assert.ok(f.subarray(64 * 1024, 192 * 1024).equals(Buffer.alloc(128 * 1024)));
      assert.ok(f.subarray(192 * 1024).equals(p.subarray(192 * 1024)));
    });
  });
}

describe('addon: one-segment calls check their range before any syscall', () => {
  const EFAULT = -14;
  const EINVAL = -22;
  const view = mem.subarray(0, 64 * 1024);
  it('prepRw1 and filePread1/filePwrite1 refuse a range outside the view, an empty one, and (align > 0) an unaligned one', () => {
    const fd = openSync(join(tmp, 'one-seg.img'), 'w+');
    try {
      writeSync(fd, Buffer.alloc(64 * 1024));
      const ring = new uringNative.Uring(4, 4);
      assert.equal(ring.init(), 0);
      try {
        for (const [off, len, align, rc] of [
          [60 * 1024, 8192, 0, EFAULT],
          [0, 0, 0, EFAULT],
          [0xffffffff, 4096, 0, EFAULT],
          [512, 4096, 4096, EINVAL],
          [0, 1000, 512, EINVAL],
        ] as const) {
          assert.equal(ring.prepRw1(false, 0, fd, 0, view, off, len, align), rc, `prepRw1 off ${off} len ${len} align ${align}`);
          assert.equal(uringNative.filePread1(fd, 0, view, off, len, align), rc, `filePread1 off ${off} len ${len} align ${align}`);
          assert.equal(uringNative.filePwrite1(fd, 0, view, off, len, align), rc, `filePwrite1 off ${off} len ${len} align ${align}`);
        }
        assert.equal(ring.prepRw1(false, 9, fd, 0, view, 0, 4096, 0), -34, 'a slot beyond the ring: -ERANGE');
        view.fill(0x5a, 4096, 8192);
        assert.equal(uringNative.filePwrite1(fd, 4096, view, 4096, 4096, 512), 4096);
        view.fill(0, 4096, 8192);
        assert.equal(ring.prepRw1(false, 1, fd, 4096, view, 4096, 4096, 512), 0);
        assert.equal(ring.submit(), 1);
        assert.equal(ring.wait(1000), 0);
        const out = new Int32Array(8);
        assert.equal(ring.reap(out, 4), 1);
        assert.deepEqual([out[0], out[1]], [1, 4096]);
        assert.ok(view.subarray(4096, 8192).every((b) => b === 0x5a));
      } finally {
        ring.close();
      }
    } finally {
      closeSync(fd);
    }
  });
});

describe('uring bdev', () => {
  describe('bdev creation', () => {
    it('detects size and block size of a regular file, rounds capacity down, opens with O_DIRECT where possible', async () => {
      const f = join(tmp, 'size.img');
      writeFileSync(f, Buffer.alloc(MiB + 1000));
      const { log, lines } = recordingLogger();
      const b = FileBdev.create({ flavor: 'uring', name: 'u0', filename: f }, log);
      try {
        assert.equal(b.blockSize, 512);
        assert.equal(b.numBlocks, 2048 + 1);
        assert.equal(b.productName, 'URING bdev');
        assert.equal(b.channelSpec().direct, canODirect(join(tmp, 'probe')));
        assert.ok(lines.some((l) => l.includes('not a multiple of 512')));
      } finally {
        await b.destroy();
      }
      const b4 = FileBdev.create({ flavor: 'aio', name: 'a0', filename: f, blockSize: 4096 }, recordingLogger().log);
      assert.equal(b4.numBlocks, 256);
      assert.equal(b4.productName, 'AIO disk');
      await b4.destroy();
    });

    it('reads the ring depth and the io_uring switch from the environment, and logs the fallback', async () => {
      const f = join(tmp, 'env.img');
      writeFileSync(f, Buffer.alloc(64 * 1024));
      const b = FileBdev.create({ flavor: 'uring', name: 'u0', filename: f }, recordingLogger().log);
      try {
        assert.equal(b.channelSpec().depth, 128);
        assert.equal(b.channelSpec().useUring, true);
        process.env.VHOSTD_URING_DEPTH = '16';
        process.env.VHOSTD_NO_URING = '1';
        const spec = b.channelSpec();
        assert.equal(spec.depth, 16);
        assert.equal(spec.useUring, false);
        const ch = new FileChannel({ ...spec, logLevel: 'silent' });
        assert.equal(ch.engineKind, 'sync');
        ch.close();
        const { log, lines } = recordingLogger();
        await FileBdev.create({ flavor: 'uring', name: 'u1', filename: f }, log).destroy();
        assert.ok(lines.some((l) => l.includes('io_uring disabled by VHOSTD_NO_URING')), lines.join(''));
      } finally {
        delete process.env.VHOSTD_URING_DEPTH;
        delete process.env.VHOSTD_NO_URING;
        await b.destroy();
      }
    });
  });

  it('falls back to synchronous I/O when io_uring_queue_init fails', async () => {
    // 40000 entries: more than io_uring takes, so the ring cannot be set up.
    const o = open(join(tmp, 'noring.img'), MiB, { depth: 40000 });
    try {
      assert.equal(o.ch.engineKind, 'sync');
      fillPattern(0, 8192, 11);
      assert.equal(await io(o.ch, IoType.WRITE, 8192, [[0, 8192]]), IoStatus.SUCCESS);
      assert.equal(await io(o.ch, IoType.FLUSH, 0), IoStatus.SUCCESS);
      assert.equal(o.ch.stats.fdatasyncs, 1);
      assert.ok(readFileSync(o.file).subarray(8192, 16384).equals(pattern(8192, 11)));
    } finally {
      await o.close();
    }
  });

  dataPath('io_uring, /tmp', () => tmp, {}, { engine: 'io_uring' });
  // The fallback, forced exactly as in production (VHOSTD_NO_URING=1 read by channelSpec()).
  describe('VHOSTD_NO_URING=1', () => {
    before(() => {
      process.env.VHOSTD_NO_URING = '1';
    });
    after(() => {
      delete process.env.VHOSTD_NO_URING;
    });
    dataPath('synchronous fallback, /tmp', () => tmp, {}, { engine: 'sync' });
  });

  describe('io_uring fixed buffers: guest memory on hugepages', () => {
    /** Fixed buffers the kernel holds for this process's rings, as "address/length" (fdinfo). */
    function registeredBuffers(): string[] {
      const out: string[] = [];
      for (const fd of readdirSync('/proc/self/fdinfo')) {
        let text = '';
        try {
          text = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
        } catch {
          continue;
        }
        if (!text.includes('UserBufs:')) continue;
        for (const m of text.matchAll(/^\s*\d+: (0x[0-9a-f]+\/\d+)$/gm)) out.push(m[1]);
      }
      return out;
    }

    /** 8 MiB of 2 MiB pages, as a front-end's memory-backend-file on hugetlbfs; undefined without them. */
    function hugeMemory(): { buffer: SharedArrayBuffer; size: number } | undefined {
      const size = 8 * MiB;
      try {
        const free = () => Number(/HugePages_Free:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
        if (free() < 4) writeFileSync('/proc/sys/vm/nr_hugepages', String(Number(readFileSync('/proc/sys/vm/nr_hugepages', 'utf8')) + 4 - free()));
        if (!readFileSync('/proc/mounts', 'utf8').includes('hugetlbfs')) {
          if (!existsSync('/dev/hugepages')) mkdirSync('/dev/hugepages');
          execFileSync('mount', ['-t', 'hugetlbfs', 'none', '/dev/hugepages']);
        }
        if (free() < 4) return undefined;
      } catch {
        return undefined;
      }
      const mnt = /^\S+ (\S+) hugetlbfs /m.exec(readFileSync('/proc/mounts', 'utf8'))?.[1] ?? '/dev/hugepages';
      const file = join(mnt, `vhostd-uring-test-${process.pid}`);
      const fd = openSync(file, 'w+');
      try {
        truncateSync(file, size);
        return { buffer: mmapShared(fd, size, 0).buffer, size };
      } finally {
        closeSync(fd);
        rmSync(file, { force: true });
      }
    }

    it('registers the chunk I/O uses, reads and writes through it, leaves other memory alone, and lets go when the region is retired', async (t) => {
      if (!canODirect(join(tmp, 'probe-fixed'))) return t.skip('no O_DIRECT on /tmp');
      const huge = hugeMemory();
      if (huge === undefined) return t.skip('no hugetlbfs with 4 free 2 MiB pages');
      const memory = new GuestMemory([{ gpa: 0, size: huge.size, uva: 0, base: 0, buffer: huge.buffer, hugepages: true }]);
      assert.ok(memory.translate(0, 4096));
      const view = memory.win;
      const o = open(join(tmp, 'fixed.img'), 4 * MiB);
      const one = (type: IoType, offset: number, buf: Uint8Array, off: number, len = 4096) =>
        new Promise<IoStatus>((resolve) => {
          const iov = new IoVecs(1);
          iov.push(buf, off, len);
          o.ch.submit({ type, offset, length: len, iov, complete: resolve });
        });
      try {
        assert.ok(o.ch.stats.direct);
        assert.deepEqual(registeredBuffers(), [], 'nothing registered before the first I/O');
        for (let i = 0; i < 4096; i++) view[i] = (i * 13 + 1) & 0xff;
        assert.equal(await one(IoType.WRITE, 8192, view, 0), IoStatus.SUCCESS);
        assert.equal(o.ch.stats.fixedIos, 1);
        assert.deepEqual(registeredBuffers().map((b) => b.split('/')[1]), [String(huge.size)], 'one chunk (the whole 8 MiB view), pinned by the kernel');
        assert.ok(readFileSync(o.file).subarray(8192, 12288).equals(Buffer.from(view.subarray(0, 4096))));
        const reads = Array.from({ length: 48 }, (_, i) => one(IoType.READ, 8192, view, MiB + i * 4096));
        assert.ok((await Promise.all(reads)).every((st) => st === IoStatus.SUCCESS));
        for (let i = 0; i < 48; i++) assert.ok(Buffer.from(view.subarray(MiB + i * 4096, MiB + (i + 1) * 4096)).equals(Buffer.from(view.subarray(0, 4096))), `read ${i}`);
        assert.equal(o.ch.stats.fixedIos, 49, 'every aligned one-segment I/O took a fixed buffer');
        // Unaligned: bounced, as without fixed buffers. Memory not on hugepages: the plain path.
        assert.equal(await one(IoType.READ, 8192, view, 2 * MiB + 3), IoStatus.SUCCESS);
        assert.equal(await one(IoType.READ, 8192, mem, 0), IoStatus.SUCCESS);
        assert.ok(Buffer.from(mem.subarray(0, 4096)).equals(Buffer.from(view.subarray(0, 4096))));
        assert.equal(o.ch.stats.fixedIos, 49);
        assert.equal(registeredBuffers().length, 1);
        // The region goes (a new memory table): the next poll unregisters its chunk.
        memory.update([]);
        o.ch.poll();
        assert.deepEqual(registeredBuffers(), [], 'the retired region is no longer pinned');
        assert.equal(await one(IoType.READ, 8192, view, 0), IoStatus.SUCCESS, 'an I/O still holding the old view takes the plain path');
        assert.equal(o.ch.stats.fixedIos, 49);
        assert.deepEqual(registeredBuffers(), []);
      } finally {
        await o.close();
        rmSync(o.file, { force: true });
      }
    });
  });

  describe('io_uring channel on /tmp', () => {
    let o: Opened;
    before(() => {
      o = open(join(tmp, 'ring.img'), 4 * MiB, { depth: 2, backlog: 64 });
    });
    after(() => o.close());

    it('queues I/O beyond the ring depth and submits it as slots free up', async () => {
      const all: Promise<IoStatus>[] = [];
      for (let i = 0; i < 40; i++) {
        fillPattern(i * 8192, 8192, 10 + i);
        all.push(io(o.ch, IoType.WRITE, i * 8192, [[i * 8192, 8192]]));
      }
      assert.deepEqual(await Promise.all(all), new Array(40).fill(IoStatus.SUCCESS));
      assert.ok(o.ch.stats.queued >= 38, `queued ${o.ch.stats.queued}`);
      assert.ok(o.ch.stats.enters < 40, `batched submissions: ${o.ch.stats.enters} io_uring_enter calls`);
      const file = readFileSync(o.file);
      for (let i = 0; i < 40; i++) assert.ok(file.subarray(i * 8192, (i + 1) * 8192).equals(pattern(8192, 10 + i)), `block ${i}`);
      assert.equal(o.ch.active, 0);
    });

    it('refuses with NOMEM once the wait ring is full, and keeps working', async () => {
      const small = new FileChannel({ ...o.bdev.channelSpec(), depth: 1, backlog: 2, logLevel: 'silent' });
      try {
        const st = await Promise.all([0, 1, 2, 3].map((i) => io(small, IoType.READ, i * 4096, [[6 * MiB + i * 4096, 4096]])));
        assert.deepEqual(st, [IoStatus.SUCCESS, IoStatus.SUCCESS, IoStatus.SUCCESS, IoStatus.NOMEM]);
        assert.equal(small.stats.rejected, 1);
        assert.equal(await io(small, IoType.READ, 0, [[6 * MiB, 4096]]), IoStatus.SUCCESS);
      } finally {
        small.close();
      }
    });

    it('fails I/O beyond the end of the bdev without growing the file', async () => {
      assert.equal(await io(o.ch, IoType.WRITE, 4 * MiB, [[0, 4096]]), IoStatus.FAILED);
      assert.equal(await io(o.ch, IoType.WRITE, 4 * MiB - 4096, [[0, 8192]]), IoStatus.FAILED);
      assert.equal(await io(o.ch, IoType.WRITE_ZEROES, 4 * MiB - 512, [], 1024), IoStatus.FAILED);
      assert.equal(statSync(o.file).size, 4 * MiB);
    });

    it('UNMAP punches a hole: allocated blocks drop and the range reads zero', async () => {
      fillPattern(0, MiB, 5);
      assert.equal(await io(o.ch, IoType.WRITE, 2 * MiB, [[0, MiB]]), IoStatus.SUCCESS);
      assert.equal(await io(o.ch, IoType.FLUSH, 0), IoStatus.SUCCESS);
      const before = statSync(o.file).blocks;
      assert.equal(await io(o.ch, IoType.UNMAP, 2 * MiB + 256 * 1024, [], 512 * 1024), IoStatus.SUCCESS);
      const afterBlocks = statSync(o.file).blocks;
      assert.ok(afterBlocks <= before - 1024, `blocks ${before} -> ${afterBlocks}`);
      const f = readFileSync(o.file);
      assert.ok(f.subarray(2 * MiB + 256 * 1024, 2 * MiB + 768 * 1024).equals(Buffer.alloc(512 * 1024)));
      assert.ok(f.subarray(2 * MiB, 2 * MiB + 256 * 1024).equals(pattern(MiB, 5).subarray(0, 256 * 1024)));
      mem.fill(0xaa, 5 * MiB, 6 * MiB);
      assert.equal(await io(o.ch, IoType.READ, 2 * MiB, [[5 * MiB, MiB]]), IoStatus.SUCCESS);
      assert.ok(Buffer.from(mem.subarray(5 * MiB + 256 * 1024, 5 * MiB + 768 * 1024)).equals(Buffer.alloc(512 * 1024)));
      assert.equal(statSync(o.file).size, 4 * MiB, 'KEEP_SIZE');
      assert.ok(o.ch.stats.unmaps >= 1);
    });

    it('fails a read past a shrunken end of file instead of returning part of it', async () => {
      const f = join(tmp, 'shrink.img');
      const s = open(f, MiB);
      try {
        truncateSync(f, 512 * 1024 + 4096);
        assert.equal(await io(s.ch, IoType.READ, 768 * 1024, [[0, 4096]]), IoStatus.FAILED);
        // Straddling the new end: the first part is read (a short read), the rest fails.
        assert.equal(await io(s.ch, IoType.READ, 512 * 1024, [[0, 16384]]), IoStatus.FAILED);
        assert.ok(s.ch.stats.shortIos >= 1, 'the short read was continued for the remainder');
        assert.equal(await io(s.ch, IoType.READ, 0, [[0, 4096]]), IoStatus.SUCCESS);
      } finally {
        await s.close();
      }
    });

    it('a read-only aio bdev reads but refuses writes, and offers no UNMAP/WRITE_ZEROES', async () => {
      const f = join(tmp, 'ro.img');
      writeFileSync(f, pattern(64 * 1024, 6));
      const b = FileBdev.create({ flavor: 'aio', name: 'ro', filename: f, readonly: true, fallocate: true }, recordingLogger().log);
      const ch = new FileChannel({ ...b.channelSpec(), logLevel: 'silent' });
      try {
        assert.equal(b.supportsIo(IoType.WRITE), false);
        assert.equal(b.supportsIo(IoType.UNMAP), false);
        assert.equal(await io(ch, IoType.READ, 0, [[0, 4096]]), IoStatus.SUCCESS);
        assert.ok(Buffer.from(mem.subarray(0, 4096)).equals(pattern(4096, 6)));
        assert.equal(await io(ch, IoType.WRITE, 0, [[0, 4096]]), IoStatus.FAILED);
        assert.equal(await io(ch, IoType.UNMAP, 0, [], 4096), IoStatus.FAILED);
        assert.ok(readFileSync(f).equals(pattern(64 * 1024, 6)));
      } finally {
        ch.close();
        await b.destroy();
      }
    });

    it('close() waits for I/O in flight and fails what still waits for a slot', async () => {
      const c = new FileChannel({ ...o.bdev.channelSpec(), depth: 1, logLevel: 'silent' });
      const a = io(c, IoType.READ, 0, [[0, 4096]]);
      const b = io(c, IoType.READ, 4096, [[4096, 4096]]);
      await Promise.resolve();
      c.close();
      assert.deepEqual(await Promise.all([a, b]), [IoStatus.SUCCESS, IoStatus.FAILED]);
      assert.equal(await io(c, IoType.READ, 0, [[0, 4096]]), IoStatus.FAILED, 'closed');
    });
  });

  describe('tmpfs (/dev/shm): no FALLOC_FL_ZERO_RANGE', { skip: !existsSync('/dev/shm') && 'no /dev/shm' }, () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync('/dev/shm/vhostd-uring-');
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    // Memory-backed files are read and written inline (tmpfs has no non-blocking I/O, so
    // io_uring would punt each request to a worker thread); io_uring still works when forced.
    dataPath('mapped, /dev/shm', () => dir, {}, { engine: 'mapped' });
    dataPath('inline preadv/pwritev, /dev/shm', () => dir, { mapped: undefined }, { engine: 'inline' });
    dataPath('io_uring forced, /dev/shm', () => dir, { inline: false }, { engine: 'io_uring' });

    it('a tmpfs file is detected as in memory and logged so; a /tmp file on disk is not', async (t) => {
      const { log, lines } = recordingLogger();
      const o = open(join(dir, 'detect.img'), MiB, {}, {}, log);
      try {
        assert.equal(o.bdev.channelSpec().inline, true);
        assert.ok(lines.some((l) => l.includes('in memory: mapped and copied inline')), lines.join(''));
      } finally {
        await o.close();
      }
      if (statfsSync(tmp).type === 0x01021994) return t.skip('/tmp is tmpfs here');
      const d = open(join(tmp, 'detect.img'), MiB);
      try {
        assert.equal(d.bdev.channelSpec().inline, false);
        assert.equal(d.ch.engineKind, 'io_uring');
      } finally {
        await d.close();
      }
    });

    it('a mapped file is the file: writes reach it at once, writes to it are read back', async () => {
      const o = open(join(dir, 'coherent.img'), 4 * MiB);
      try {
        fillPattern(0, 12288, 21);
        // Crosses pages and segments; lands at an odd block.
        assert.equal(await io(o.ch, IoType.WRITE, 512 * 7, segments(0, 12288, [1000, 3096, 8192])), IoStatus.SUCCESS);
        const fd = openSync(o.file, 'r+');
        try {
          const got = Buffer.alloc(12288);
          readSync(fd, got, 0, 12288, 512 * 7);
          assert.ok(got.equals(pattern(12288, 21)), 'pwrite-side readers see the mapped writes');
          writeSync(fd, pattern(4096, 22), 0, 4096, MiB);
        } finally {
          closeSync(fd);
        }
        assert.equal(await io(o.ch, IoType.READ, MiB, [[65536, 4096]]), IoStatus.SUCCESS);
        assert.ok(gather([[65536, 4096]]).equals(pattern(4096, 22)), 'the mapping reads what write(2) put in the file');
      } finally {
        await o.close();
      }
    });

    it('a mapped file larger than one 1 GiB view: I/O across the view boundary lands in the file', async () => {
      const file = join(dir, 'big.img');
      writeFileSync(file, '');
      truncateSync(file, 1024 * MiB + 64 * 1024); // sparse: only the pages written take memory
      const o = open(file, 0);
      try {
        assert.equal(o.ch.engineKind, 'mapped');
        const at = 1024 * MiB - 4096;
        fillPattern(0, 12288, 31);
        assert.equal(await io(o.ch, IoType.WRITE, at, segments(0, 12288, [5000, 7288])), IoStatus.SUCCESS);
        const fd = openSync(file, 'r');
        try {
          const got = Buffer.alloc(12288);
          readSync(fd, got, 0, 12288, at);
          assert.ok(got.equals(pattern(12288, 31)));
        } finally {
          closeSync(fd);
        }
        assert.equal(await io(o.ch, IoType.READ, at, [[131072, 12288]]), IoStatus.SUCCESS);
        assert.ok(gather([[131072, 12288]]).equals(pattern(12288, 31)));
      } finally {
        await o.close();
        rmSync(file, { force: true });
      }
    });

    it('a file truncated under its mapping fails I/O instead of killing the process (SIGBUS guard)', async () => {
      const o = open(join(dir, 'shrink.img'), 2 * MiB);
      const ch = new FileChannel({ ...o.bdev.channelSpec(), logLevel: 'silent' });
      try {
        assert.equal(ch.engineKind, 'mapped');
        fillPattern(0, 4096, 3);
        assert.equal(await io(ch, IoType.WRITE, MiB, [[0, 4096]]), IoStatus.SUCCESS);
        truncateSync(o.file, 0);
        // The copy faults with SIGBUS; the guard turns it into a failed I/O.
        assert.equal(await io(ch, IoType.READ, MiB, [[4096, 4096]]), IoStatus.FAILED);
        assert.equal(await io(ch, IoType.WRITE, 0, [[0, 4096]]), IoStatus.FAILED);
        // The other channel (another reactor) fails too, and its process is still here.
        assert.equal(await io(o.ch, IoType.READ, 0, [[4096, 512]]), IoStatus.FAILED);
      } finally {
        ch.close();
        await o.close();
      }
    });

    it('WRITE_ZEROES falls back to writing zeros; UNMAP punches a hole', async () => {
      const o = open(join(dir, 'z.img'), 2 * MiB);
      try {
        fillPattern(0, MiB, 7);
        assert.equal(await io(o.ch, IoType.WRITE, 0, [[0, MiB]]), IoStatus.SUCCESS);
        // Larger than the zero buffer: written in chunks.
        const big = FILE_IO_DEFAULTS.zeroBytes + 64 * 1024;
        assert.equal(await io(o.ch, IoType.WRITE_ZEROES, 4096, [], big), IoStatus.SUCCESS);
        assert.equal(await io(o.ch, IoType.WRITE_ZEROES, 0, [], 512), IoStatus.SUCCESS);
        assert.equal(o.ch.stats.zeroWrites, 2, 'both went through the zero-write fallback');
        const f = readFileSync(o.file);
        assert.ok(f.subarray(0, 512).equals(Buffer.alloc(512)), 'first block zeroed');
        assert.ok(f.subarray(512, 4096).equals(pattern(MiB, 7).subarray(512, 4096)), 'bytes between kept');
        assert.ok(f.subarray(4096, 4096 + big).equals(Buffer.alloc(big)), 'large range zeroed');
        const before = statSync(o.file).blocks;
        assert.equal(await io(o.ch, IoType.UNMAP, 0, [], MiB), IoStatus.SUCCESS);
        const afterBlocks = statSync(o.file).blocks;
        assert.ok(afterBlocks <= before - 2048, `tmpfs pages freed: ${before} -> ${afterBlocks}`);
      } finally {
        await o.close();
      }
    });
  });

  describe('file system without O_DIRECT', () => {
    let dir: string | undefined;
    let mounted = false;
    before(() => {
      if (existsSync('/dev/shm') && !canODirect('/dev/shm/vhostd-odirect-probe')) {
        dir = mkdtempSync('/dev/shm/vhostd-uring-');
        return;
      }
      // tmpfs takes O_DIRECT since Linux 6.6; ramfs still refuses it.
      const d = mkdtempSync(join(tmp, 'ramfs-'));
      try {
        execFileSync('mount', ['-t', 'ramfs', 'ramfs', d], { stdio: 'ignore' });
        mounted = true;
        dir = d;
      } catch {
        dir = undefined;
      }
    });
    after(() => {
      if (mounted && dir) execFileSync('umount', [dir]);
    });

    it('falls back to buffered I/O with a log line, and the data path works', async (t) => {
      if (!dir) return t.skip('neither /dev/shm nor ramfs refuses O_DIRECT here (ramfs mount not permitted)');
      const { log, lines } = recordingLogger();
      const o = open(join(dir, 'nodirect.img'), MiB, {}, {}, log);
      try {
        assert.equal(o.bdev.channelSpec().direct, false);
        assert.ok(
          lines.some((l) => l.includes('O_DIRECT refused') && l.includes('buffered')),
          lines.join(''),
        );
        const segs = segments(1, 64 * 1024, [1000, 3096]);
        fillPattern(1, 64 * 1024, 8);
        assert.equal(await io(o.ch, IoType.WRITE, 4096, segs), IoStatus.SUCCESS);
        assert.ok(readFileSync(o.file).subarray(4096, 4096 + 64 * 1024).equals(pattern(64 * 1024, 8)));
        assert.equal(o.ch.stats.bounced, 0, 'buffered I/O needs no bounce buffer');
        assert.equal(await io(o.ch, IoType.FLUSH, 0), IoStatus.SUCCESS);
      } finally {
        await o.close();
      }
    });
  });

  describe('block device (loop)', () => {
    let backing: string;
    let loop: string | undefined;
    let loop4k: string | undefined;
    before(() => {
      backing = join(tmp, 'loop.img');
      writeFileSync(backing, Buffer.alloc(4 * MiB));
      try {
        loop = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
        loop4k = execFileSync('losetup', ['-f', '--show', '-b', '4096', backing], { encoding: 'utf8' }).trim();
      } catch {
        // No loop devices here: skipped below.
      }
    });
    after(() => {
      for (const l of [loop, loop4k]) if (l) execFileSync('losetup', ['-d', l]);
    });

    it('sizes it with BLKGETSIZE64/BLKSSZGET, and does I/O, BLKDISCARD and BLKZEROOUT', async (t) => {
      if (!loop) return t.skip('losetup is not available');
      const o = open(loop, 0);
      try {
        assert.equal(o.bdev.blockSize, 512);
        assert.equal(o.bdev.numBlocks, 8192);
        fillPattern(0, MiB, 9);
        assert.equal(await io(o.ch, IoType.WRITE, MiB, [[0, MiB]]), IoStatus.SUCCESS);
        assert.equal(await io(o.ch, IoType.FLUSH, 0), IoStatus.SUCCESS);
        assert.ok(readFileSync(backing).subarray(MiB, 2 * MiB).equals(pattern(MiB, 9)), 'the backing file holds the data');
        assert.equal(await io(o.ch, IoType.WRITE_ZEROES, MiB, [], 64 * 1024), IoStatus.SUCCESS);
        assert.equal(await io(o.ch, IoType.UNMAP, MiB + 512 * 1024, [], 512 * 1024), IoStatus.SUCCESS);
        mem.fill(0xaa, 0, MiB);
        assert.equal(await io(o.ch, IoType.READ, MiB, [[0, MiB]]), IoStatus.SUCCESS);
        const got = Buffer.from(mem.subarray(0, MiB));
        assert.ok(got.subarray(0, 64 * 1024).equals(Buffer.alloc(64 * 1024)), 'BLKZEROOUT zeroed');
        assert.ok(got.subarray(64 * 1024, 512 * 1024).equals(pattern(MiB, 9).subarray(64 * 1024, 512 * 1024)));
        assert.equal(o.ch.stats.unmaps, 1);
        assert.equal(o.ch.stats.writeZeroes, 1);
      } finally {
        await o.close();
      }
    });

    it('opens its io_uring with DEFER_TASKRUN where the kernel has it (6.1): completions wake the eventfd and a reap runs them', async (t) => {
      if (!loop) return t.skip('losetup is not available');
      const [major, minor] = readFileSync('/proc/sys/kernel/osrelease', 'utf8').split('.').map(Number);
      const deferExpected = major > 6 || (major === 6 && minor >= 1);
      const c = fileConst;
      const o = open(loop, 0);
      try {
        assert.equal(o.ch.ringSetup, deferExpected ? 'defer-taskrun' : o.ch.ringSetup);
        fillPattern(0, 4096, 21);
        assert.equal(await io(o.ch, IoType.WRITE, 8192, [[0, 4096]]), IoStatus.SUCCESS);
      } finally {
        await o.close();
      }
      for (const name of ['defer-taskrun', 'coop-taskrun', 'plain'] as const) {
        const ring = new uringNative.Uring(4, 4);
        const { rc, setup } = openRing(ring, name);
        try {
          assert.equal(rc, 0);
          const want = { 'defer-taskrun': c.IORING_SETUP_DEFER_TASKRUN | c.IORING_SETUP_SINGLE_ISSUER | c.IORING_SETUP_TASKRUN_FLAG, 'coop-taskrun': c.IORING_SETUP_COOP_TASKRUN | c.IORING_SETUP_TASKRUN_FLAG, plain: 0 }[setup];
          assert.equal(ring.setupFlags(), want, `${name}: the ring has the flags of ${setup}`);
          if (deferExpected) assert.equal(setup, name, `${name} is available on this kernel`);
          // A read of the block device completes as task work: it must signal the eventfd (what
          // wakes a sleeping reactor), and a reap must run it without any other call.
          const fd = check('open loop', uringNative.fileOpen(loop, fileConst.O_RDONLY));
          try {
            const efd = ring.eventFd();
            const woken = new Promise<void>((resolve) => {
              const w = new native.FdWatch(efd, () => {
                w.close();
                resolve();
              });
              w.start();
            });
            mem.fill(0, 4096, 8192);
            assert.equal(ring.prepRw1(false, 2, fd, 8192, mem, 4096, 4096, 0), 0);
            assert.equal(ring.submit(), 1);
            await woken;
            const cqes = new Int32Array(8);
            let n = 0;
            for (let i = 0; i < 100 && n === 0; i++) n = ring.reap(cqes, 4);
            assert.deepEqual([n, cqes[0], cqes[1]], [1, 2, 4096], `${name}: one completion of slot 2, 4096 bytes`);
            assert.ok(Buffer.from(mem.subarray(4096, 8192)).equals(pattern(4096, 21)), `${name}: the data read`);
          } finally {
            native.close(fd);
          }
        } finally {
          ring.close();
        }
      }
    });

    it('detects a 4096-byte logical block size and refuses a smaller block_size', async (t) => {
      if (!loop4k) return t.skip('losetup is not available');
      const b = FileBdev.create({ flavor: 'uring', name: 'l4k', filename: loop4k }, recordingLogger().log);
      assert.equal(b.blockSize, 4096);
      assert.equal(b.numBlocks, 1024);
      await b.destroy();
      const fds = openFds();
      assert.throws(
        () => FileBdev.create({ flavor: 'uring', name: 'l4k', filename: loop4k as string, blockSize: 512 }, recordingLogger().log),
        (e: Error & { code?: number }) => e.code === -22 && /smaller than the logical block size 4096/.test(e.message),
      );
      assert.equal(openFds(), fds, 'no fd leaked');
    });
  });

  describe('RPC', () => {
    let srv: TestServer;
    let client: RpcClient;
    let file: string;
    before(async () => {
      srv = await startTestServer();
      client = new RpcClient(srv.socketPath);
      file = join(tmp, 'rpc.img');
      writeFileSync(file, Buffer.alloc(2 * MiB));
    });
    after(async () => {
      client.close();
      await srv.stop();
    });

    async function rejects(method: string, params: object, code: number, message: RegExp): Promise<void> {
      await assert.rejects(client.call(method, params), (err: unknown) => {
        assert.ok(err instanceof RpcError, String(err));
        assert.equal(err.code, code, err.message);
        assert.match(err.message, message);
        return true;
      });
    }

    it('bdev_uring_create / bdev_get_bdevs / bdev_uring_delete', async () => {
      assert.equal(await client.call('bdev_uring_create', { filename: file, name: 'U0' }), 'U0');
      const [info] = await client.call<Array<Record<string, unknown>>>('bdev_get_bdevs', { name: 'U0' });
      assert.equal(info.product_name, 'URING bdev');
      assert.equal(info.block_size, 512);
      assert.equal(info.num_blocks, 4096);
      assert.deepEqual(info.driver_specific, { uring: { filename: file } });
      const io = info.supported_io_types as Record<string, boolean>;
      assert.deepEqual([io.read, io.write, io.flush, io.unmap, io.write_zeroes], [true, true, true, true, true]);
      const cfg = srv.bdevs.get('U0').writeConfig();
      assert.deepEqual(cfg, { method: 'bdev_uring_create', params: { name: 'U0', block_size: 512, filename: file, uuid: info.uuid } });
      await rejects('bdev_aio_delete', { name: 'U0' }, -19, /U0 is a uring bdev/);
      assert.equal(await client.call('bdev_uring_delete', { name: 'U0' }), true);
      // The saved config recreates the same bdev.
      assert.equal(await client.call(cfg.method, cfg.params), 'U0');
      assert.equal(srv.bdevs.get('U0').uuid, info.uuid);
      assert.equal(await client.call('bdev_uring_delete', { name: 'U0' }), true);
    });

    it('bdev_aio_create with SPDK defaults, readonly, fallocate and block_size', async () => {
      assert.equal(await client.call('bdev_aio_create', { filename: file, name: 'A0' }), 'A0');
      assert.equal(await client.call('bdev_aio_create', { filename: file, name: 'A1', block_size: 4096, readonly: true, fallocate: true }), 'A1');
      const bdevs = await client.call<Array<Record<string, unknown>>>('bdev_get_bdevs');
      const a0 = bdevs.find((b) => b.name === 'A0') as Record<string, unknown>;
      const a1 = bdevs.find((b) => b.name === 'A1') as Record<string, unknown>;
      assert.equal(a0.product_name, 'AIO disk');
      assert.deepEqual(a0.driver_specific, { aio: { filename: file, block_size_override: false, readonly: false, fallocate: false, nowait: false } });
      assert.deepEqual(a1.driver_specific, { aio: { filename: file, block_size_override: true, readonly: true, fallocate: true, nowait: false } });
      assert.equal(a1.block_size, 4096);
      assert.equal((a0.supported_io_types as Record<string, boolean>).unmap, false, 'aio: UNMAP only with fallocate, as SPDK');
      assert.deepEqual(srv.bdevs.get('A0').writeConfig().params, { name: 'A0', filename: file, readonly: false, fallocate: false, uuid: a0.uuid });
      assert.equal(srv.bdevs.get('A1').writeConfig().params.block_size, 4096);
      await rejects('bdev_uring_delete', { name: 'A0' }, -19, /not uring/);
      assert.equal(await client.call('construct_aio_bdev', { filename: file, name: 'A2' }), 'A2');
      for (const n of ['A0', 'A1']) assert.equal(await client.call('bdev_aio_delete', { name: n }), true);
      assert.equal(await client.call('delete_aio_bdev', { name: 'A2' }), true);
    });

    it('reports bad input with -errno and what was wrong, leaving nothing behind', async () => {
      const small = join(tmp, 'small.img');
      writeFileSync(small, Buffer.alloc(511));
      const empty = join(tmp, 'empty.img');
      writeFileSync(empty, Buffer.alloc(0));
      await client.call('bdev_uring_create', { filename: file, name: 'taken' });
      const fds = openFds();
      const missing = join(tmp, 'nope.img');
      for (const m of ['bdev_uring_create', 'bdev_aio_create']) {
        await rejects(m, { filename: missing, name: 'X' }, -2, new RegExp(`^No such file or directory: cannot open ${missing}`));
        await rejects(m, { filename: small, name: 'X' }, -22, /small\.img is 511 bytes, smaller than one block of 512 bytes/);
        await rejects(m, { filename: empty, name: 'X' }, -22, /smaller than one block/);
        await rejects(m, { filename: file, name: 'X', block_size: 1000 }, -22, /block_size 1000 is not a power of two/);
        await rejects(m, { filename: file, name: 'X', block_size: 256 }, -22, /block_size 256 is not a power of two of at least 512/);
        await rejects(m, { filename: file, name: 'X', block_size: 4 * MiB }, -22, /smaller than one block of 4194304/);
        await rejects(m, { filename: tmp, name: 'X' }, -21, /^Is a directory/);
        await rejects(m, { filename: '/dev/null', name: 'X' }, -22, /neither a regular file nor a block device/);
        await rejects(m, { filename: file, name: 'taken' }, -17, /^File exists: bdev taken already exists/);
        await rejects(m, { filename: file, name: '' }, -22, /name must not be empty/);
        await rejects(m, { filename: file }, -32602, /spdk_json_decode_object failed/);
        await rejects(m, { filename: file, name: 'X', bogus: 1 }, -32602, /spdk_json_decode_object failed/);
      }
      await rejects('bdev_aio_create', { filename: file, name: 'X', nowait: true }, -95, /nowait/);
      const uuid = srv.bdevs.get('taken').uuid;
      await rejects('bdev_aio_create', { filename: file, name: 'X', uuid }, -17, /uuid/);
      await rejects('bdev_uring_delete', { name: 'ghost' }, -19, /^No such device: bdev ghost does not exist/);
      await rejects('bdev_aio_delete', { name: 'ghost' }, -19, /ghost does not exist/);
      assert.equal(openFds(), fds, 'every fd opened by a failed create was closed');
      assert.deepEqual(
        srv.bdevs.list().map((b) => b.name),
        ['taken'],
      );
      // A claimed bdev cannot be deleted; the error names the holder.
      await client.call('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'taken' });
      await rejects('bdev_uring_delete', { name: 'taken' }, -16, /in use by vhost\.0/);
      await client.call('vhost_delete_controller', { ctrlr: 'vhost.0' });
      assert.equal(await client.call('bdev_uring_delete', { name: 'taken' }), true);
      assert.equal(openFds(), fds - 1, 'delete closed the fd');
    });
  });
});
