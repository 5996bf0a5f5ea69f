// The RPC method table: every method group, flattened with its legacy aliases, and its
// registration on an RpcServer.
import type { RpcContext } from '../../services/types.js';
import { VhostdError } from '../../util/errors.js';
import type { RpcServer } from '../server.js';
import { bdevMethods } from './bdev.js';
import { iostatMethods } from './bdev-iostat.js';
import { bdevLayerMethods } from './bdev-layer.js';
import { frameworkMethods } from './framework.js';
import { subsystemMethods } from './subsystems.js';
import { RPC_SERVER_STATE, type RpcMethodDef, type RpcMethodEntry, type RpcMethodTable, RpcState } from './types.js';
import { reactorMethods } from './reactor.js';
import { vhostMethods } from './vhost.js';

export type { RpcMethodDef, RpcMethodEntry, RpcMethodHandler, RpcMethodTable } from './types.js';
export { RPC_SERVER_STATE, RpcState } from './types.js';

/** SPDK's SPDK_JSONRPC_ERROR_INVALID_STATE reply for a STARTUP-only method called at runtime. */
export function invalidStateError(): VhostdError {
  return new VhostdError(
    -1,
    'Method may only be called before framework is initialized. Use --wait-for-rpc command line parameter and then issue this RPC before the framework_start_init RPC.',
  );
}

/** Builds name -> handler for all methods and aliases (aliases point at the same handler). */
export function buildMethodTable(ctx: RpcContext): RpcMethodTable {
  const table = new Map<string, RpcMethodEntry>();
  const defs: RpcMethodDef[] = [
    ...frameworkMethods(ctx, () => table),
    ...subsystemMethods(ctx),
    ...bdevMethods(ctx),
    ...iostatMethods(ctx),
    ...bdevLayerMethods(ctx),
    ...vhostMethods(ctx),
    ...reactorMethods(ctx),
  ];
  for (const def of defs) {
    if (table.has(def.name)) throw new Error(`duplicate RPC method ${def.name}`);
    table.set(def.name, {
      name: def.name,
      handler: def.handler,
      deprecated: def.legacy ?? false,
      ...(def.replacedBy !== undefined ? { replacedBy: def.replacedBy } : {}),
      states: def.states ?? RpcState.RUNTIME,
      callableOutsideStates: def.callableOutsideStates ?? false,
    });
  }
  for (const def of defs) {
    for (const alias of def.aliases ?? []) {
      if (table.has(alias)) throw new Error(`duplicate RPC method ${alias}`);
      table.set(alias, {
        name: alias,
        handler: def.handler,
        aliasOf: def.name,
        deprecated: true,
        states: def.states ?? RpcState.RUNTIME,
        callableOutsideStates: def.callableOutsideStates ?? false,
      });
    }
  }
  return table;
}

/** Registers every method and alias on `server`; returns the table it registered. */
export function registerMethods(server: RpcServer, ctx: RpcContext): RpcMethodTable {
  const table = buildMethodTable(ctx);
  const warnedAliases = new Set<string>();
  for (const entry of table.values()) {
    server.addMethod(entry.name, (params) => {
      // Like SPDK: "RPC method X is deprecated.  Use Y instead." once per name.
      if (entry.deprecated && !warnedAliases.has(entry.name)) {
        warnedAliases.add(entry.name);
        const current = entry.aliasOf ?? entry.replacedBy;
        const instead = current ? `  Use ${current} instead.` : '';
        ctx.logger.warn(`RPC method ${entry.name} is deprecated.${instead}`);
      }
      if ((entry.states & RPC_SERVER_STATE) === 0 && !entry.callableOutsideStates) throw invalidStateError();
      return entry.handler(params);
    });
  }
  return table;
}
