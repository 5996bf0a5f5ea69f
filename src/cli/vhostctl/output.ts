// Output exactly as SPDK's rpc.py prints it (python/spdk/rpc/client.py print_dict/print_json and
// JSONRPCException messages), so scripts that parse rpc.py output work with vhostctl unchanged.

/** Python's json.dumps(x, indent=2): like JSON.stringify, but ensure_ascii escapes DEL and non-ASCII. */
export function pythonJsonDumps(value: unknown): string {
  const text = JSON.stringify(value, null, 2) ?? 'null';
  return text.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** rpc.py print_dict: pretty JSON. */
export function formatDict(value: unknown): string {
  return pythonJsonDumps(value);
}

/** rpc.py print_json: pretty JSON with surrounding quotes stripped, so a bare string prints raw. */
export function formatJson(value: unknown): string {
  return pythonJsonDumps(value).replace(/^"+|"+$/g, '');
}

/** The message of rpc.py's JSONRPCException for an error reply. */
export function formatRpcError(
  method: string,
  params: object | undefined,
  requestId: number,
  error: { code: number; message: string; data?: unknown },
): string {
  // rpc.py appends method and req_id to the params dict it sent ({} when there were none).
  const request = { ...(params ?? {}), method, req_id: requestId };
  const response: Record<string, unknown> = { code: error.code, message: error.message };
  if (error.data !== undefined) response.data = error.data;
  return ['request:', pythonJsonDumps(request), 'Got JSON-RPC error response', 'response:', pythonJsonDumps(response)].join('\n');
}

/** The message of rpc.py's JSONRPCException for a failed connect. */
export function formatConnectError(addr: string, details: string): string {
  return `Error while connecting to ${addr}\nIs SPDK application running?\nError details: ${details}`;
}
