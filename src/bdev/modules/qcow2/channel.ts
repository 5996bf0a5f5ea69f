// Reactor side of the qcow2 bdev: Qcow2Channel, and the per-thread engines it shares.
//
// Engines. The format engine (Qcow2Image) keeps metadata in memory, so every channel of one bdev
// on one reactor thread shares one engine (and one FileChannel per file of the chain): a per-thread
// map keyed by the spec's bdev id, refcounted by the channels, closed (metadata flushed) when the
// last of them closes. A writable image is served by one thread at a time: the engine takes the
// spec's OWNER word (bdev.ts CTL) with Atomics.compareExchange; a channel on another thread fails
// its I/O with a log line until the owner's engine has closed (then it takes over). Read-only
// images get an engine per thread.
//
// I/O. Guest READs are translated synchronously when the L2 tables are cached: a request that
// maps to one run of data clusters goes to the image's FileChannel as one child I/O on the
// guest's own scatter list (no copy, nothing allocated); other mappings are split into extents —
// data as child I/O over slices of the guest's scatter list, zeros filled in, unallocated ranges
// read from the backing chain (or zeros), compressed clusters decompressed — and a cache miss
// goes through the engine's async mapRange. WRITEs: prepareWrite, the guest data written to the
// plan's extents as child I/O, then commit (abort on a failed write). FLUSH, WRITE_ZEROES and
// UNMAP are the engine's flush, zeroRange and discard. Every failure (a Qcow2Error, a file error)
// fails that request with a log line; nothing throws out of submit().
//
// Live snapshot (switch.ts). The engine that owns a writable image waits on the spec's STATE
// word (Atomics.waitAsync: it wakes a sleeping reactor too). Taking a switch request it holds new
// requests of its channels, waits for its requests in flight (counted per engine), flushes the
// image, opens the new top image over the old one (read-only, its own fd) and the rest of the
// chain it already has open, closes the old image, then resumes the held requests on the new
// chain. An engine is opened on the chain in effect (GEN), not necessarily the spec's.
import { basename } from 'node:path';
import pino, { type Logger } from 'pino';
import type { BdevChannel, ChannelSpec } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType, IoVecs, scatterRange, sliceInto, zeroBytes } from '../../io.js';
import { threadSlot } from '../../thread-slot.js';
import { type ChildIo, ChildIoPool, type ChildIoOwner } from '../../vbdev.js';
import { allocAligned, fileStat } from '../../../native/uring.js';
import { FileChannel, type FileChannelSpec } from '../uring/uring.js';
import type { Qcow2ChannelSpec, Qcow2FileShare } from './bdev.js';
import { type BackingRead, type Extent, Qcow2Image, type WritePlan } from './image.js';
import { CTL, type ChainDescription, SWITCH, SWITCHER_OWNER, currentDescription, readSlot, writeSwitchError } from './switch.js';
import { ChannelImageFile } from './uring-file.js';

/** FileChannel capacity for image files: they grow, so no end short of 2^52 bytes. */
const FILE_BLOCKS = 2 ** 43;

const loggers = new Map<string, Logger>();

function reactorLogger(level: string): Logger {
  let log = loggers.get(level);
  if (!log) {
    log = pino({ level, base: { module: 'qcow2' } }, pino.destination({ fd: 2, sync: true }));
    loggers.set(level, log);
  }
  return log;
}

/** This thread's value in the OWNER word (never 0): the bdev thread slot + 1. */
function myOwnerId(): number {
  return threadSlot() + 1;
}

function describeOwner(owner: number): string {
  return owner === 1 ? 'the control thread' : `reactor ${owner - 2}`;
}

/** How long a switching engine waits for its requests in flight before it gives the switch up. */
const DRAIN_TIMEOUT_MS = 5_000;

