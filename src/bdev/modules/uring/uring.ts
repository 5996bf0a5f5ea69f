// File-backed bdevs: SPDK's `uring` and `aio` modules, one implementation. The Bdev (control
// thread) owns one fd on the file or block device; every reactor's channel submits on that fd
// through its own io_uring, watched by an eventfd on the reactor's event loop, straight from and
// into guest memory (iovecs point into the guest-memory views, no copy). Files on tmpfs/ramfs are
// read and written inline with preadv/pwritev (see SyncEngine); when io_uring is unavailable (or
// VHOSTD_NO_URING=1) a channel falls back to the same synchronous syscalls.
//
// Per channel: `depth` slots (one SQE in flight each) hold the state of the I/O using them, a
// fixed-size ring buffer holds I/O waiting for a slot, and aligned bounce buffers (allocated on
// first use, at most one per slot) serve buffers O_DIRECT cannot take. Nothing is allocated per I/O.
import { randomUUID } from 'node:crypto';
import pino, { type Logger } from 'pino';
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType, IoVecs, gatherRange, scatterRange } from '../../io.js';
import { type FdWatchHandle, mmapShared, native } from '../../../native/index.js';
import { refreshClock } from '../../../native/clock.js';
import { type Rw1Args, type RwArgs, type UringRing, allocAligned, fileConst, uringNative } from '../../../native/uring.js';
import { Errno, errnoName } from '../../../util/errno.js';
import { fileError, openBackingFile } from './file-info.js';
import { FixedBuffers } from './fixed-buffers.js';
import { type RingSetupName, openRing } from './ring-setup.js';
import { MappedFile, type MappedFileShare } from './mapped-file.js';

export type FileFlavor = 'uring' | 'aio';

export const FILE_IO_DEFAULTS = {
  /** io_uring entries per channel (SPDK's aio uses 128; override with VHOSTD_URING_DEPTH). */
  depth: 128,
  /** I/O that may wait for a free slot per channel (VHOSTD_URING_BACKLOG); beyond: NOMEM. */
  backlog: 8192,
  /** iovecs one slot holds; longer scatter lists go through a bounce buffer. */
  maxIov: 256,
  /** Size of one bounce buffer; larger unaligned I/O is moved through it in chunks. */
  bounceBytes: 128 * 1024,
  /** Size of the zero buffer for WRITE_ZEROES on file systems without FALLOC_FL_ZERO_RANGE. */
  zeroBytes: 1024 * 1024,
  /** Resubmissions of an I/O the kernel answered -EAGAIN/-EINTR before it fails. */
  maxRetries: 8,
  /** How long close() waits for in-flight I/O before failing it. */
  closeTimeoutMs: 5000,
} as const;

export interface FileIoEnv {
  depth: number;
  backlog: number;
  useUring: boolean;
}

function envInt(name: string, def: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  return Number.isInteger(v) && v >= min && v <= max ? v : def;
}

/** Settings from the environment, read on the control thread when a channel spec is made. */
export function fileIoEnv(): FileIoEnv {
  const noUring = process.env.VHOSTD_NO_URING;
  return {
    depth: envInt('VHOSTD_URING_DEPTH', FILE_IO_DEFAULTS.depth, 1, 4096),
    backlog: envInt('VHOSTD_URING_BACKLOG', FILE_IO_DEFAULTS.backlog, 1, 1 << 20),
    useUring: noUring === undefined || noUring === '' || noUring === '0',
  };
}

export interface FileChannelSpec extends ChannelSpec {
  module: 'uring';
  flavor: FileFlavor;
  name: string;
  filename: string;
  /** Shared by every channel; owned (closed) by the Bdev. */
  fd: number;
  readonly: boolean;
  direct: boolean;
  /** Address/length alignment O_DIRECT needs; 0 when buffered. */
  dioAlign: number;
  blockDevice: boolean;
  /** UNMAP and WRITE_ZEROES are accepted. */
  discard: boolean;
  depth: number;
  backlog: number;
  useUring: boolean;
  /** The file lives in memory (tmpfs, ramfs): read and write it inline instead of through io_uring. */
  inline: boolean;
  /** With `inline`: the file mapped into memory, READ/WRITE copy from/to it (MappedFile). */
  mapped?: MappedFileShare;
  logLevel: string;
}

export interface FileBdevParams {
  flavor: FileFlavor;
  name: string;
  filename: string;
  /** 0/undefined: detect (BLKSSZGET for block devices, 512 for regular files). */
  blockSize?: number;
  uuid?: string;
  readonly?: boolean;
  /** aio only: enables UNMAP/WRITE_ZEROES (SPDK's `fallocate`). */
  fallocate?: boolean;
}

const isPow2 = (v: number) => v > 0 && (v & (v - 1)) === 0;

let uringProbe: number | undefined;

/** Whether io_uring_queue_init works in this process: 0 or -errno (probed once). */
export function probeUring(): number {
  if (uringProbe === undefined) {
    const ring = new uringNative.Uring(1, 1);
    uringProbe = ring.init();
    ring.close();
  }
  return uringProbe;
}

