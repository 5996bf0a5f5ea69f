// One vhost-user socket connection: reads bytes and SCM_RIGHTS descriptors, frames messages,
// and hands them one at a time to an async handler (the next waits until the previous is done).
import type { Logger } from 'pino';
import { EAGAIN, type FdWatchHandle, native } from '../native/index.js';
import { errnoName } from '../util/errno.js';
import { FLAG_VERSION, FLAG_VERSION_MASK, HEADER_SIZE, MAX_FDS_PER_MESSAGE, MAX_PAYLOAD, encodeHeader, reqName } from './protocol.js';

export interface Message {
  request: number;
  flags: number;
  payload: DataView;
  fds: number[];
}

const READ_CHUNK = 64 * 1024;

export class VhostUserConnection {
  private readonly watch: FdWatchHandle;
  private readonly readBuf = new Uint8Array(READ_CHUNK);
  private readonly fdsOut = new Int32Array(1 + 2 * MAX_FDS_PER_MESSAGE);
  private pending = new Uint8Array(0);
  private pendingFds: number[] = [];
  private readonly queue: Message[] = [];
  private busy = false;
  closed = false;

  constructor(
    readonly fd: number,
    private readonly handler: (m: Message) => Promise<void>,
    private readonly onClose: (reason: string) => void,
    private readonly log: Logger,
  ) {
    this.watch = new native.FdWatch(fd, () => this.onReadable());
    this.watch.start();
  }

  private onReadable(): void {
    for (;;) {
      if (this.closed) return;
      const n = native.recvMsg(this.fd, this.readBuf, this.fdsOut);
      if (n === -EAGAIN) break;
      if (n < 0) return this.close(`recvmsg failed (${errnoName(n)})`);
      const nfds = this.fdsOut[0];
      const kept = Math.min(nfds, this.fdsOut.length - 1);
      const chunkFds: number[] = [];
      for (let i = 0; i < kept; i++) chunkFds.push(this.fdsOut[1 + i]);
      if (nfds > kept) {
        for (const fd of chunkFds) native.close(fd);
        return this.close(`peer sent ${nfds} file descriptors in one message (at most ${MAX_FDS_PER_MESSAGE * 2})`);
      }
      if (n === 0) return this.close('peer closed the connection');
      const merged = new Uint8Array(this.pending.length + n);
      merged.set(this.pending, 0);
      merged.set(this.readBuf.subarray(0, n), this.pending.length);
      this.pending = merged;
      if (!this.frame(chunkFds)) return;
    }
    this.pump();
  }

  /**
   * Splits complete messages off the pending bytes; false when the stream is unrecoverable.
   * The kernel ends a read right after the data that carried descriptors, so `chunkFds` belong to
   * the message that ends this chunk (or, if it is still partial, to the next one completed).
   */
  private frame(chunkFds: number[]): boolean {
    let off = 0;
    let lastFramed: Message | undefined;
    const buf = this.pending;
    while (buf.length - off >= HEADER_SIZE) {
      const view = new DataView(buf.buffer, buf.byteOffset + off, HEADER_SIZE);
      const request = view.getUint32(0, true);
      const flags = view.getUint32(4, true);
      const size = view.getUint32(8, true);
      if ((flags & FLAG_VERSION_MASK) !== FLAG_VERSION) {
        for (const fd of chunkFds) native.close(fd);
        this.close(`message ${reqName[request] ?? request} has protocol version ${flags & FLAG_VERSION_MASK}, expected 1`);
        return false;
      }
      if (size > MAX_PAYLOAD) {
        for (const fd of chunkFds) native.close(fd);
        this.close(`message ${reqName[request] ?? request} declares a ${size}-byte payload (at most ${MAX_PAYLOAD})`);
        return false;
      }
      if (buf.length - off < HEADER_SIZE + size) break;
      const payload = buf.slice(off + HEADER_SIZE, off + HEADER_SIZE + size);
      lastFramed = { request, flags, payload: new DataView(payload.buffer), fds: this.pendingFds };
      this.queue.push(lastFramed);
      this.pendingFds = [];
      off += HEADER_SIZE + size;
    }
    this.pending = buf.slice(off);
    if (chunkFds.length > 0) {
      if (lastFramed !== undefined && off === buf.length) lastFramed.fds.push(...chunkFds);
      else this.pendingFds.push(...chunkFds);
    }
    // A message carries at most MAX_FDS_PER_MESSAGE; more piling up for an unfinished one would let
    // a peer hold any number of descriptors open in the daemon.
    if (this.pendingFds.length > MAX_FDS_PER_MESSAGE) {
      this.close(`peer sent ${this.pendingFds.length} file descriptors for one unfinished message (at most ${MAX_FDS_PER_MESSAGE})`);
      return false;
    }
    return true;
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const m = this.queue.shift() as Message;
        try {
          await this.handler(m);
        } catch (e) {
          this.close(`handling ${reqName[m.request] ?? m.request} failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    } finally {
      this.busy = false;
    }
  }

  send(request: number, flags: number, payload: Uint8Array, fds: number[] = []): void {
    if (this.closed) return;
    const msg = new Uint8Array(HEADER_SIZE + payload.byteLength);
    msg.set(encodeHeader(request, flags, payload.byteLength), 0);
    msg.set(payload, HEADER_SIZE);
    const n = native.sendMsg(this.fd, msg, fds);
    if (n !== msg.length) this.log.warn({ request: reqName[request], rc: n }, 'short or failed reply write');
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.watch.close();
    native.close(this.fd);
    for (const fd of this.pendingFds) native.close(fd);
    for (const m of this.queue) for (const fd of m.fds) native.close(fd);
    this.queue.length = 0;
    this.onClose(reason);
  }
}