type WaitAsync = (a: Int32Array, i: number, v: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** One file of the chain on this thread. */
interface Level {
  share: Qcow2FileShare;
  ch: FileChannel;
  file: ChannelImageFile;
  image: Qcow2Image | undefined;
  /** Guest bytes of this level (zeros past its virtual size). */
  read: BackingRead;
}

function fileChannelSpec(spec: Qcow2ChannelSpec, f: Qcow2FileShare, readonly: boolean): FileChannelSpec {
  return {
    module: 'uring',
    flavor: 'uring',
    blockSize: 512,
    numBlocks: FILE_BLOCKS,
    name: `${spec.name}:${basename(f.filename)}`,
    filename: f.filename,
    fd: f.fd,
    readonly,
    direct: f.direct,
    dioAlign: f.dioAlign,
    blockDevice: false,
    discard: !readonly,
    depth: spec.depth,
    backlog: spec.backlog,
    useUring: spec.useUring,
    inline: f.inline,
    logLevel: spec.logLevel,
  };
}

function openLevel(spec: Qcow2ChannelSpec, f: Qcow2FileShare, readonly: boolean): Level {
  const ch = new FileChannel(fileChannelSpec(spec, f, readonly));
  // The engine's file size: the fd's size now (a cheap fstat, no data I/O).
  const file = new ChannelImageFile(ch, sizeOf(f.fd), f.dioAlign, basename(f.filename), readonly);
  const level: Level = {
    share: f,
    ch,
    file,
    image: undefined,
    read: async (buf, off) => {
      const n = Math.max(0, Math.min(buf.byteLength, f.virtualSize - off));
      if (n < buf.byteLength) buf.fill(0, n);
      if (n === 0) return;
      const dst = n === buf.byteLength ? buf : buf.subarray(0, n);
      if (level.image !== undefined) await level.image.read(dst, off);
      else await file.read(dst, off);
    },
  };
  return level;
}

function sizeOf(fd: number): number {
  const st = fileStat(fd);
  return typeof st === 'number' ? 0 : st.size;
}

/** The engine of one bdev on this thread, shared by its channels here. */
class Engine {
  refs = 0;
  image: Qcow2Image | undefined;
  error: string | undefined;
  top: Level;
  chain: Level[] = [];
  /** The files top and chain are open on, and their generation (switch.ts). */
  desc: ChainDescription;
  gen: number;
  readonly ready: Promise<void>;
  /** Requests of this engine's channels accepted and not yet completed. */
  inflight = 0;
  /** While switching to a new chain, channels hold new requests here. */
  switching = false;
  held: Array<{ ch: Qcow2Channel; io: BdevIo }> = [];
  /** Levels being opened by a switch (polled with the others). */
  private opening: Level[] = [];
  private drained: (() => void) | undefined;
  private switchRun: Promise<void> = Promise.resolve();
  private closing = false;
  private readonly words: Int32Array;

  constructor(
    readonly spec: Qcow2ChannelSpec,
    readonly log: Logger,
    readonly owned: boolean,
    prior: Promise<void> | undefined,
  ) {
    this.words = new Int32Array(spec.ctl);
    Atomics.add(this.words, CTL.ENGINES, 1);
    // Read after OWNER was taken: a switch by the control thread cannot slip in between.
    const { gen, d } = currentDescription(spec.ctl, spec.desc, spec.gen, { image: spec.image, chain: spec.chain });
    this.desc = d;
    this.gen = gen;
    let top: Level | undefined;
    try {
      top = openLevel(spec, d.image, spec.readonly);
      for (const f of d.chain) this.chain.push(openLevel(spec, f, true));
    } catch (e) {
      top?.ch.close();
      for (const l of this.chain) l.ch.close();
      this.release();
      throw e;
    }
    this.top = top;
    this.ready = this.open(prior).catch((e: unknown) => {
      this.error = errorText(e);
      this.log.error(`qcow2 bdev ${spec.name}: cannot open ${d.image.filename} on this reactor: ${this.error}`);
    });
  }

  get filename(): string {
    return this.desc.image.filename;
  }

  private async open(prior: Promise<void> | undefined): Promise<void> {
    // The engine this one replaces on this thread must have written its metadata back first.
    // That write-back can grow the files (new L2 tables and refcount blocks at their end): the
    // sizes taken when this engine was made are stale, and the image would look truncated.
    if (prior !== undefined) {
      await prior;
      for (const l of [this.top, ...this.chain]) l.file.grew(sizeOf(l.share.fd));
    }
    for (let i = this.chain.length - 1; i >= 0; i--) {
      const l = this.chain[i]!;
      if (l.share.format !== 'qcow2') continue;
      const below = this.chain[i + 1];
      l.image = await Qcow2Image.open(l.file, { readonly: true, name: basename(l.share.filename), ...(below ? { backingRead: below.read } : {}) });
    }
    const first = this.chain[0];
    this.image = await Qcow2Image.open(this.top.file, {
      readonly: this.spec.readonly,
      name: basename(this.desc.image.filename),
      ...(first ? { backingRead: first.read } : {}),
    });
  }

  poll(): number {
    let n = this.top.ch.poll();
    for (const l of this.chain) n += l.ch.poll();
    for (const l of this.opening) n += l.ch.poll();
    return n;
  }

  /** A request of a channel of this engine completed (called before its completion). */
  ioDone(): void {
    if (--this.inflight === 0 && this.drained !== undefined) {
      const f = this.drained;
      this.drained = undefined;
      f();
    }
  }

  /** Owner engines: watch STATE for switch requests (started once the engine is in the map). */
  watch(): void {
    if (!this.owned) return;
    const step = (): void => {
      if (this.closing) return;
      const s = Atomics.load(this.words, CTL.STATE);
      if (s === SWITCH.REQUESTED && Atomics.compareExchange(this.words, CTL.STATE, SWITCH.REQUESTED, SWITCH.TAKEN) === SWITCH.REQUESTED) {
        this.switchRun = this.runSwitch().finally(step);
        return;
      }
      const r = waitAsync(this.words, CTL.STATE, s);
      if (r.async) void (r.value as Promise<string>).then(step);
      else queueMicrotask(step);
    };
    step();
  }

  /**
   * Switches to the requested generation (see the header); always ends STATE in DONE or FAILED.
   * What can be done while requests run is done first: the overlay is opened (nothing else uses
   * it) and the image's metadata written back. Requests are held only while those in flight
   * drain and the image is frozen (metadata written since, then read-only): it stays open, caches
   * warm, as the overlay's backing file on this thread.
   */
  private async runSwitch(): Promise<void> {
    const t0 = performance.now();
    const target = Atomics.load(this.words, CTL.GEN) + 1;
    let fresh: Level | undefined;
    let state: number = SWITCH.FAILED;
    let tHold = t0;
    try {
      await this.ready;
      const d = readSlot(this.spec.desc, target);
      const below = d.chain[0];
      if (below === undefined || below.filename !== this.desc.image.filename) throw new Error(`the new image's backing file is not ${this.desc.image.filename}`);
      const old = this.image;
      if (old === undefined) throw new Error(`${this.desc.image.filename} is not open on this reactor: ${this.error ?? 'unknown error'}`);
      const oldTop = this.top;
      const top = openLevel(this.spec, d.image, false);
      fresh = top;
      this.opening = [top];
      // Reads of the overlay's unallocated clusters go to the old image's engine (frozen below).
      const oldRead: BackingRead = (buf, off) => old.read(buf, off);
      const image = await Qcow2Image.open(top.file, { readonly: false, name: basename(d.image.filename), backingRead: oldRead });
      await old.flush();
      const tPre = performance.now();
      // Hold new requests, let those in flight finish, write back what they changed.
      this.switching = true;
      tHold = performance.now();
      const heldInflight = this.inflight;
      if (this.inflight > 0) await this.drain();
      const tDrained = performance.now();
      await old.freeze();
      oldTop.image = old;
      this.opening = [];
      fresh = undefined;
      this.top = top;
      this.chain = [oldTop, ...this.chain];
      this.image = image;
      this.desc = d;
      this.gen = target;
      Atomics.store(this.words, CTL.GEN, target);
      state = SWITCH.DONE;
      const now = performance.now();
      this.log.info(
        `qcow2 bdev ${this.spec.name}: switched to ${d.image.filename} over ${below.filename} ` +
          `(requests held ${(now - tHold).toFixed(1)} ms: drain of ${heldInflight} ${(tDrained - tHold).toFixed(1)}, freeze ${(now - tDrained).toFixed(1)}; before: open and flush ${(tPre - t0).toFixed(1)} ms)`,
      );
    } catch (e) {
      this.opening = [];
      if (fresh !== undefined) fresh.ch.close();
      const msg = errorText(e);
      this.log.error(`qcow2 bdev ${this.spec.name}: switch to a new image failed, still serving ${this.desc.image.filename}: ${msg}`);
      writeSwitchError(this.spec.desc, msg);
    } finally {
      Atomics.store(this.words, CTL.STATE, state);
      Atomics.notify(this.words, CTL.STATE);
      this.switching = false;
      const held = this.held;
      this.held = [];
      for (const h of held) h.ch.submit(h.io);
    }
  }

  /** Resolves once no request of this engine is in flight; rejects after DRAIN_TIMEOUT_MS. */
  private drain(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.drained = undefined;
        reject(new Error(`${this.inflight} request(s) still in flight after ${DRAIN_TIMEOUT_MS} ms`));
      }, DRAIN_TIMEOUT_MS);
      this.drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Flushes and closes the engine, then the file channels; lets go of OWNER and ENGINES. */
  async close(): Promise<void> {
    this.closing = true;
    // Wake this engine's STATE watcher (and others', which wait again) so it ends.
    Atomics.notify(this.words, CTL.STATE);
    await this.switchRun;
    await this.ready;
    try {
      await this.image?.close();
    } catch (e) {
      this.log.error(`qcow2 bdev ${this.spec.name}: flushing ${this.desc.image.filename} at close failed: ${errorText(e)}`);
    }
    for (const l of this.chain) await l.image?.close().catch(() => undefined);
    this.top.ch.close();
    for (const l of this.chain) l.ch.close();
    this.release();
  }

  private released = false;
  private release(): void {
    if (this.released) return;
    this.released = true;
    // A newer engine of the same bdev on this thread keeps the ownership.
    if (this.owned && engines.get(this.spec.id) === undefined) Atomics.compareExchange(this.words, CTL.OWNER, myOwnerId(), 0);
    Atomics.sub(this.words, CTL.ENGINES, 1);
  }
}