export class FileBdev implements Bdev {
  readonly module: FileFlavor;
  readonly productName: string;
  readonly numBlocks: number;
  private fd: number;

  private constructor(
    readonly name: string,
    readonly filename: string,
    readonly blockSize: number,
    readonly uuid: string,
    private readonly file: { fd: number; direct: boolean; dioAlign: number; blockDevice: boolean; sizeBytes: number; inMemory: boolean },
    private readonly flags: { flavor: FileFlavor; readonly: boolean; fallocate: boolean; blockSizeOverride: boolean },
    private readonly logLevel: string,
  ) {
    this.module = flags.flavor;
    // SPDK's product names (module/bdev/uring/bdev_uring.c, module/bdev/aio/bdev_aio.c).
    this.productName = flags.flavor === 'uring' ? 'URING bdev' : 'AIO disk';
    this.numBlocks = Math.floor(file.sizeBytes / blockSize);
    this.fd = file.fd;
  }

  /**
   * Validates, opens and sizes the backing file. Throws an RPC error (-errno, message saying what
   * was wrong) and then holds no fd.
   */
  static create(p: FileBdevParams, log: Logger): FileBdev {
    if (p.name === '') throw fileError('EINVAL', 'bdev name must not be empty');
    const given = p.blockSize ?? 0;
    if (given !== 0 && (given < 512 || !isPow2(given))) {
      throw fileError('EINVAL', `block_size ${given} is not a power of two of at least 512`);
    }
    const readonly = p.readonly ?? false;
    let f = openBackingFile(p.filename, { readonly, log });
    try {
      if (f.blockDevice && given !== 0 && given < f.logicalBlockSize) {
        throw fileError('EINVAL', `block_size ${given} is smaller than the logical block size ${f.logicalBlockSize} of ${p.filename}`);
      }
      const blockSize = given !== 0 ? given : f.blockDevice ? f.logicalBlockSize : 512;
      if (f.sizeBytes < blockSize) {
        throw fileError('EINVAL', `${p.filename} is ${f.sizeBytes} bytes, smaller than one block of ${blockSize} bytes`);
      }
      if (f.direct && blockSize % f.dioAlign !== 0) {
        // A regular file on a device with larger sectors than the block size asked for.
        log.warn({ filename: p.filename }, `block_size ${blockSize} is not a multiple of the direct I/O alignment ${f.dioAlign} of ${p.filename}: using buffered I/O`);
        native.close(f.fd);
        f = { ...f, fd: -1 };
        f = openBackingFile(p.filename, { readonly, log, buffered: true });
      }
      if (f.sizeBytes % blockSize !== 0) {
        log.warn({ filename: p.filename }, `size of ${p.filename} (${f.sizeBytes}) is not a multiple of ${blockSize}: the tail is not used`);
      }
      const useUring = fileIoEnv().useUring;
      const probe = useUring ? probeUring() : 0;
      if (!useUring) log.warn({ bdev: p.name }, 'io_uring disabled by VHOSTD_NO_URING: file I/O uses synchronous preadv/pwritev');
      else if (probe < 0) log.warn({ bdev: p.name }, `io_uring unavailable (${errnoName(probe)}): file I/O uses synchronous preadv/pwritev`);
      const bdev = new FileBdev(
        p.name,
        p.filename,
        blockSize,
        p.uuid ?? randomUUID(),
        f,
        { flavor: p.flavor, readonly, fallocate: p.fallocate ?? false, blockSizeOverride: given !== 0 },
        log.level,
      );
      if (f.inMemory && !readonly) bdev.mapInMemoryFile(log);
      log.info(
        { bdev: p.name, filename: p.filename, direct: f.direct, blockDevice: f.blockDevice, inMemory: f.inMemory, mapped: bdev.mapped !== undefined, blockSize, numBlocks: bdev.numBlocks },
        `${p.flavor} bdev ${p.name} created on ${p.filename} (${f.direct ? 'O_DIRECT' : 'buffered'}${f.inMemory ? `, in memory: ${bdev.mapped ? 'mapped and copied' : 'read and written'} inline on the reactors` : ''})`,
      );
      return bdev;
    } catch (e) {
      if (f.fd >= 0) native.close(f.fd);
      throw e;
    }
  }

  /** The in-memory file's mapping shared with the reactors (see MappedFile). */
  mapped: MappedFileShare | undefined;

  /** Maps a tmpfs/ramfs file for the reactors; without a mapping they fall back to preadv/pwritev. */
  private mapInMemoryFile(log: Logger): void {
    const size = this.numBlocks * this.blockSize;
    try {
      const m = mmapShared(this.fd, size, 0);
      this.mapped = { buffer: m.buffer, mappingId: m.id, size };
    } catch (e) {
      log.warn({ bdev: this.name }, `cannot map ${this.filename} (${e instanceof Error ? e.message : String(e)}): reads and writes use preadv/pwritev`);
    }
  }

  get readonly(): boolean {
    return this.flags.readonly;
  }

