// ImageFile over node:fs/promises, for the qcow2 tests (the engine itself has no fs calls).
import { type FileHandle, open } from 'node:fs/promises';
import type { ImageFile } from '../../../src/bdev/modules/qcow2/image-file.js';

export class FsImageFile implements ImageFile {
  private constructor(
    private readonly fh: FileHandle,
    private length: number,
    private readonly sync: boolean,
  ) {}

  /** Opens `path` (created when `create`); `sync: false` makes flush() a no-op (faster tests). */
  static async open(path: string, opts: { readonly?: boolean; create?: boolean; sync?: boolean } = {}): Promise<FsImageFile> {
    const fh = await open(path, opts.readonly ? 'r' : opts.create ? 'w+' : 'r+');
    const st = await fh.stat();
    return new FsImageFile(fh, st.size, opts.sync ?? false);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.byteLength) {
      const { bytesRead } = await this.fh.read(buf, done, buf.byteLength - done, offset + done);
      if (bytesRead === 0) {
        buf.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.byteLength) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.byteLength - done, offset + done);
      done += bytesWritten;
    }
    this.length = Math.max(this.length, offset + buf.byteLength);
  }

  async flush(): Promise<void> {
    if (this.sync) await this.fh.datasync();
  }

  size(): number {
    return this.length;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
