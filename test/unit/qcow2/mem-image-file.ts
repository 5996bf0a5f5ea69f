// An in-memory ImageFile for crash and hostile-input tests. It can fail every operation after
// a budget of writes/flushes (a crash), and remembers what was durable at the last flush so a
// test can build "what the disk may hold" after a power loss: everything flushed plus any
// subset of the writes since.
import type { ImageFile } from '../../../src/bdev/modules/qcow2/image-file.js';

export class CrashError extends Error {
  override readonly name = 'CrashError';
}

export class MemImageFile implements ImageFile {
  data: Uint8Array;
  private length: number;
  /** Content at the last flush. */
  private durable: Uint8Array;
  private durableLength: number;
  /** Writes since the last flush, in order. */
  private pending: { offset: number; buf: Uint8Array }[] = [];
  /** Operations (write/flush) left before every operation throws; Infinity: never. */
  budget = Infinity;
  ops = 0;

  constructor(initial: Uint8Array = new Uint8Array(0)) {
    this.data = new Uint8Array(Math.max(initial.byteLength, 1 << 16));
    this.data.set(initial);
    this.length = initial.byteLength;
    this.durable = this.data.slice(0, this.length);
    this.durableLength = this.length;
  }

  private spend(): void {
    if (this.budget <= 0) throw new CrashError('simulated crash');
    this.budget--;
    this.ops++;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    buf.fill(0);
    if (offset < this.length) buf.set(this.data.subarray(offset, Math.min(this.length, offset + buf.byteLength)));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.spend();
    const end = offset + buf.byteLength;
    if (end > this.data.byteLength) {
      const grown = new Uint8Array(Math.max(end, this.data.byteLength * 2));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    this.data.set(buf, offset);
    this.length = Math.max(this.length, end);
    this.pending.push({ offset, buf: buf.slice() });
  }

  async flush(): Promise<void> {
    this.spend();
    this.durable = this.data.slice(0, this.length);
    this.durableLength = this.length;
    this.pending = [];
  }

  size(): number {
    return this.length;
  }

  /** The current content (a process crash: every completed write is there). */
  bytes(): Uint8Array {
    return this.data.slice(0, this.length);
  }

  /** A power loss: the flushed content plus the unflushed writes `keep` selects. */
  powerLoss(keep: (index: number) => boolean): Uint8Array {
    let img = new Uint8Array(Math.max(this.durableLength, ...this.pending.map((w) => w.offset + w.buf.byteLength)));
    img.set(this.durable);
    let len = this.durableLength;
    this.pending.forEach((w, i) => {
      if (!keep(i)) return;
      img.set(w.buf, w.offset);
      len = Math.max(len, w.offset + w.buf.byteLength);
    });
    img = img.slice(0, len);
    return img;
  }
}