  /** SPDK's aio offers UNMAP/WRITE_ZEROES only with `fallocate`; uring offers them always here. */
  private get discard(): boolean {
    return !this.flags.readonly && (this.flags.flavor === 'uring' || this.flags.fallocate);
  }

  supportsIo(type: IoType): boolean {
    switch (type) {
      case IoType.READ:
      case IoType.FLUSH:
        return true;
      case IoType.WRITE:
        return !this.flags.readonly;
      case IoType.UNMAP:
      case IoType.WRITE_ZEROES:
        return this.discard;
      default:
        return false;
    }
  }

  channelSpec(): FileChannelSpec {
    const env = fileIoEnv();
    return {
      module: 'uring',
      flavor: this.flags.flavor,
      blockSize: this.blockSize,
      numBlocks: this.numBlocks,
      name: this.name,
      filename: this.filename,
      fd: this.fd,
      readonly: this.flags.readonly,
      direct: this.file.direct,
      dioAlign: this.file.dioAlign,
      blockDevice: this.file.blockDevice,
      discard: this.discard,
      depth: env.depth,
      backlog: env.backlog,
      useUring: env.useUring,
      inline: this.file.inMemory,
      mapped: this.mapped,
      logLevel: this.logLevel,
    };
  }

  driverSpecific(): Record<string, unknown> {
    if (this.flags.flavor === 'uring') return { uring: { filename: this.filename } };
    return {
      aio: {
        filename: this.filename,
        block_size_override: this.flags.blockSizeOverride,
        readonly: this.flags.readonly,
        fallocate: this.flags.fallocate,
        nowait: false,
      },
    };
  }

  writeConfig(): ConfigCall {
    if (this.flags.flavor === 'uring') {
      return {
        method: 'bdev_uring_create',
        params: { name: this.name, block_size: this.blockSize, filename: this.filename, uuid: this.uuid },
      };
    }
    return {
      method: 'bdev_aio_create',
      params: {
        name: this.name,
        ...(this.flags.blockSizeOverride ? { block_size: this.blockSize } : {}),
        filename: this.filename,
        readonly: this.flags.readonly,
        fallocate: this.flags.fallocate,
        uuid: this.uuid,
      },
    };
  }

  async destroy(): Promise<void> {
    // Reactors may still hold views: the range turns into anonymous memory, unmapped once unreferenced.
    if (this.mapped) native.releaseMapping(this.mapped.mappingId);
    this.mapped = undefined;
    if (this.fd >= 0) native.close(this.fd);
    this.fd = -1;
  }
}

// ---------------------------------------------------------------------------------------------
// Reactor side.

const { EAGAIN, EINTR, EINVAL, E2BIG, EOPNOTSUPP } = Errno;

export type EngineKind = 'io_uring' | 'sync' | 'inline' | 'mapped';

/** What a channel needs from an I/O engine: io_uring, or syscalls done on the spot. */
interface Engine {
  readonly kind: EngineKind;
  /** Operations finish inside prep*(); `result` then holds the outcome (bytes | -errno). */
  readonly synchronous: boolean;
  result: number;
  /** 0 once queued; -EINVAL unaligned (align > 0), -E2BIG too many segments, other -errno. */
  prepRw(write: boolean, slot: number, ...args: RwArgs): number;
  /** prepRw of one segment (the same results). */
  prepRw1(write: boolean, slot: number, ...args: Rw1Args): number;
  prepFsync(slot: number, fd: number): number;
  prepFallocate(slot: number, fd: number, mode: number, offset: number, len: number): number;
  /** Hands queued work to the kernel: count | -errno (the sync engine has nothing to hand over). */
  submit(): number;
  /** (slot, res) pairs of finished operations. */
  reap(out: Int32Array, max: number): number;
  close(): void;
}

class UringEngine implements Engine {
  readonly kind = 'io_uring';
  readonly synchronous = false;
  result = 0;
  constructor(readonly ring: UringRing) {}
  prepRw(w: boolean, s: number, fd: number, o: number, b: Uint8Array[], of: Uint32Array, l: Uint32Array, c: number, sk: number, len: number, a: number): number {
    return this.ring.prepRw(w, s, fd, o, b, of, l, c, sk, len, a);
  }
  prepRw1(w: boolean, s: number, fd: number, o: number, b: Uint8Array, off: number, len: number, a: number): number {
    return this.ring.prepRw1(w, s, fd, o, b, off, len, a);
  }
  prepFsync(slot: number, fd: number): number {
    return this.ring.prepFsync(slot, fd, true);
  }
  prepFallocate(slot: number, fd: number, mode: number, offset: number, len: number): number {
    return this.ring.prepFallocate(slot, fd, mode, offset, len);
  }
  submit(): number {
    return this.ring.submit();
  }
  reap(out: Int32Array, max: number): number {
    return this.ring.reap(out, max);
  }
  close(): void {
    this.ring.close();
  }
}

