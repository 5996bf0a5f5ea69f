// The RPC method table: every method group, flattened with its legacy aliases, and its
// registration on an RpcServer.
import type { RpcContext } from '../../services/types.js';
import type { RpcServer } from '../server.js';
import { bdevMethods } from './bdev.js';
import { frameworkMethods } from './framework.js';
import type { RpcMethodDef, RpcMethodEntry, RpcMethodTable } from './types.js';
import { reactorMethods } from './reactor.js';
import { vhostMethods } from './vhost.js';

export type { RpcMethodDef, RpcMethodEntry, RpcMethodHandler, RpcMethodTable } from './types.js';

/** Builds name -> handler for all methods and aliases (aliases point at the same handler). */
export function buildMethodTable(ctx: RpcContext): RpcMethodTable {
  const table = new Map<string, RpcMethodEntry>();
  const defs: RpcMethodDef[] = [...frameworkMethods(ctx, () => table), ...bdevMethods(ctx), ...vhostMethods(ctx), ...reactorMethods(ctx)];
  for (const def of defs) {
    if (table.has(def.name)) throw new Error(`duplicate RPC method ${def.name}`);
    table.set(def.name, { name: def.name, handler: def.handler, deprecated: def.legacy ?? false });
  }
  for (const def of defs) {
    for (const alias of def.aliases ?? []) {
      if (table.has(alias)) throw new Error(`duplicate RPC method ${alias}`);
      table.set(alias, { name: alias, handler: def.handler, aliasOf: def.name, deprecated: true });
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
        const instead = entry.aliasOf ? `  Use ${entry.aliasOf} instead.` : '';
        ctx.logger.warn(`RPC method ${entry.name} is deprecated.${instead}`);
      }
      return entry.handler(params);
    });
  }
  return table;
}
