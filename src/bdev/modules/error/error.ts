// error vbdev (SPDK module/bdev/error): EE_<base>, a pass-through bdev over a base bdev into which
// bdev_error_inject_error injects failures. Per I/O type (read, write, flush, unmap) it holds an
// error type, how many I/Os are still to be hit (`num`), the per-channel queue depth from which
// injection starts, and the corrupt_data offset/value. That state is a small SharedArrayBuffer in
// the channel spec: the control thread writes it, every reactor reads it with Atomics, and each
// injected error takes one from `num` with a compare-and-swap, so exactly `num` I/Os are hit in
// total however many reactors race for them.
//
// Error types as SPDK's vbdev_error.c: failure (complete FAILED without touching the base), nomem
// (complete NOMEM: the bdev layer retries), pending (hold the I/O; SPDK completes held I/O FAILED on a
// bdev reset, which vhostd does not have: here `bdev_error_inject_error NAME clear ...`, or closing
// the channel, completes them FAILED), corrupt_data (writes: XOR one byte of the data before it
// reaches the base; reads: XOR one byte of what the base returned).
import type { Bdev, BdevChannel, ChannelSpec, ConfigCall } from '../../bdev.js';
import type { OpenSpec } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType, type IoVecs } from '../../io.js';
import { type ChildIo, PassThroughBdev, PassThroughChannel, type PassThroughSpec, uuidSha1 } from '../../vbdev.js';

/** SPDK's BDEV_PART_NAMESPACE_UUID (lib/bdev/part.c): error bdevs are bdev parts. */
export const PART_NAMESPACE_UUID = '976b899e-3e1e-4d71-ab69-c2b08e9df8b8';
export const ERROR_PRODUCT_NAME = 'Error Injection Disk';
export const ERROR_BDEV_PREFIX = 'EE_';

/** SPDK's enum vbdev_error_type (0: none). */
export const ErrorType = { NONE: 0, FAILURE: 1, PENDING: 2, CORRUPT_DATA: 3, NOMEM: 4 } as const;
export type ErrorType = (typeof ErrorType)[keyof typeof ErrorType];
export const ERROR_TYPE_NAMES: Record<string, ErrorType> = {
  failure: ErrorType.FAILURE,
  pending: ErrorType.PENDING,
  corrupt_data: ErrorType.CORRUPT_DATA,
  nomem: ErrorType.NOMEM,
};

/** The I/O types SPDK injects into (vbdev_error_get_error_type), by IoType value. */
export const INJECTABLE_IO: readonly IoType[] = [IoType.READ, IoType.WRITE, IoType.FLUSH, IoType.UNMAP];
/** bdev_error_inject_error's io_type: one type, every type, or 'clear' (num = 0 everywhere). */
export const IO_TYPE_NAMES: Record<string, IoType | 'all' | 'clear'> = {
  read: IoType.READ,
  write: IoType.WRITE,
  flush: IoType.FLUSH,
  unmap: IoType.UNMAP,
  all: 'all',
  clear: 'clear',
};

// Shared layout: Int32 words [ioType * 4 + field], then the pending-release epoch, then Float64
// corrupt offsets per I/O type.
const TYPE = 0;
const NUM = 1;
const QD = 2;
const VALUE = 3;
const KINDS = 4;
const EPOCH = KINDS * 4;
const I32_WORDS = EPOCH + 4; // padded so the Float64 part is 8-byte aligned
const OFFSETS_AT = I32_WORDS * 4;

export interface InjectOptions {
  ioType: IoType | 'all' | 'clear';
  errorType: ErrorType;
  num: number;
  queueDepth: number;
  corruptOffset: number;
  corruptValue: number;
}

export interface ErrorSpec extends PassThroughSpec {
  module: 'error';
  inject: SharedArrayBuffer;
}