/**
 * Each operation done at once by a syscall on the reactor thread; the channel takes its result
 * as the completion straight away. Two uses: the fallback when io_uring is unavailable ('sync'),
 * and files on memory file systems ('inline'), which cannot block on a device but have no
 * non-blocking read/write (no FMODE_NOWAIT), so io_uring would hand every one of them to an io-wq
 * worker thread: a wake-up and a context switch on this core per request, slower than the copy.
 */
class SyncEngine implements Engine {
  readonly synchronous = true;
  result = 0;

  constructor(readonly kind: 'sync' | 'inline') {}

  prepRw(w: boolean, s: number, fd: number, o: number, b: Uint8Array[], of: Uint32Array, l: Uint32Array, c: number, sk: number, len: number, a: number): number {
    return this.done((w ? uringNative.filePwritev : uringNative.filePreadv)(fd, o, b, of, l, c, sk, len, a), a);
  }
  prepRw1(w: boolean, s: number, fd: number, o: number, b: Uint8Array, off: number, len: number, a: number): number {
    return this.done((w ? uringNative.filePwrite1 : uringNative.filePread1)(fd, o, b, off, len, a), a);
  }
  private done(r: number, align: number): number {
    // With align > 0 the buffers were checked before the syscall: -EINVAL means "unaligned" there
    // (a kernel -EINVAL on checked buffers fails again through the bounce buffer, as it should).
    if ((r === -EINVAL && align > 0) || r === -E2BIG || r === -Errno.EFAULT) return r;
    this.result = r;
    return 0;
  }
  prepFsync(_slot: number, fd: number): number {
    this.result = uringNative.fileFdatasync(fd);
    return 0;
  }
  prepFallocate(_slot: number, fd: number, mode: number, offset: number, len: number): number {
    this.result = uringNative.fileFallocate(fd, mode, offset, len);
    return 0;
  }
  submit(): number {
    return 0;
  }
  reap(): number {
    return 0;
  }
  close(): void {}
}

const OP_RW = 1;
const OP_BOUNCE = 2;
const OP_FSYNC = 3;
const OP_PUNCH = 4;
const OP_ZERO_RANGE = 5;
const OP_ZERO_WRITE = 6;

export interface FileChannelStats {
  engine: EngineKind;
  direct: boolean;
  /** Operations handed to the engine (SQEs, or syscalls in the fallback). */
  submitted: number;
  /** io_uring_enter calls. */
  enters: number;
  reads: number;
  writes: number;
  /** FLUSHes that completed an fdatasync (IORING_OP_FSYNC + IORING_FSYNC_DATASYNC). */
  fdatasyncs: number;
  unmaps: number;
  writeZeroes: number;
  /** WRITE_ZEROES done by writing a zero buffer (no FALLOC_FL_ZERO_RANGE). */
  zeroWrites: number;
  /** READ/WRITE through io_uring fixed buffers (guest memory on hugepages, fixed-buffers.ts). */
  fixedIos: number;
  /** READ/WRITE that went through a bounce buffer. */
  bounced: number;
  bounceBuffers: number;
  /** Short reads/writes continued for the remainder. */
  shortIos: number;
  retries: number;
  /** I/O that waited for a free slot. */
  queued: number;
  /** I/O refused with NOMEM because the wait ring was full. */
  rejected: number;
  completed: number;
  failed: number;
}

const loggers = new Map<string, Logger>();

function reactorLogger(level: string): Logger {
  let log = loggers.get(level);
  if (!log) {
    log = pino({ level, base: { module: 'uring' } }, pino.destination({ fd: 2, sync: true }));
    loggers.set(level, log);
  }
  return log;
}

export class FileChannel implements BdevChannel {
  readonly stats: FileChannelStats;
  private readonly spec: FileChannelSpec;
  private readonly log: Logger;
  private readonly engine: Engine;
  /** O_DIRECT on io_uring: guest memory on hugepages is registered as fixed buffers. */
  private readonly fixed: FixedBuffers | undefined;
  /** In-memory files: READ/WRITE copy from/to the mapping (the engine keeps FLUSH, UNMAP, WRITE_ZEROES). */
  private readonly mapped: MappedFile | undefined;
  private readonly eventFd: number = -1;
  private readonly watch: FdWatchHandle | undefined;
  /** How the channel's io_uring was set up (ring-setup.ts); undefined without one. */
  readonly ringSetup: RingSetupName | undefined;
  private readonly fd: number;
  /** Alignment passed to prepRw (0 = buffered, anything goes). */
  private readonly align: number;
  private readonly depth: number;
  private readonly capacity: number;

  private readonly slotIo: Array<BdevIo | undefined>;
  private readonly slotOp: Uint8Array;
  private readonly slotDone: Float64Array;
  private readonly slotChunk: Float64Array;
  private readonly slotBounce: Int32Array;
  private readonly slotRetries: Uint8Array;
  private readonly freeSlots: Int32Array;
  private freeCount: number;
  private inFlight = 0;

  private readonly waiting: Array<BdevIo | undefined>;
  private waitHead = 0;
  private waitCount = 0;
  private draining = false;

