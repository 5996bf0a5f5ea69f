// SPDK-compatible JSON-RPC server on a Unix stream socket. Framing follows SPDK's lib/jsonrpc:
// requests are concatenated JSON values with no delimiter, each reply is compact JSON plus "\n",
// and a parse error is answered once before the connection is closed (a byte stream has no resync
// point). Method dispatch is delegated to json-rpc-2.0; request validation and error shaping follow
// SPDK so rpc.py sees the same codes and messages.
import { lstatSync, unlinkSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { JSONRPCErrorException, type JSONRPCResponse, JSONRPCServer } from 'json-rpc-2.0';
import type { Logger } from 'pino';
import { RpcCode, VhostdError } from '../util/errors.js';
import { type SocketPerms, applySocketPerms } from '../util/socket-perms.js';
import { ownDuplicateKey } from '../util/duplicate-keys.js';
import { JsonStreamParser } from './stream-parser.js';

export const DEFAULT_RPC_SOCKET = '/var/tmp/spdk.sock';
/** SPDK_JSONRPC_MAX_CONNS. */
export const DEFAULT_MAX_CONNECTIONS = 64;
/** Requests queued on one connection before we stop reading from it (backpressure). */
const MAX_QUEUED_REQUESTS = 64;

export type RpcHandler = (params: unknown) => unknown;

export interface RpcServerOptions {
  socketPath?: string;
  logger: Logger;
  maxConnections?: number;
  /** Largest single JSON request accepted, in bytes. */
  maxRequestBytes?: number;
  /** Mode of the socket file (default 0600) and, optionally, its group. */
  socketMode?: number;
  socketGid?: number;
}

type RpcId = string | number | null;
type Reply = Record<string, unknown>;

/** The request keys SPDK's jsonrpc_request_decoders accept; anything else is an invalid request. */
const REQUEST_KEYS = new Set(['jsonrpc', 'method', 'params', 'id']);

function errorReply(id: RpcId, code: number, message: string): Reply {
  return { jsonrpc: '2.0', id, error: { code, message } };
}

function isValidId(id: unknown): id is RpcId {
  return typeof id === 'string' || typeof id === 'number' || id === null;
}

/** Serializes in SPDK's key order ({"jsonrpc","id","result"|"error"}), compact, newline-terminated. */
function encodeReply(reply: Reply | Reply[]): string {
  const ordered = (r: Reply): Reply =>
    'error' in r && r.error !== undefined
      ? { jsonrpc: '2.0', id: r.id ?? null, error: r.error }
      : { jsonrpc: '2.0', id: r.id ?? null, result: r.result };
  return `${JSON.stringify(Array.isArray(reply) ? reply.map(ordered) : ordered(reply))}\n`;
}

export class RpcServer {
  readonly socketPath: string;
  private readonly logger: Logger;
  private readonly maxConnections: number;
  private readonly maxRequestBytes: number | undefined;
  private readonly socketPerms: SocketPerms;
  private readonly dispatcher: JSONRPCServer;
  private readonly connections = new Set<Socket>();
  private server: Server | undefined;
  /** Inode of the socket file we created, so close() never unlinks a successor's socket. */
  private socketIno: number | undefined;

  constructor(opts: RpcServerOptions) {
    this.socketPath = opts.socketPath ?? DEFAULT_RPC_SOCKET;
    this.logger = opts.logger.child({ component: 'rpc' });
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.maxRequestBytes = opts.maxRequestBytes;
    this.socketPerms = { mode: opts.socketMode ?? 0o600, gid: opts.socketGid };
    this.dispatcher = new JSONRPCServer({ errorListener: (_msg, err) => this.logMethodError(err) });
    this.dispatcher.mapErrorToJSONRPCErrorResponse = (id, err) => {
      const { code, message } = this.toRpcError(err);
      return { jsonrpc: '2.0', id, error: { code, message } };
    };
  }

  /** Registers `handler` under `name`; its return value is the `result` (undefined becomes null). */
  addMethod(name: string, handler: RpcHandler): void {
    this.dispatcher.addMethod(name, async (params: unknown) => (await handler(params)) ?? null);
  }

  hasMethod(name: string): boolean {
    return this.dispatcher.hasMethod(name);
  }

  get listening(): boolean {
    return this.server?.listening ?? false;
  }

  /** Binds the socket (mode 0600 unless socketMode). Fails if a live server already answers on the path. */
  async start(): Promise<void> {
    if (this.server) throw new Error('RpcServer already started');
    await this.clearStaleSocket();

    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket file is created synchronously inside listen(); a 0177 umask around it makes it
      // 0600 from the first instant, so no other user can connect before the chmod below.
      const previousUmask = setUmask(0o177);
      try {
        server.listen(this.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        if (previousUmask !== undefined) setUmask(previousUmask);
      }
    });
    this.server = server;
    try {
      applySocketPerms(this.socketPath, this.socketPerms);
      this.socketIno = lstatSync(this.socketPath).ino;
    } catch (err) {
      await this.close();
      throw err;
    }
    server.on('error', (err) => this.logger.error({ err }, 'RPC listener error'));
    this.logger.info({ socket: this.socketPath }, 'RPC server listening');
  }

  /** Stops accepting, drops open connections and removes the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    // close() stops accepting synchronously; the callback waits for open connections, so drop them.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.connections) socket.destroy();
    this.connections.clear();
    await closed;
    this.removeSocketFile();
    this.logger.info({ socket: this.socketPath }, 'RPC server closed');
  }

  /** Handles one decoded JSON value (a request or a batch); returns the reply, or null for none. */
  private async handleValue(value: unknown): Promise<Reply | Reply[] | null> {
    if (Array.isArray(value)) {
      if (value.length === 0) return errorReply(null, RpcCode.INVALID_REQUEST, 'Invalid request');
      // One at a time, in order, so a batch like [create, add_target] behaves like the sequence.
      const replies: Reply[] = [];
      for (const request of value) {
        const reply = await this.handleRequest(request);
        if (reply !== null) replies.push(reply);
      }
      return replies.length > 0 ? replies : null;
    }
    return this.handleRequest(value);
  }

  private async handleRequest(value: unknown): Promise<Reply | null> {
    // Validation mirrors SPDK's parse_single_request: "jsonrpc" is optional but must be "2.0",
    // "method" must be a string, "id" a string/number/null, "params" an object/array/null.
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return errorReply(null, RpcCode.INVALID_REQUEST, 'Invalid request');
    }
    const req = value as Record<string, unknown>;
    // A repeated request key fails SPDK's jsonrpc_request_decoders (spdk_json_decode_object's
    // "Duplicate key"); which "id" was meant is unknowable when "id" is the one repeated.
    const duplicate = ownDuplicateKey(req);
    const id = isValidId(req.id) && duplicate !== 'id' ? req.id : null;
    const invalid =
      duplicate !== undefined ||
      Object.keys(req).some((k) => !REQUEST_KEYS.has(k)) ||
      (req.jsonrpc !== undefined && req.jsonrpc !== '2.0') ||
      typeof req.method !== 'string' ||
      (req.id !== undefined && !isValidId(req.id)) ||
      (req.params !== undefined && req.params !== null && typeof req.params !== 'object');
    if (invalid) return errorReply(id, RpcCode.INVALID_REQUEST, 'Invalid request');

    const method = req.method as string;
    const params = req.params === null ? undefined : req.params;
    this.logger.debug({ method, id: req.id }, 'RPC request');
    // A request without "id" is a notification: executed, never answered.
    const request = { jsonrpc: '2.0' as const, method, params, ...(req.id !== undefined ? { id: req.id as RpcId } : {}) };
    try {
      const response: JSONRPCResponse | null = await this.dispatcher.receive(request);
      return response as Reply | null;
    } catch (err) {
      // json-rpc-2.0 itself threw (should not happen after validation); never let it escape.
      this.logger.error({ err, method }, 'RPC dispatch failed');
      return req.id === undefined ? null : errorReply(id, RpcCode.INTERNAL_ERROR, 'Internal error');
    }
  }

  private accept(socket: Socket): void {
    if (this.connections.size >= this.maxConnections) {
      this.logger.warn({ limit: this.maxConnections }, 'RPC connection refused: too many connections');
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    // Duplicate keys are tagged on the parsed requests: a request repeating one of its own keys
    // is invalid, params repeating a key fail decodeParams with the method's usual -32602.
    const parser = new JsonStreamParser({
      detectDuplicateKeys: true,
      ...(this.maxRequestBytes !== undefined ? { maxValueBytes: this.maxRequestBytes } : {}),
    });
    const queue: unknown[] = [];
    let busy = false;
    let closing = false;

    // Requests on one connection are handled strictly in order, so replies come back in order.
    const pump = async () => {
      if (busy) return;
      busy = true;
      while (queue.length > 0 && !socket.destroyed) {
        const reply = await this.replyFor(queue.shift());
        if (reply !== undefined && !socket.destroyed && !socket.write(reply)) {
          await new Promise<void>((resolve) => socket.once('drain', resolve).once('close', resolve));
        }
        if (!closing && socket.isPaused() && queue.length < MAX_QUEUED_REQUESTS / 2) socket.resume();
      }
      busy = false;
      if (closing && !socket.destroyed) {
        socket.end();
        // Don't let a peer that never closes its side pin a connection slot.
        setTimeout(() => socket.destroy(), 1000).unref();
      }
    };

    socket.on('data', (chunk: Buffer) => {
      if (closing) return;
      const { values, error } = parser.push(chunk);
      queue.push(...values);
      if (error) {
        this.logger.warn({ reason: error.reason, detail: error.message }, 'RPC parse error; closing connection');
        // Answer the requests before the bad bytes, then the parse error, then close (as SPDK does).
        queue.push(PARSE_ERROR);
        closing = true;
      } else if (queue.length >= MAX_QUEUED_REQUESTS) {
        socket.pause();
      }
      void pump();
    });
    socket.on('end', () => {
      if (!closing && parser.end().error) queue.push(PARSE_ERROR);
      closing = true;
      void pump();
    });
    socket.on('error', (err) => this.logger.debug({ err }, 'RPC connection error'));
    socket.on('close', () => this.connections.delete(socket));
  }

  /** The encoded reply to one queued value, or undefined when nothing is to be sent. */
  private async replyFor(value: unknown): Promise<string | undefined> {
    try {
      const reply = value === PARSE_ERROR ? errorReply(null, RpcCode.PARSE_ERROR, 'Parse error') : await this.handleValue(value);
      return reply === null ? undefined : encodeReply(reply);
    } catch (err) {
      // e.g. a result JSON.stringify cannot encode; the daemon must survive any single request.
      this.logger.error({ err }, 'RPC request handling failed');
      return encodeReply(errorReply(null, RpcCode.INTERNAL_ERROR, 'Internal error'));
    }
  }

  private toRpcError(err: unknown): { code: number; message: string } {
    if (err instanceof VhostdError) return { code: err.code, message: err.message };
    if (err instanceof JSONRPCErrorException) return { code: err.code, message: err.message };
    const message = err instanceof Error ? err.message : String(err);
    return { code: RpcCode.INTERNAL_ERROR, message: message || 'Internal error' };
  }

  private logMethodError(err: unknown): void {
    if (err instanceof VhostdError) {
      // Expected failures (bad params, EEXIST, ...) are the client's business; keep them quiet.
      this.logger.info({ code: err.code, error: err.message, detail: err.detail }, 'RPC method failed');
    } else {
      this.logger.error({ err }, 'RPC method threw an unexpected error');
    }
  }

  /** Removes a socket file left by a dead server; refuses if a live one answers or it is not a socket. */
  private async clearStaleSocket(): Promise<void> {
    let isSocket: boolean;
    try {
      isSocket = lstatSync(this.socketPath).isSocket();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    if (!isSocket) throw socketError('EEXIST', `RPC socket path ${this.socketPath} exists and is not a socket`);
    const alive = await new Promise<boolean>((resolve) => {
      const probe = connect(this.socketPath);
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (alive) {
      throw socketError('EADDRINUSE', `RPC Unix domain socket path ${this.socketPath} in use. Specify another.`);
    }
    this.logger.info({ socket: this.socketPath }, 'removing stale RPC socket');
    unlinkSync(this.socketPath);
  }

  private removeSocketFile(): void {
    try {
      if (lstatSync(this.socketPath).ino === this.socketIno) unlinkSync(this.socketPath);
    } catch {
      // Already gone.
    }
  }
}

/** Sentinel queued in place of a request when the stream became unparseable. */
const PARSE_ERROR = Symbol('parse-error');

/** process.umask(mask) is unavailable in worker threads; skip it there (chmod still applies). */
function setUmask(mask: number): number | undefined {
  try {
    return process.umask(mask);
  } catch {
    return undefined;
  }
}

function socketError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}
