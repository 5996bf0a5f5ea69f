// ImageFile over node:fs/promises, for the control thread only: validating an image and its
// backing chain at bdev_qcow2_create, and writing new images (bdev_qcow2_create_image). The
// reactors serve images through io_uring instead (uring-file.ts). The engine's tests use it too.
import { type FileHandle, open } from 'node:fs/promises';
import type { ImageFile } from './image-file.js';

export class FsImageFile implements ImageFile {
  private constructor(
    private readonly fh: FileHandle,
    private length: number,
    private readonly sync: boolean,
  ) {}

  /**
   * Opens `path`: read-only, or `writable`, or `create` a new file (refused when it exists: 'wx').
   * `sync: false` makes flush() a no-op (tests). Rejects with the node:fs error (ENOENT, EEXIST, ...).
   */
  static async open(path: string, opts: { create?: boolean; writable?: boolean; sync?: boolean } = {}): Promise<FsImageFile> {
    const fh = await open(path, opts.create ? 'wx' : opts.writable ? 'r+' : 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: st.isDirectory() ? 'EISDIR' : 'EINVAL' });
      return new FsImageFile(fh, st.size, opts.sync ?? true);
    } catch (e) {
      await fh.close();
      throw e;
    }
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