  private readonly bounce: IoVecs[] = [];
  private readonly freeBounce: Int32Array;
  private freeBounceCount = 0;
  private zero: IoVecs | undefined;
  private zeroRangeOk = true;

  private readonly cqes: Int32Array;
  private pendingSqes = 0;
  private submitScheduled = false;
  private readonly flushFn = () => this.flush();
  private closed = false;
  private loggedFailures = 0;

  constructor(spec: ChannelSpec) {
    const s = spec as FileChannelSpec;
    this.spec = s;
    this.fd = s.fd;
    this.log = reactorLogger(s.logLevel ?? 'info').child({ bdev: s.name });
    const depth = Math.max(1, Math.floor(s.depth ?? FILE_IO_DEFAULTS.depth));
    this.depth = depth;
    this.capacity = s.blockSize * s.numBlocks;
    this.align = s.direct ? s.dioAlign : 0;

    let engine: Engine | undefined;
    if (s.inline === true) {
      engine = new SyncEngine('inline');
      if (s.mapped !== undefined) this.mapped = new MappedFile(s.mapped);
    } else if (s.useUring !== false) {
      const ring = new uringNative.Uring(depth, FILE_IO_DEFAULTS.maxIov);
      const { rc, setup } = openRing(ring);
      if (rc === 0) {
        engine = new UringEngine(ring);
        this.ringSetup = setup;
      } else {
        ring.close();
        this.log.warn(`io_uring_queue_init(${depth}) failed (${errnoName(rc)}): falling back to synchronous preadv/pwritev on this reactor`);
      }
    } else {
      this.log.info('io_uring disabled (VHOSTD_NO_URING): synchronous preadv/pwritev on this reactor');
    }
    this.engine = engine ?? new SyncEngine('sync');
    if (engine instanceof UringEngine && this.align > 0) this.fixed = new FixedBuffers(engine.ring, this.log);

    this.slotIo = new Array<BdevIo | undefined>(depth).fill(undefined);
    this.slotOp = new Uint8Array(depth);
    this.slotDone = new Float64Array(depth);
    this.slotChunk = new Float64Array(depth);
    this.slotBounce = new Int32Array(depth).fill(-1);
    this.slotRetries = new Uint8Array(depth);
    this.freeSlots = new Int32Array(depth);
    for (let i = 0; i < depth; i++) this.freeSlots[i] = depth - 1 - i;
    this.freeCount = depth;
    this.freeBounce = new Int32Array(depth);
    this.waiting = new Array<BdevIo | undefined>(Math.max(1, s.backlog ?? FILE_IO_DEFAULTS.backlog)).fill(undefined);
    this.cqes = new Int32Array(2 * depth);

    this.stats = {
      engine: this.engineKind,
      direct: s.direct,
      submitted: 0,
      enters: 0,
      reads: 0,
      writes: 0,
      fdatasyncs: 0,
      unmaps: 0,
      writeZeroes: 0,
      zeroWrites: 0,
      fixedIos: 0,
      bounced: 0,
      bounceBuffers: 0,
      shortIos: 0,
      retries: 0,
      queued: 0,
      rejected: 0,
      completed: 0,
      failed: 0,
    };

    if (this.engine instanceof UringEngine) {
      const efd = this.engine.ring.eventFd();
      this.eventFd = efd;
      this.watch = new native.FdWatch(efd, () => this.onEvent());
      this.watch.start();
    }
    this.log.debug({ engine: this.engine.kind, ringSetup: this.ringSetup, depth, direct: s.direct, fd: s.fd }, `channel opened on ${s.filename}`);
  }

  get engineKind(): EngineKind {
    return this.mapped ? 'mapped' : this.engine.kind;
  }

  /** I/O holding a slot (in the kernel, or between chunks). */
  get active(): number {
    return this.inFlight;
  }

  submit(io: BdevIo): void {
    if (this.closed) return io.complete(IoStatus.FAILED);
    if (this.waitCount > 0 || this.freeCount === 0) return this.enqueue(io);
    this.start(io);
  }

  /** Called by the reactor every poll pass: submits what the pass prepared, then reaps. */
  poll(): number {
    this.fixed?.poll();
    if (this.submitScheduled) this.flush();
    return this.reapAll();
  }

  private enqueue(io: BdevIo): void {
    const cap = this.waiting.length;
    if (this.waitCount === cap) {
      this.stats.rejected++;
      if (this.stats.rejected === 1) this.log.warn(`more than ${cap} I/O waiting for the io_uring: refusing with NOMEM (raise VHOSTD_URING_BACKLOG)`);
      return io.complete(IoStatus.NOMEM);
    }
    this.waiting[(this.waitHead + this.waitCount) % cap] = io;
    this.waitCount++;
    this.stats.queued++;
  }

