// What a bdev module (a backend, src/bdev/modules/<name>/) contributes, as one object its folder
// exports and the one list src/bdev/modules/index.ts names: the reactor-side channel factories for
// its ChannelSpec module names, and the control side — its RPC methods as data (decode → the
// module's create/delete → encode), which src/rpc/methods registers for every listed module.
// Modules own their create, delete and module state (registry.moduleState); the registry owns
// names, UUIDs and claims. Adding a backend: one folder exporting a BdevModule, one line in the list.
import { type Decoded, type Schema, decodeParams, required } from '../util/decode.js';
import { RpcCode, VhostdError } from '../util/errors.js';
import type { Logger } from 'pino';
import type { BdevChannel, ChannelSpec, OpenSpec } from './bdev.js';
import type { BdevRegistry } from './registry.js';

/**
 * Builds a backend's channel on a reactor from its spec. `open` opens another bdev's OpenSpec
 * through its layer (a vbdev's base); backends never import channels.ts for it.
 */
export type ModuleChannelFactory = (spec: ChannelSpec, open: (spec: OpenSpec) => BdevChannel) => BdevChannel;

/** What a module's RPC handlers may use (the RPC layer's context satisfies it). */
export interface BdevModuleContext {
  bdevs: BdevRegistry;
  logger: Logger;
}

/** One RPC method of a module, as the RPC layer registers it (rpc/methods/types.ts RpcMethodDef). */
export interface BdevRpcMethod {
  name: string;
  /** Decodes params, calls the module, returns the JSON `result`. */
  handler: (params: unknown) => unknown;
  /** Deprecated names SPDK (or older SPDK releases) also answered to. */
  aliases?: readonly string[];
}

export interface BdevModule {
  /** The module's name (its folder). */
  readonly name: string;
  /** The `Bdev.module` values of the bdevs it creates (uring creates 'uring' and 'aio' bdevs). */
  readonly bdevModules: readonly string[];
  /** Reactor side: ChannelSpec `module` name → channel factory. */
  readonly channels: Readonly<Record<string, ModuleChannelFactory>>;
  /** Control side: the module's RPC methods, bound to one vhostd's context. */
  rpcMethods?(ctx: BdevModuleContext): BdevRpcMethod[];
}

/** SPDK's message for a failed spdk_json_decode_object in the bdev modules' RPCs. */
export const DECODE_FAILED = 'spdk_json_decode_object failed';

/** The decoding failure of the bdev RPCs that answer -32603 (vbdevs, iostat): the reason in `detail`. */
export function bdevDecodeFailed(detail: string | undefined): VhostdError {
  const err = new VhostdError(RpcCode.INTERNAL_ERROR, DECODE_FAILED);
  err.detail = detail;
  return err;
}

/** decodeParams answering as those RPCs do (bdevDecodeFailed). */
export function decodeBdevParams<S extends Schema>(params: unknown, schema: S, opts: { paramsOptional?: boolean } = {}): Decoded<S> {
  try {
    return decodeParams(params, schema, { message: DECODE_FAILED, ...opts });
  } catch (e) {
    throw bdevDecodeFailed((e as VhostdError).detail ?? DECODE_FAILED);
  }
}

/** A `<module>_delete {name}` method that replies true once `remove(name)` is done (malloc, null). */
export function deleteByNameMethod(name: string, aliases: readonly string[], remove: (bdevName: string) => Promise<void>): BdevRpcMethod {
  return {
    name,
    aliases,
    async handler(params) {
      const p = decodeParams(params, { name: required('string') }, { message: DECODE_FAILED });
      await remove(p.name);
      return true;
    },
  };
}