/** The injection state as seen from the control thread. */
export class ErrorInjection {
  readonly buffer = new SharedArrayBuffer(OFFSETS_AT + KINDS * 8);
  private readonly i32 = new Int32Array(this.buffer, 0, I32_WORDS);
  private readonly offsets = new Float64Array(this.buffer, OFFSETS_AT, KINDS);

  /** vbdev_error_inject_error: set one type or all, or clear `num` everywhere. */
  inject(o: InjectOptions): void {
    if (o.ioType === 'clear') {
      for (const t of INJECTABLE_IO) Atomics.store(this.i32, t * 4 + NUM, 0);
      // vhostd has no bdev reset: clearing also lets held ("pending") I/O fail.
      Atomics.add(this.i32, EPOCH, 1);
      return;
    }
    for (const t of o.ioType === 'all' ? INJECTABLE_IO : [o.ioType]) {
      // Parameters first, the count last: a reactor that sees the count sees them too.
      Atomics.store(this.i32, t * 4 + NUM, 0);
      Atomics.store(this.i32, t * 4 + TYPE, o.errorType);
      Atomics.store(this.i32, t * 4 + QD, Math.min(o.queueDepth, 0x7fffffff));
      Atomics.store(this.i32, t * 4 + VALUE, o.corruptValue);
      this.offsets[t] = o.corruptOffset;
      Atomics.store(this.i32, t * 4 + NUM, Math.min(o.num, 0x7fffffff));
    }
  }

  /** What is left to inject for one I/O type. */
  state(t: IoType): { errorType: ErrorType; num: number; queueDepth: number } {
    return {
      errorType: Atomics.load(this.i32, t * 4 + TYPE) as ErrorType,
      num: Atomics.load(this.i32, t * 4 + NUM),
      queueDepth: Atomics.load(this.i32, t * 4 + QD),
    };
  }
}

/** SPDK's part UUID: SHA-1 name-based on the part namespace and {base UUID bytes, offset 0, num_blocks}. */
function partUuid(base: Bdev): string {
  const name = Buffer.alloc(32);
  Buffer.from(base.uuid.replaceAll('-', ''), 'hex').copy(name, 0);
  name.writeBigUInt64LE(0n, 16); // offset_blocks (uint64s in host order, little-endian)
  name.writeBigUInt64LE(BigInt(base.numBlocks), 24);
  return uuidSha1(PART_NAMESPACE_UUID, name);
}

export class ErrorBdev extends PassThroughBdev {
  readonly module = 'error';
  readonly productName = ERROR_PRODUCT_NAME;
  readonly injection = new ErrorInjection();

  /** Named EE_<base>; without `uuid`, the UUID is SPDK's part UUID (partUuid). */
  constructor(
    base: Bdev,
    private readonly givenUuid: string | undefined,
    releaseBase: () => void,
  ) {
    super(`${ERROR_BDEV_PREFIX}${base.name}`, base, givenUuid ?? partUuid(base), releaseBase);
  }

  channelSpec(open: (base: Bdev) => OpenSpec): ErrorSpec {
    return { ...this.passThroughSpec(open), module: 'error', inject: this.injection.buffer };
  }

  driverSpecific(): Record<string, unknown> {
    return { error_disk: { base_bdev: this.base.name } };
  }

  writeConfig(): ConfigCall {
    // SPDK saves the create call's own params: the uuid only when one was given.
    const params: Record<string, unknown> = { base_name: this.base.name };
    if (this.givenUuid !== undefined) params.uuid = this.givenUuid;
    return { method: 'bdev_error_create', params };
  }
}

// ---------------------------------------------------------------------------------------------
// Reactor side.

/** XORs the byte at `offset` of the scatter list with `value` (SPDK: the first iov that reaches it). */
function corrupt(iov: IoVecs, offset: number, value: number): void {
  for (let i = 0; i < iov.count; i++) {
    if (iov.lens[i] > offset) {
      iov.bufs[i][iov.offs[i] + offset] ^= value;
      return;
    }
    offset -= iov.lens[i];
  }
}

/** How often a channel holding "pending" I/O looks for a release (`clear`). */
const PENDING_CHECK_MS = 20;