/** This thread's engines by bdev id, and the ones still closing. */
const engines = new Map<string, Engine>();
const closing = new Map<string, Promise<void>>();

/**
 * This thread's engine for the spec (made on first use), or the owner's id when another thread
 * owns the image (SWITCHER_OWNER: the control thread is switching it, try again shortly).
 */
function acquireEngine(spec: Qcow2ChannelSpec, log: Logger): Engine | number {
  let e = engines.get(spec.id);
  if (e === undefined) {
    let owned = false;
    if (!spec.readonly) {
      const words = new Int32Array(spec.ctl);
      const me = myOwnerId();
      const prev = Atomics.compareExchange(words, CTL.OWNER, 0, me);
      if (prev !== 0 && prev !== me) return prev;
      owned = true;
    }
    try {
      e = new Engine(spec, log, owned, closing.get(spec.id));
    } catch (err) {
      if (owned && !engines.has(spec.id)) Atomics.compareExchange(new Int32Array(spec.ctl), CTL.OWNER, myOwnerId(), 0);
      throw err;
    }
    engines.set(spec.id, e);
    e.watch();
  }
  e.refs++;
  return e;
}

function releaseEngine(e: Engine): void {
  if (--e.refs > 0) return;
  if (engines.get(e.spec.id) === e) engines.delete(e.spec.id);
  const p = e.close().finally(() => {
    if (closing.get(e.spec.id) === p) closing.delete(e.spec.id);
  });
  closing.set(e.spec.id, p);
}

