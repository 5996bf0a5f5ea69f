// The front-end side of vhost-user (QEMU's role): connect, send requests with descriptors, wait
// for replies. Used by the initiator, the bench and the hostile-input tests.
import { EAGAIN, type FdWatchHandle, check, native } from '../native/index.js';
import { FLAG_NEED_REPLY, FLAG_VERSION, HEADER_SIZE, encodeHeader } from '../vhost-user/protocol.js';

interface Waiter {
  resolve: (payload: DataView) => void;
  reject: (e: Error) => void;
}

export class VhostUserFrontend {
  private readonly watch: FdWatchHandle;
  private readonly readBuf = new Uint8Array(65536);
  private readonly fdsOut = new Int32Array(17);
  private pending = new Uint8Array(0);
  private readonly waiters: Waiter[] = [];
  private closeWaiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly fd: number) {
    this.watch = new native.FdWatch(fd, () => this.onReadable());
    this.watch.start();
  }

  static connect(path: string): VhostUserFrontend {
    return new VhostUserFrontend(check('connect', native.socketConnect(path)));
  }

  private onReadable(): void {
    for (;;) {
      const n = native.recvMsg(this.fd, this.readBuf, this.fdsOut);
      if (n === -EAGAIN) break;
      for (let i = 0; i < this.fdsOut[0] && i < 16; i++) native.close(this.fdsOut[1 + i]);
      if (n <= 0) return this.markClosed();
      const merged = new Uint8Array(this.pending.length + n);
      merged.set(this.pending);
      merged.set(this.readBuf.subarray(0, n), this.pending.length);
      this.pending = merged;
    }
    while (this.pending.length >= HEADER_SIZE) {
      const size = new DataView(this.pending.buffer, this.pending.byteOffset).getUint32(8, true);
      if (this.pending.length < HEADER_SIZE + size) break;
      const payload = this.pending.slice(HEADER_SIZE, HEADER_SIZE + size);
      this.pending = this.pending.slice(HEADER_SIZE + size);
      this.waiters.shift()?.resolve(new DataView(payload.buffer));
    }
  }

  private markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch.close();
    for (const w of this.waiters.splice(0)) w.reject(new Error('back-end closed the connection'));
    for (const w of this.closeWaiters.splice(0)) w();
  }

  /** Writes raw bytes (for malformed-message tests). */
  sendRaw(bytes: Uint8Array, fds: number[] = []): number {
    return native.sendMsg(this.fd, bytes, fds);
  }

  send(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags = FLAG_VERSION): void {
    const msg = new Uint8Array(HEADER_SIZE + payload.length);
    msg.set(encodeHeader(request, flags, payload.length));
    msg.set(payload, HEADER_SIZE);
    const n = native.sendMsg(this.fd, msg, fds);
    if (n !== msg.length) throw new Error(`sendmsg returned ${n}`);
  }

  /** Sends a request and waits for its reply payload. */
  call(request: number, payload?: Uint8Array, fds: number[] = [], timeoutMs = 5000): Promise<DataView> {
    return new Promise<DataView>((resolve, reject) => {
      if (this.closed) return reject(new Error('back-end closed the connection'));
      const timer = setTimeout(() => reject(new Error(`no reply to request ${request} in ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      try {
        this.send(request, payload, fds);
      } catch (e) {
        this.waiters.pop();
        clearTimeout(timer);
        reject(e as Error);
      }
    });
  }

  /** Sends with NEED_REPLY and returns the back-end's u64 ack (0 = success). */
  async callAck(request: number, payload?: Uint8Array, fds: number[] = []): Promise<bigint> {
    const p = new Promise<DataView>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.send(request, payload, fds, FLAG_VERSION | FLAG_NEED_REPLY);
    const reply = await p;
    return reply.getBigUint64(0, true);
  }

  /** Resolves true if the back-end closes the connection within timeoutMs. */
  waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  close(): void {
    if (this.closed) return;
    this.markClosed();
    native.close(this.fd);
  }
}