export class ErrorChannel extends PassThroughChannel {
  private readonly i32: Int32Array;
  private readonly offsets: Float64Array;
  /** I/O submitted to the base and not yet completed (SPDK's io_inflight, for queue_depth). */
  private inflight = 0;
  private readonly pending: BdevIo[] = [];
  private pendingEpoch: number;
  private pendingTimer: NodeJS.Timeout | undefined;

  constructor(spec: ChannelSpec, open: (spec: OpenSpec) => BdevChannel) {
    super(spec, open);
    const s = spec as ErrorSpec;
    this.i32 = new Int32Array(s.inject, 0, I32_WORDS);
    this.offsets = new Float64Array(s.inject, OFFSETS_AT, KINDS);
    this.pendingEpoch = Atomics.load(this.i32, EPOCH);
  }

  /** Takes one injection of type t if any is left: exactly `num` succeed across all reactors. */
  private take(t: number): boolean {
    const at = t * 4 + NUM;
    let n = Atomics.load(this.i32, at);
    while (n > 0) {
      const seen = Atomics.compareExchange(this.i32, at, n, n - 1);
      if (seen === n) return true;
      n = seen;
    }
    return false;
  }

  override submit(io: BdevIo): void {
    if (this.closed) return io.complete(IoStatus.FAILED);
    if (this.pending.length > 0) this.checkRelease();
    const t = io.type;
    if (t <= IoType.UNMAP) {
      const w = t * 4;
      const errorType = Atomics.load(this.i32, w + TYPE);
      if (errorType !== ErrorType.NONE && Atomics.load(this.i32, w + NUM) > 0 && this.inflight >= Atomics.load(this.i32, w + QD)) {
        switch (errorType) {
          case ErrorType.FAILURE:
            if (this.take(t)) return io.complete(IoStatus.FAILED);
            break;
          case ErrorType.NOMEM:
            if (this.take(t)) return io.complete(IoStatus.NOMEM);
            break;
          case ErrorType.PENDING:
            if (this.take(t)) return this.hold(io);
            break;
          case ErrorType.CORRUPT_DATA:
            // Reads are corrupted on the way back (childDone).
            if (t === IoType.WRITE && this.take(t)) corrupt(io.iov, this.offsets[t], Atomics.load(this.i32, w + VALUE));
            break;
        }
      }
    }
    this.inflight++;
    super.submit(io);
  }

  override childDone(c: ChildIo, status: IoStatus): void {
    this.inflight--;
    if (status === IoStatus.SUCCESS && c.type === IoType.READ) {
      const w = IoType.READ * 4;
      if (Atomics.load(this.i32, w + TYPE) === ErrorType.CORRUPT_DATA && this.take(IoType.READ)) {
        corrupt(c.iov, this.offsets[IoType.READ], Atomics.load(this.i32, w + VALUE));
      }
    }
    super.childDone(c, status);
  }

  private hold(io: BdevIo): void {
    // Only a `clear` from now on releases it.
    if (this.pending.length === 0) this.pendingEpoch = Atomics.load(this.i32, EPOCH);
    this.pending.push(io);
    if (!this.pendingTimer) {
      this.pendingTimer = setInterval(() => this.checkRelease(), PENDING_CHECK_MS);
    }
  }

  /** Fails the held I/O once `clear` was injected after they were held. */
  private checkRelease(): void {
    const epoch = Atomics.load(this.i32, EPOCH);
    if (epoch === this.pendingEpoch) return;
    this.pendingEpoch = epoch;
    this.failPending();
  }

  private failPending(): void {
    if (this.pendingTimer) clearInterval(this.pendingTimer);
    this.pendingTimer = undefined;
    const held = this.pending.splice(0);
    for (const io of held) io.complete(IoStatus.FAILED);
  }

  override poll(): number {
    if (this.pending.length > 0) this.checkRelease();
    return super.poll();
  }

  protected override onClose(): void {
    this.failPending();
  }
}
