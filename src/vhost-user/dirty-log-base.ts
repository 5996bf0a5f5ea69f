// Live migration's dirty log on the control thread: the log QEMU hands over with SET_LOG_BASE
// (mapped once, shared with the reactors like guest memory) and the LOG_ALL feature. The data
// plane marks the log while both are there; a new log base (guest memory grew) replaces the old
// one once every reactor switched.
import { fstatSync } from 'node:fs';
import type { Logger } from 'pino';
import type { DirtyLogShare } from '../memory/dirty-log.js';
import { mmapShared, native } from '../native/index.js';
import type { DataPlane } from './data-plane.js';
import { type LogBase, ProtocolError } from './protocol.js';

/** 1 GiB of log covers 32 TiB of guest memory; anything larger is not a log. */
const MAX_LOG_BYTES = 1 << 30;

export class DirtyLogBase {
  private share: DirtyLogShare | undefined;
  private mappingId: number | undefined;
  private logAll = false;
  /** The log the data plane marks now (share while logAll), as last sent. */
  private published: DirtyLogShare | undefined;

  constructor(
    private readonly plane: DataPlane,
    private readonly log: Logger,
  ) {}

  get active(): boolean {
    return this.published !== undefined;
  }

  /** SET_LOG_BASE: maps the log in `fd` (always consumed) and, if logging, switches to it. */
  async setBase(base: LogBase, fd: number): Promise<void> {
    let share: DirtyLogShare;
    let mappingId: number;
    try {
      const { mmapSize: size, mmapOffset: offset } = base;
      if (size === 0 || size > MAX_LOG_BYTES) throw new ProtocolError(`SET_LOG_BASE: log of ${size} bytes (1..${MAX_LOG_BYTES} allowed)`);
      let fileSize: number;
      try {
        fileSize = fstatSync(fd).size;
      } catch (e) {
        throw new ProtocolError(`SET_LOG_BASE: cannot stat the log fd: ${(e as Error).message}`);
      }
      if (offset + size > fileSize) throw new ProtocolError(`SET_LOG_BASE: log at ${offset} (+${size}) is beyond the end of its ${fileSize}-byte file`);
      try {
        // Mapped from 0 (mmap needs an aligned offset); the log starts at `offset` in the view.
        const m = mmapShared(fd, offset + size, 0);
        share = { buffer: m.buffer, base: offset, size };
        mappingId = m.id;
      } catch (e) {
        throw new ProtocolError(`SET_LOG_BASE: cannot map the log: ${(e as Error).message}`);
      }
    } finally {
      native.close(fd);
    }
    const old = this.mappingId;
    this.share = share;
    this.mappingId = mappingId;
    this.log.info({ bytes: share.size, coversGiB: +((share.size * 8 * 4096) / 2 ** 30).toFixed(2) }, 'dirty log base set');
    try {
      await this.publish();
    } finally {
      // Anonymous memory from now on: a reactor still holding the old log cannot fault on it.
      if (old !== undefined) native.releaseMapping(old);
    }
  }

  /** SET_FEATURES: LOG_ALL on or off. */
  async setLogAll(on: boolean): Promise<void> {
    this.logAll = on;
    await this.publish();
  }

  private async publish(): Promise<void> {
    const next = this.logAll ? this.share : undefined;
    if (next === this.published) return;
    const was = this.published;
    this.published = next;
    await this.plane.setDirtyLog(next);
    if (next === undefined) this.log.info('dirty logging stopped');
    else if (was === undefined) this.log.info({ bytes: next.size }, 'dirty logging started: the device marks every guest page it writes');
    else this.log.info({ bytes: next.size }, 'dirty logging switched to a new log');
  }

  /** The connection closed: unmaps the log (the reactors let go of the device first). */
  release(): void {
    if (this.mappingId !== undefined) native.releaseMapping(this.mappingId);
    this.mappingId = undefined;
    this.share = undefined;
    this.published = undefined;
  }
}