/** The state of a request served in several parts (children, async reads) or with a write plan. */
class Multi {
  /** Parts outstanding, plus one while parts are still being issued. */
  pending = 1;
  status: IoStatus = IoStatus.SUCCESS;
  constructor(
    readonly io: BdevIo,
    readonly plan: WritePlan | undefined,
  ) {}
}

const TAG_WHOLE = 1;
const TAG_PART = 2;
/** An overwrite in place (Qcow2Image.tryOverwriteCached): the clusters' lock is released when it is done. */
const TAG_OVERWRITE = 3;

/** Zeroes bytes [skip, skip + len) of a scatter list. */
function zeroIov(iov: IoVecs, skip: number, len: number): void {
  for (let i = 0; i < iov.count && len > 0; i++) {
    const segLen = iov.lens[i]!;
    if (skip >= segLen) {
      skip -= segLen;
      continue;
    }
    const n = Math.min(segLen - skip, len);
    zeroBytes(iov.bufs[i]!, iov.offs[i]! + skip, n);
    len -= n;
    skip = 0;
  }
}

export class Qcow2Channel implements BdevChannel, ChildIoOwner {
  private readonly spec: Qcow2ChannelSpec;
  private readonly log: Logger;
  private engine: Engine | undefined;
  /** The engine this channel's accepted requests count on (kept after close). */
  private counted: Engine | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly pool = new ChildIoPool(this);
  /** Per child (by timeAt): its slice of the parent's scatter list, and the Multi it is part of. */
  private readonly slices: IoVecs[] = [];
  private readonly parts: Array<Multi | undefined> = [];
  /** The cluster lock of each overwrite in flight, by its child's index. */
  private readonly overwriteLocks: Array<(() => void) | undefined> = [];
  /** Requests that arrived while the engine was opening. */
  private waiting: BdevIo[] = [];
  private closed = false;
  private failures = 0;
  private readonly capacity: number;

