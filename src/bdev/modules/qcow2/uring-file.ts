// The qcow2 engine's ImageFile on a reactor: byte-addressed reads and writes of the image file as
// internal BdevIos on the uring module's FileChannel (io_uring, or the inline/sync engines), so
// metadata and data go the same way and nothing blocks the reactor.
//
// The FileChannel serves block-sized, in-file requests: this class keeps the file size (bytes
// past it read as zeros, as ImageFile requires; the channel would fail a read past EOF), widens
// reads that O_DIRECT cannot take to the alignment through an aligned buffer, and writes
// unaligned ranges by read-modify-write of the aligned blocks around them (one at a time: two
// RMWs of one block would lose an update). Only metadata writes are ever unaligned (the header's
// autoclear field); guest data is sector aligned. The bdev opens a file O_DIRECT only when its
// size and the guest sector (512) are multiples of the alignment, so aligned reads never cross EOF.
import type { BdevChannel } from '../../bdev.js';
import { type BdevIo, IoStatus, IoType, IoVecs } from '../../io.js';
import { allocAligned } from '../../../native/uring.js';
import type { ImageFile } from './image-file.js';

/** Resubmissions of an internal I/O the channel refused with NOMEM (its backlog was full). */
const NOMEM_RETRIES = 1000;

/** One internal request: a BdevIo over (part of) one buffer, settled through a Promise. */
class FileOp implements BdevIo {
  readonly iov = new IoVecs(1);
  private retries = 0;

  constructor(
    private readonly ch: BdevChannel,
    readonly type: IoType,
    readonly offset: number,
    readonly length: number,
    buf: Uint8Array | undefined,
    private readonly resolve: () => void,
    private readonly reject: (e: Error) => void,
    private readonly what: string,
  ) {
    if (buf !== undefined && length > 0) this.iov.push(buf, 0, length);
  }

  complete(status: IoStatus): void {
    if (status === IoStatus.SUCCESS) return this.resolve();
    if (status === IoStatus.NOMEM && this.retries++ < NOMEM_RETRIES) {
      setImmediate(() => this.ch.submit(this));
      return;
    }
    this.reject(new Error(`${this.what}: ${status === IoStatus.NOMEM ? 'the file channel stayed full' : 'I/O error'} (${opName(this.type)} at ${this.offset}, ${this.length} bytes)`));
  }
}

function opName(t: IoType): string {
  return ['read', 'write', 'flush', 'discard', 'write zeroes'][t] ?? `type ${t}`;
}

export class ChannelImageFile implements ImageFile {
  private length: number;
  private rmwTail: Promise<void> = Promise.resolve();

  /**
   * `align`: the O_DIRECT alignment of the file (0 when buffered); `size`: the file size now;
   * `name` for error messages.
   */
  constructor(
    readonly channel: BdevChannel,
    size: number,
    readonly align: number,
    private readonly name: string,
    private readonly readonly: boolean,
  ) {
    this.length = size;
  }

  size(): number {
    return this.length;
  }

  /** A write that did not go through write() (guest data on the channel) reached `end`. */
  grew(end: number): void {
    if (end > this.length) this.length = end;
  }

  private op(type: IoType, offset: number, buf: Uint8Array | undefined, length: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.channel.submit(new FileOp(this.channel, type, offset, length, buf, resolve, reject, this.name));
    });
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    const n = Math.max(0, Math.min(buf.byteLength, this.length - offset));
    if (n < buf.byteLength) buf.fill(0, n);
    if (n === 0) return;
    const a = this.align;
    if (a === 0 || (offset % a === 0 && n % a === 0)) return this.op(IoType.READ, offset, n === buf.byteLength ? buf : buf.subarray(0, n), n);
    const start = Math.floor(offset / a) * a;
    const end = Math.min(Math.ceil((offset + n) / a) * a, Math.ceil(this.length / a) * a);
    const tmp = allocAligned(end - start, a);
    await this.op(IoType.READ, start, tmp, end - start);
    buf.set(tmp.subarray(offset - start, offset - start + n));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    const len = buf.byteLength;
    if (len === 0) return;
    const a = this.align;
    if (a === 0 || (offset % a === 0 && len % a === 0)) {
      await this.op(IoType.WRITE, offset, buf, len);
      this.grew(offset + len);
      return;
    }
    const rmw = async () => {
      const start = Math.floor(offset / a) * a;
      const end = Math.ceil((offset + len) / a) * a;
      const tmp = allocAligned(end - start, a);
      await this.read(tmp, start);
      tmp.set(buf, offset - start);
      await this.op(IoType.WRITE, start, tmp, end - start);
      this.grew(end);
    };
    const p = this.rmwTail.then(rmw, rmw);
    this.rmwTail = p.catch(() => undefined);
    return p;
  }

  flush(): Promise<void> {
    if (this.readonly) return Promise.resolve();
    return this.op(IoType.FLUSH, 0, undefined, 0);
  }

  /** Punches a hole where the engine freed clusters; advisory: a file system without it is fine. */
  async discard(offset: number, length: number): Promise<void> {
    if (this.readonly || length <= 0) return;
    await this.op(IoType.UNMAP, offset, undefined, length).catch(() => undefined);
  }
}
