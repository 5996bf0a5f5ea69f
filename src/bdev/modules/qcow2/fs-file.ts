// ImageFile over node:fs/promises, for the control thread only: validating an image and its
// backing chain at bdev_qcow2_create, and writing new images (bdev_qcow2_create_image). The
// reactors serve images through io_uring instead (uring-file.ts).
import { type FileHandle, open } from 'node:fs/promises';
import type { ImageFile } from './image-file.js';

export class FsImageFile implements ImageFile {
  private constructor(
    private readonly fh: FileHandle,
    private length: number,
  ) {}

  /**
   * Opens `path`: read-only, or `create` a new file (refused when it exists: 'wx'). Rejects with
   * the node:fs error (code ENOENT, EEXIST, ...).
   */
  static async open(path: string, opts: { create?: boolean } = {}): Promise<FsImageFile> {
    const fh = await open(path, opts.create ? 'wx' : 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: st.isDirectory() ? 'EISDIR' : 'EINVAL' });
      return new FsImageFile(fh, st.size);
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
    await this.fh.datasync();
  }

  size(): number {
    return this.length;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