  constructor(spec: ChannelSpec) {
    this.spec = spec as Qcow2ChannelSpec;
    this.log = reactorLogger(this.spec.logLevel ?? 'info').child({ bdev: this.spec.name });
    this.capacity = this.spec.blockSize * this.spec.numBlocks;
    this.attach();
  }

  /**
   * Takes this thread's engine: 'failed' while another thread owns the writable image, 'later'
   * while the control thread switches it (switch.ts).
   */
  private attach(): 'ok' | 'failed' | 'later' {
    if (this.engine !== undefined) return 'ok';
    let r: Engine | number;
    try {
      r = acquireEngine(this.spec, this.log);
    } catch (e) {
      this.logFailure(`cannot open ${this.spec.image.filename} on this reactor: ${errorText(e)}`);
      return 'failed';
    }
    if (r === SWITCHER_OWNER) return 'later';
    if (typeof r === 'number') {
      this.logFailure(
        `${this.spec.image.filename} is open for writing on ${describeOwner(r)}: a writable qcow2 image is served by one reactor thread at a time ` +
          '(put all controllers of this bdev on the same core); I/O on this reactor fails',
      );
      return 'failed';
    }
    this.engine = r;
    this.counted = r;
    if (r.image === undefined && r.error === undefined) {
      void r.ready.then(() => {
        const w = this.waiting;
        this.waiting = [];
        for (const io of w) this.submit(io);
      });
    }
    return 'ok';
  }