  /** Starts waiting I/O while slots are free (not re-entered from completions it causes). */
  private drainWaiting(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.waitCount > 0 && this.freeCount > 0 && !this.closed) {
        const io = this.waiting[this.waitHead] as BdevIo;
        this.waiting[this.waitHead] = undefined;
        this.waitHead = (this.waitHead + 1) % this.waiting.length;
        this.waitCount--;
        this.start(io);
      }
    } finally {
      this.draining = false;
    }
  }

  private takeSlot(io: BdevIo, op: number): number {
    const s = this.freeSlots[--this.freeCount];
    this.slotIo[s] = io;
    this.slotOp[s] = op;
    this.slotDone[s] = 0;
    this.slotChunk[s] = 0;
    this.slotRetries[s] = 0;
    this.inFlight++;
    return s;
  }

  private start(io: BdevIo): void {
    const s = this.spec;
    if (io.type !== IoType.FLUSH && (io.offset < 0 || io.offset + io.length > this.capacity)) {
      return this.failNow(io, `I/O at ${io.offset}+${io.length} is beyond the end of the bdev (${this.capacity} bytes)`);
    }
    switch (io.type) {
      case IoType.READ:
      case IoType.WRITE: {
        if (io.type === IoType.WRITE && s.readonly) return this.failNow(io, 'write to a read-only bdev');
        if (io.length === 0) return io.complete(IoStatus.SUCCESS);
        if (io.type === IoType.READ) this.stats.reads++;
        else this.stats.writes++;
        if (this.mapped) return this.copyMapped(io, this.mapped);
        return this.issueRw(this.takeSlot(io, OP_RW));
      }
      case IoType.FLUSH: {
        const slot = this.takeSlot(io, OP_FSYNC);
        return this.prepared(slot, this.engine.prepFsync(slot, this.fd));
      }
      case IoType.UNMAP:
      case IoType.WRITE_ZEROES: {
        const unmap = io.type === IoType.UNMAP;
        if (!s.discard || s.readonly) return this.failNow(io, `${unmap ? 'UNMAP' : 'WRITE_ZEROES'} is not supported by this bdev`);
        if (io.length === 0) return io.complete(IoStatus.SUCCESS);
        if (s.blockDevice) return this.blockRange(io, unmap);
        if (unmap) {
          const slot = this.takeSlot(io, OP_PUNCH);
          const mode = fileConst.FALLOC_FL_PUNCH_HOLE | fileConst.FALLOC_FL_KEEP_SIZE;
          return this.prepared(slot, this.engine.prepFallocate(slot, this.fd, mode, io.offset, io.length));
        }
        if (!this.zeroRangeOk) {
          this.stats.zeroWrites++;
          return this.issueZero(this.takeSlot(io, OP_ZERO_WRITE));
        }
        const slot = this.takeSlot(io, OP_ZERO_RANGE);
        const mode = fileConst.FALLOC_FL_ZERO_RANGE | fileConst.FALLOC_FL_KEEP_SIZE;
        return this.prepared(slot, this.engine.prepFallocate(slot, this.fd, mode, io.offset, io.length));
      }
      default:
        return this.failNow(io, `I/O type ${io.type} is not supported`);
    }
  }

  /** READ/WRITE of an in-memory file: a copy, completed at once. */
  private copyMapped(io: BdevIo, m: MappedFile): void {
    if (io.type === IoType.READ) m.read(io.iov, io.offset, io.length);
    else m.write(io.iov, io.offset, io.length);
    if (m.lost()) return this.failNow(io, `${this.spec.filename} shrank below the bdev's size (its mapping faulted): I/O fails`);
    this.stats.completed++;
    io.complete(IoStatus.SUCCESS);
  }

  /** Block devices: BLKDISCARD / BLKZEROOUT, synchronous ioctls (io_uring has no such opcode here). */
  private blockRange(io: BdevIo, unmap: boolean): void {
    const rc = unmap ? uringNative.blkDiscard(this.fd, io.offset, io.length) : uringNative.blkZeroout(this.fd, io.offset, io.length);
    this.stats.submitted++;
    if (rc < 0) return this.failNow(io, `${unmap ? 'BLKDISCARD' : 'BLKZEROOUT'} failed: ${errnoName(rc)}`);
    if (unmap) this.stats.unmaps++;
    else this.stats.writeZeroes++;
    this.stats.completed++;
    io.complete(IoStatus.SUCCESS);
  }

  /** Queues READ/WRITE for the remainder of the I/O in slot s: zero-copy, or via its bounce buffer. */
  private issueRw(s: number): void {
    const io = this.slotIo[s] as BdevIo;
    const done = this.slotDone[s];
    const rem = io.length - done;
    const write = io.type === IoType.WRITE;
    if (this.slotOp[s] === OP_RW) {
      const iov = io.iov;
      let rc: number;
      if (iov.count === 1 && done === 0 && iov.lens[0] === rem) {
        const buf = iov.bufs[0];
        const off = iov.offs[0];
        const fixed = this.fixed;
        const index = fixed === undefined ? -1 : fixed.indexFor(buf, off, rem);
        if (index >= 0) {
          rc = (fixed as FixedBuffers).ring.prepRwFixed(write, s, this.fd, io.offset, buf, off, rem, this.align, index);
          if (rc === 0) this.stats.fixedIos++;
        } else {
          rc = this.engine.prepRw1(write, s, this.fd, io.offset, buf, off, rem, this.align);
        }
      } else {
        rc = this.engine.prepRw(write, s, this.fd, io.offset + done, iov.bufs, iov.offs, iov.lens, iov.count, done, rem, this.align);
      }
      if (rc !== -EINVAL && rc !== -E2BIG) {
        this.slotChunk[s] = rem;
        return this.prepared(s, rc);
      }
      // Not aligned for O_DIRECT, or more segments than a slot holds: use a bounce buffer.
      this.slotOp[s] = OP_BOUNCE;
      this.slotBounce[s] = this.takeBounce();
      this.stats.bounced++;
    }
    const b = this.bounce[this.slotBounce[s]];
    const chunk = Math.min(rem, b.bufs[0].length);
    if (write) gatherRange(io.iov, done, b.bufs[0], 0, chunk);
    this.slotChunk[s] = chunk;
    this.prepared(s, this.engine.prepRw1(write, s, this.fd, io.offset + done, b.bufs[0], 0, chunk, 0));
  }

  /** WRITE_ZEROES without FALLOC_FL_ZERO_RANGE: writes the zero buffer over the range, chunk by chunk. */
  private issueZero(s: number): void {
    const io = this.slotIo[s] as BdevIo;
    const z = (this.zero ??= this.alignedVec(FILE_IO_DEFAULTS.zeroBytes));
    const done = this.slotDone[s];
    const chunk = Math.min(io.length - done, z.bufs[0].length);
    this.slotChunk[s] = chunk;
    this.prepared(s, this.engine.prepRw1(true, s, this.fd, io.offset + done, z.bufs[0], 0, chunk, 0));
  }

  private alignedVec(size: number): IoVecs {
    const v = new IoVecs(1);
    v.push(allocAligned(size, Math.max(4096, this.spec.dioAlign)), 0, size);
    return v;
  }

  private takeBounce(): number {
    if (this.freeBounceCount > 0) return this.freeBounce[--this.freeBounceCount];
    // At most one per slot, so the pool never runs dry; buffers are kept for reuse.
    this.bounce.push(this.alignedVec(FILE_IO_DEFAULTS.bounceBytes));
    this.stats.bounceBuffers++;
    return this.bounce.length - 1;
  }

  /** After a prep: count it and schedule the submission, or fail the I/O if it could not be queued. */
  private prepared(s: number, rc: number): void {
    if (rc < 0) return this.finish(s, IoStatus.FAILED, `could not queue the operation: ${errnoName(rc)}`);
    this.stats.submitted++;
    if (this.engine.synchronous) return this.onCompletion(s, this.engine.result);
    this.pendingSqes++;
    if (!this.submitScheduled) {
      this.submitScheduled = true;
      queueMicrotask(this.flushFn);
    }
  }

  /** Submits everything prepared since the last call (one io_uring_enter per batch). */
  private flush(): void {
    this.submitScheduled = false;
    if (this.pendingSqes === 0 || this.closed) return;
    const rc = this.engine.submit();
    this.stats.enters++;
    if (rc >= 0) this.pendingSqes = Math.max(0, this.pendingSqes - rc);
    if (rc < 0 || this.pendingSqes > 0) {
      // -EAGAIN/-EBUSY: the kernel is short of resources; try again on the next turn.
      if (rc < 0 && rc !== -EAGAIN && rc !== -Errno.EBUSY) this.log.warn(`io_uring_submit failed: ${errnoName(rc)}`);
      if (!this.submitScheduled) {
        this.submitScheduled = true;
        setImmediate(this.flushFn);
      }
    }
  }

  private onEvent(): void {
    if (this.eventFd >= 0) native.eventfdRead(this.eventFd);
    // Woken outside a poll pass: completions are timed now, not at the pass before the sleep.
    refreshClock();
    this.reapAll();
    if (this.pendingSqes > 0 && !this.submitScheduled) this.flush();
  }

  /** Processes every available completion; returns how many. */
  private reapAll(): number {
    let total = 0;
    for (;;) {
      const n = this.engine.reap(this.cqes, this.depth);
      if (n <= 0) break;
      for (let i = 0; i < n; i++) this.onCompletion(this.cqes[2 * i], this.cqes[2 * i + 1]);
      total += n;
    }
    return total;
  }

  private onCompletion(s: number, res: number): void {
    const io = this.slotIo[s];
    if (io === undefined) return;
    switch (this.slotOp[s]) {
      case OP_RW:
      case OP_BOUNCE:
      case OP_ZERO_WRITE: {
        if (res < 0) {
          if ((res === -EAGAIN || res === -EINTR) && this.slotRetries[s] < FILE_IO_DEFAULTS.maxRetries) {
            this.slotRetries[s]++;
            this.stats.retries++;
            return this.continueRw(s);
          }
          return this.finish(s, IoStatus.FAILED, `${this.opName(s)} at ${io.offset + this.slotDone[s]} failed: ${errnoName(res)}`);
        }
        if (res === 0) {
          // Nothing transferred for a non-empty request: end of file (the file shrank). Never
          // report the I/O done when part of it was not.
          return this.finish(s, IoStatus.FAILED, `${this.opName(s)} at ${io.offset + this.slotDone[s]}: end of file`);
        }
        if (this.slotOp[s] === OP_BOUNCE && io.type === IoType.READ) {
          scatterRange(io.iov, this.slotDone[s], this.bounce[this.slotBounce[s]].bufs[0], 0, res);
        }
        if (res < this.slotChunk[s]) this.stats.shortIos++;
        this.slotDone[s] += res;
        if (this.slotDone[s] < io.length) return this.continueRw(s);
        if (this.slotOp[s] === OP_ZERO_WRITE) this.stats.writeZeroes++;
        return this.finish(s, IoStatus.SUCCESS);
      }
      case OP_FSYNC:
        if (res < 0) return this.finish(s, IoStatus.FAILED, `fdatasync failed: ${errnoName(res)}`);
        this.stats.fdatasyncs++;
        return this.finish(s, IoStatus.SUCCESS);
      case OP_PUNCH:
        if (res < 0) return this.finish(s, IoStatus.FAILED, `fallocate(PUNCH_HOLE) at ${io.offset}+${io.length} failed: ${errnoName(res)}`);
        this.stats.unmaps++;
        return this.finish(s, IoStatus.SUCCESS);
      case OP_ZERO_RANGE:
        if (res === -EOPNOTSUPP || res === -Errno.ENOTSUP) {
          this.zeroRangeOk = false;
          this.log.info(`fallocate(ZERO_RANGE) is not supported on ${this.spec.filename}: WRITE_ZEROES writes zeros`);
          this.slotOp[s] = OP_ZERO_WRITE;
          this.stats.zeroWrites++;
          return this.issueZero(s);
        }
        if (res < 0) return this.finish(s, IoStatus.FAILED, `fallocate(ZERO_RANGE) at ${io.offset}+${io.length} failed: ${errnoName(res)}`);
        this.stats.writeZeroes++;
        return this.finish(s, IoStatus.SUCCESS);
    }
  }

  private continueRw(s: number): void {
    if (this.slotOp[s] === OP_ZERO_WRITE) this.issueZero(s);
    else this.issueRw(s);
  }

  private opName(s: number): string {
    if (this.slotOp[s] === OP_ZERO_WRITE) return 'zero write';
    return this.slotIo[s]?.type === IoType.READ ? 'read' : 'write';
  }

  private failNow(io: BdevIo, reason: string): void {
    this.stats.failed++;
    this.logFailure(reason);
    io.complete(IoStatus.FAILED);
  }

  private logFailure(reason: string): void {
    // The first failures in full; then one line per thousand so a dying disk cannot flood the log.
    if (this.loggedFailures < 20 || this.stats.failed % 1000 === 0) this.log.warn({ failed: this.stats.failed }, reason);
    this.loggedFailures++;
  }

  private finish(s: number, status: IoStatus, reason?: string): void {
    const io = this.slotIo[s] as BdevIo;
    this.slotIo[s] = undefined;
    const b = this.slotBounce[s];
    if (b >= 0) {
      this.freeBounce[this.freeBounceCount++] = b;
      this.slotBounce[s] = -1;
    }
    this.freeSlots[this.freeCount++] = s;
    this.inFlight--;
    if (status === IoStatus.SUCCESS) this.stats.completed++;
    else {
      this.stats.failed++;
      if (reason) this.logFailure(reason);
    }
    io.complete(status);
    if (this.waitCount > 0) this.drainWaiting();
  }

  /**
   * Waits (bounded) for I/O in the kernel and completes it, fails what still waits for a slot,
   * then tears the ring down. The device stops its queues before, so normally nothing is left.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch?.close();
    const deadline = Date.now() + FILE_IO_DEFAULTS.closeTimeoutMs;
    for (;;) {
      // Continuations (next chunk, remainder of a short I/O) prepared while reaping go in too.
      if (this.pendingSqes > 0 && this.engine.kind === 'io_uring') {
        this.engine.submit();
        this.pendingSqes = 0;
      }
      const n = this.reapAll();
      if (this.inFlight === 0) break;
      if (n > 0) continue;
      if (!(this.engine instanceof UringEngine)) break;
      const left = deadline - Date.now();
      if (left <= 0 || this.engine.ring.wait(left) < 0) break;
    }
    if (this.inFlight > 0) this.log.error(`${this.inFlight} I/O still in flight at close: failing them`);
    for (let s = 0; s < this.depth; s++) {
      const io = this.slotIo[s];
      if (io !== undefined) this.finish(s, IoStatus.FAILED);
    }
    while (this.waitCount > 0) {
      const io = this.waiting[this.waitHead] as BdevIo;
      this.waiting[this.waitHead] = undefined;
      this.waitHead = (this.waitHead + 1) % this.waiting.length;
      this.waitCount--;
      io.complete(IoStatus.FAILED);
    }
    this.engine.close();
  }
}
