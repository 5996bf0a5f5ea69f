// Shapes shared by the RPC method groups.

/** Decodes params, calls the control plane, returns the JSON `result`. */
export type RpcMethodHandler = (params: unknown) => unknown;

export interface RpcMethodDef {
  name: string;
  handler: RpcMethodHandler;
  /** Deprecated names SPDK (or older SPDK releases) also answered to. */
  aliases?: readonly string[];
  /** A method only older SPDK releases had; listed, like aliases, only with include_aliases. */
  legacy?: boolean;
}

/** One callable name: a method, or an alias pointing at one. */
export interface RpcMethodEntry {
  name: string;
  handler: RpcMethodHandler;
  /** For an alias, the method it stands for. */
  aliasOf?: string;
  /** Aliases and legacy methods: hidden from rpc_get_methods unless include_aliases. */
  deprecated: boolean;
}

export type RpcMethodTable = ReadonlyMap<string, RpcMethodEntry>;