  /** Submits the waiting requests again in a moment (the control thread is switching the image). */
  private retryLater(): void {
    if (this.retryTimer !== undefined) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const w = this.waiting;
      this.waiting = [];
      for (const io of w) this.submit(io);
    }, 1);
  }

  /** Completes a request the engine accepted. */
  private done(io: BdevIo, status: IoStatus): void {
    this.counted!.ioDone();
    io.complete(status);
  }

  private logFailure(reason: string): void {
    this.failures++;
    // The first failures in full; then one line per thousand so a broken image cannot flood the log.
    if (this.failures <= 20 || this.failures % 1000 === 0) this.log.warn({ failed: this.failures }, `qcow2 bdev ${this.spec.name}: ${reason}`);
  }

  private fail(io: BdevIo, e: unknown): void {
    this.logFailure(`${['READ', 'WRITE', 'FLUSH', 'UNMAP', 'WRITE_ZEROES'][io.type] ?? io.type} at ${io.offset}+${io.length} failed: ${errorText(e)}`);
    this.done(io, IoStatus.FAILED);
  }

  submit(io: BdevIo): void {
    if (this.closed) return io.complete(IoStatus.FAILED);
    if (this.engine === undefined) {
      const a = this.attach();
      if (a === 'later') {
        this.waiting.push(io);
        return this.retryLater();
      }
      if (a === 'failed') return io.complete(IoStatus.FAILED);
    }
    const engine = this.engine!;
    if (engine.switching) {
      engine.held.push({ ch: this, io });
      return;
    }
    const img = engine.image;
    if (img === undefined) {
      if (engine.error !== undefined) {
        this.logFailure(`${['READ', 'WRITE', 'FLUSH', 'UNMAP', 'WRITE_ZEROES'][io.type] ?? io.type} at ${io.offset}+${io.length} failed: the image could not be opened: ${engine.error}`);
        return io.complete(IoStatus.FAILED);
      }
      this.waiting.push(io);
      return;
    }
    engine.inflight++;
    if (io.type !== IoType.FLUSH && (io.offset < 0 || io.length < 0 || io.offset + io.length > this.capacity)) {
      return this.fail(io, new Error(`beyond the end of the disk (${this.capacity} bytes)`));
    }
    try {
      switch (io.type) {
        case IoType.READ:
          return this.read(engine, img, io);
        case IoType.WRITE:
          return this.write(engine, img, io);
        case IoType.FLUSH:
          return this.settle(io, img.flush());
        case IoType.WRITE_ZEROES:
          return this.settle(io, img.zeroRange(io.offset, io.length, { deallocate: false }));
        case IoType.UNMAP:
          // QEMU's discard=unmap: whole clusters are deallocated.
          return this.settle(io, img.discard(io.offset, io.length));
        default:
          return this.fail(io, new Error('unsupported I/O type'));
      }
    } catch (e) {
      // Only synchronous translation throws, before any part of the request was issued.
      this.fail(io, e);
    }
  }

  private settle(io: BdevIo, p: Promise<void>): void {
    p.then(
      () => this.done(io, IoStatus.SUCCESS),
      (e: unknown) => this.fail(io, e),
    );
  }

  // ---- READ ----

  private read(engine: Engine, img: Qcow2Image, io: BdevIo): void {
    if (io.length === 0) return this.done(io, IoStatus.SUCCESS);
    const host = img.tryMapDataCached(io.offset, io.length);
    // (A new cluster's part past the end of the file was never written: it reads as zeros below.)
    if (host >= 0 && host + io.length <= engine.top.file.size()) {
      // The common case: one run of data clusters, read straight into the guest's buffers.
      const c = this.pool.take(io);
      c.offset = host;
      c.tag = TAG_WHOLE;
      engine.top.ch.submit(c);
      return;
    }
    const extents = img.tryMapCached(io.offset, io.length);
    if (extents !== undefined) return this.readExtents(engine, img, io, extents);
    img.mapRange(io.offset, io.length).then(
      (ext) => {
        try {
          this.readExtents(engine, img, io, ext);
        } catch (e) {
          this.fail(io, e);
        }
      },
      (e: unknown) => this.fail(io, e),
    );
  }

  private readExtents(engine: Engine, img: Qcow2Image, io: BdevIo, extents: readonly Extent[]): void {
    const m = new Multi(io, undefined);
    for (const e of extents) {
      const skip = e.guestOffset - io.offset;
      switch (e.kind) {
        case 'data': {
          // Bytes past the end of the file: the unwritten rest of a new cluster, zeros.
          const inFile = Math.max(0, Math.min(e.length, engine.top.file.size() - e.hostOffset));
          if (inFile > 0) this.child(engine, m, IoType.READ, e.hostOffset, skip, inFile);
          if (inFile < e.length) zeroIov(io.iov, skip + inFile, e.length - inFile);
          break;
        }
        case 'zero':
          zeroIov(io.iov, skip, e.length);
          break;
        case 'unallocated': {
          const backing = engine.chain[0];
          if (backing === undefined) {
            zeroIov(io.iov, skip, e.length);
            break;
          }
          m.pending++;
          const buf = allocAligned(e.length, 4096);
          backing.read(buf, e.guestOffset).then(
            () => {
              scatterRange(io.iov, skip, buf, 0, e.length);
              this.partDone(m, IoStatus.SUCCESS);
            },
            (err: unknown) => this.partFailed(m, err),
          );
          break;
        }
        case 'compressed':
          m.pending++;
          img.readCompressedCluster(e.hostOffset, e.compressedLength).then(
            (cluster) => {
              scatterRange(io.iov, skip, cluster, e.guestOffset % img.clusterSize, e.length);
              this.partDone(m, IoStatus.SUCCESS);
            },
            (err: unknown) => this.partFailed(m, err),
          );
          break;
      }
    }
    this.partDone(m, IoStatus.SUCCESS);
  }

  /** A child I/O on the image file for bytes [skip, skip + len) of the request's scatter list. */
  private child(engine: Engine, m: Multi, type: IoType, hostOffset: number, skip: number, len: number): void {
    const io = m.io;
    const c = this.pool.take(io);
    c.type = type;
    c.offset = hostOffset;
    c.length = len;
    c.tag = TAG_PART;
    if (skip !== 0 || len !== io.length) {
      let v = this.slices[c.timeAt];
      if (v === undefined || v.capacity < io.iov.count) this.slices[c.timeAt] = v = new IoVecs(Math.max(16, io.iov.count));
      sliceInto(io.iov, 0, io.iov.count, skip, len, v);
      c.iov = v;
    }
    this.parts[c.timeAt] = m;
    m.pending++;
    engine.top.ch.submit(c);
  }

  childDone(c: ChildIo, status: IoStatus): void {
    if (c.tag === TAG_WHOLE) {
      this.done(this.pool.release(c), status);
      return;
    }
    if (c.tag === TAG_OVERWRITE) {
      const release = this.overwriteLocks[c.timeAt];
      this.overwriteLocks[c.timeAt] = undefined;
      release?.();
      if (status === IoStatus.SUCCESS) this.engine?.top.file.grew(c.offset + c.length);
      else if (status === IoStatus.FAILED) this.logFailure(`writing ${c.length} bytes at ${c.offset} of ${this.counted?.filename ?? this.spec.image.filename} failed`);
      this.done(this.pool.release(c), status);
      return;
    }
    const m = this.parts[c.timeAt]!;
    this.parts[c.timeAt] = undefined;
    if (status === IoStatus.SUCCESS && c.type === IoType.WRITE) this.engine?.top.file.grew(c.offset + c.length);
    else if (status === IoStatus.FAILED) this.logFailure(`${c.type === IoType.WRITE ? 'writing' : 'reading'} ${c.length} bytes at ${c.offset} of ${this.counted?.filename ?? this.spec.image.filename} failed`);
    this.pool.release(c);
    this.partDone(m, status);
  }

  private partFailed(m: Multi, e: unknown): void {
    this.logFailure(`${m.io.type === IoType.READ ? 'READ' : 'WRITE'} at ${m.io.offset}+${m.io.length}: ${errorText(e)}`);
    this.partDone(m, IoStatus.FAILED);
  }

  private partDone(m: Multi, status: IoStatus): void {
    if (status === IoStatus.FAILED) m.status = IoStatus.FAILED;
    else if (status === IoStatus.NOMEM && m.status === IoStatus.SUCCESS) m.status = IoStatus.NOMEM;
    if (--m.pending > 0) return;
    const plan = m.plan;
    if (plan === undefined) return this.done(m.io, m.status);
    if (m.status === IoStatus.SUCCESS) {
      plan.commit().then(
        () => this.done(m.io, IoStatus.SUCCESS),
        (e: unknown) => this.fail(m.io, e),
      );
    } else {
      // NOMEM: the layer submits the write again, which plans it anew.
      plan.abort().then(
        () => this.done(m.io, m.status),
        (e: unknown) => this.fail(m.io, e),
      );
    }
  }

  // ---- WRITE ----

  private write(engine: Engine, img: Qcow2Image, io: BdevIo): void {
    if (io.length === 0) return this.done(io, IoStatus.SUCCESS);
    const over = img.tryOverwriteCached(io.offset, io.length);
    if (over !== undefined) {
      // The common case on an allocated image: the data goes straight from the guest's buffers
      // to its clusters, with no metadata change to commit.
      const c = this.pool.take(io);
      c.offset = over.host;
      c.tag = TAG_OVERWRITE;
      this.overwriteLocks[c.timeAt] = over.release;
      engine.top.ch.submit(c);
      return;
    }
    img.prepareWrite(io.offset, io.length).then(
      (plan) => {
        const m = new Multi(io, plan);
        for (const e of plan.extents) this.child(engine, m, IoType.WRITE, e.hostOffset, e.guestOffset - io.offset, e.length);
        this.partDone(m, IoStatus.SUCCESS);
      },
      (e: unknown) => this.fail(io, e),
    );
  }

  poll(): number {
    const e = this.engine;
    if (e === undefined || this.closed) return 0;
    return e.poll();
  }

  /**
   * Fails what still waits for the engine and lets go of the engine; the last channel of the
   * bdev on this thread closes it (metadata flushed in the background, the bdev's destroy waits).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const w = this.waiting;
    this.waiting = [];
    for (const io of w) io.complete(IoStatus.FAILED);
    if (this.engine !== undefined) releaseEngine(this.engine);
    this.engine = undefined;
  }
}
