// Shapes shared by the RPC method groups.

/** Decodes params, calls the control plane, returns the JSON `result`. */
export type RpcMethodHandler = (params: unknown) => unknown;

/**
 * SPDK's RPC states (SPDK_RPC_STARTUP, SPDK_RPC_RUNTIME). A method's state mask says when it may
 * run: STARTUP methods tune the framework before it initializes (SPDK's --wait-for-rpc phase and
 * the first pass of a --json config), RUNTIME methods create and query things afterwards.
 */
export const RpcState = { STARTUP: 0x1, RUNTIME: 0x4 } as const;

/**
 * The state RPC clients see. The RPC socket only listens once vhostd is initialized (vhostd has no
 * --wait-for-rpc), so over the socket it is always RUNTIME; STARTUP exists only while --json loads.
 */
export const RPC_SERVER_STATE: number = RpcState.RUNTIME;

export interface RpcMethodDef {
  name: string;
  handler: RpcMethodHandler;
  /** Deprecated names SPDK (or older SPDK releases) also answered to. */
  aliases?: readonly string[];
  /** A method only older SPDK releases had; listed, like aliases, only with include_aliases. */
  legacy?: boolean;
  /** For a legacy method: the current one its deprecation warning points to. */
  replacedBy?: string;
  /** RpcState mask of the states it may be called in (SPDK's SPDK_RPC_REGISTER flags); default RUNTIME. */
  states?: number;
  /** Answered even outside `states` (framework_start_init: an idempotent no-op once initialized). */
  callableOutsideStates?: boolean;
}

/** One callable name: a method, or an alias pointing at one. */
export interface RpcMethodEntry {
  name: string;
  handler: RpcMethodHandler;
  /** For an alias, the method it stands for. */
  aliasOf?: string;
  /** For a legacy method, the current method to use instead (RpcMethodDef.replacedBy). */
  replacedBy?: string;
  /** Aliases and legacy methods: hidden from rpc_get_methods unless include_aliases. */
  deprecated: boolean;
  /** RpcState mask (an alias has its method's). */
  states: number;
  callableOutsideStates: boolean;
}

export type RpcMethodTable = ReadonlyMap<string, RpcMethodEntry>;
