// JSON-RPC 2.0 client over SPDK's Unix-socket transport. Replies are split with the same stream
// parser the server uses, since a reply (like rpc.py's requests) carries no delimiter.
import { type Socket, createConnection } from 'node:net';
import { JsonStreamParser } from './stream-parser.js';

/** A JSON-RPC error reply, with the server's code and message and the request that caused it. */
export class RpcError extends Error {
  /** The request's method, params (as sent, absent when empty) and id, for rpc.py-style reports. */
  method?: string;
  params?: object;
  requestId?: number;

  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/** rpc.py sends no "params" key for None or {} (`if params:`); spdk_get_version even rejects `{}`. */
function isEmptyParams(params: object | undefined): boolean {
  return params === undefined || (!Array.isArray(params) && Object.keys(params).length === 0);
}

interface Pending {
  method: string;
  params: object | undefined;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export interface RpcClientOptions {
  /** Per-call timeout; rpc.py's default is 60 s. */
  timeoutMs?: number;
}

export class RpcClient {
  private socket: Socket | undefined;
  private connecting: Promise<Socket> | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly timeoutMs: number;
  private closed = false;

  constructor(
    readonly socketPath: string,
    opts: RpcClientOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /**
   * Calls `method`; resolves with `result` or rejects with an RpcError carrying the reply's
   * code/message. Requests are written exactly like rpc.py: pretty-printed, no delimiter, ids from 1.
   */
  async call<T = unknown>(method: string, params?: object): Promise<T> {
    const socket = await this.open();
    const id = this.nextId++;
    const sentParams = isEmptyParams(params) ? undefined : params;
    const request: Record<string, unknown> = { jsonrpc: '2.0', method, id };
    if (sentParams !== undefined) request.params = sentParams;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(Object.assign(new Error(`Timeout while waiting for response to ${method}`), { code: 'ETIMEDOUT' }));
      }, this.timeoutMs);
      this.pending.set(id, { method, params: sentParams, resolve: resolve as (v: unknown) => void, reject, timer });
      socket.write(JSON.stringify(request, null, 2));
    });
  }

  /** Connects now rather than on the first call (to report connection errors, or to retry). */
  async connect(): Promise<void> {
    await this.open();
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = undefined;
    this.failAll(new Error('RpcClient closed'));
  }

  private open(): Promise<Socket> {
    if (this.closed) return Promise.reject(new Error('RpcClient is closed'));
    if (this.socket) return Promise.resolve(this.socket);
    this.connecting ??= new Promise<Socket>((resolve, reject) => {
      const socket = createConnection(this.socketPath);
      const parser = new JsonStreamParser();
      socket.once('connect', () => {
        this.connecting = undefined;
        if (this.closed) {
          socket.destroy();
          reject(new Error('RpcClient closed'));
          return;
        }
        this.socket = socket;
        resolve(socket);
      });
      socket.on('data', (chunk: Buffer) => {
        const { values, error } = parser.push(chunk);
        for (const reply of values) this.dispatch(reply);
        if (error) {
          this.failAll(new Error(`unparseable reply from ${this.socketPath}: ${error.message}`));
          socket.destroy();
        }
      });
      socket.on('error', (err) => {
        if (this.connecting) {
          this.connecting = undefined;
          reject(err);
        }
        this.failAll(err);
      });
      socket.on('close', () => {
        if (this.socket === socket) this.socket = undefined;
        this.failAll(new Error(`connection to ${this.socketPath} closed`));
      });
    });
    return this.connecting;
  }

  private dispatch(reply: unknown): void {
    // Batches are never sent by this client, but tolerate an array reply anyway.
    if (Array.isArray(reply)) {
      for (const r of reply) this.dispatch(r);
      return;
    }
    if (typeof reply !== 'object' || reply === null) return;
    const { id, result, error } = reply as { id?: unknown; result?: unknown; error?: unknown };
    if (id === null && error) {
      // An error the server could not tie to a request (e.g. a parse error): it concerns them all.
      for (const pendingId of [...this.pending.keys()]) this.dispatch({ id: pendingId, error });
      return;
    }
    const pending = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (!pending) return;
    this.pending.delete(id as number);
    clearTimeout(pending.timer);
    if (error !== undefined && error !== null) {
      const e = error as { code?: unknown; message?: unknown; data?: unknown };
      const err = new RpcError(
        typeof e.code === 'number' ? e.code : -32603,
        typeof e.message === 'string' ? e.message : String(e.message),
        e.data,
      );
      err.method = pending.method;
      err.params = pending.params;
      err.requestId = id as number;
      pending.reject(err);
    } else {
      pending.resolve(result);
    }
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
  }
}

/**
 * Waits until an RPC server accepts connections on `socketPath` (SPDK's `waitforlisten`). The
 * socket file appears at bind(), a moment before listen(): a connect in between is refused, so
 * the file's existence alone does not mean the server is up. `gaveUp` ends the wait early (the
 * server process exited).
 */
export async function waitForRpcServer(socketPath: string, timeoutMs: number, gaveUp: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new RpcClient(socketPath);
    try {
      await client.connect();
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || gaveUp() || Date.now() > deadline) throw e;
    } finally {
      client.close();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
