// Framework RPCs (SPDK v24.01 lib/rpc/rpc.c, lib/event/app.c): rpc_get_methods, spdk_get_version
// and framework_start_init.
import type { RpcContext } from '../../services/types.js';
import { invalidParams } from '../../util/errors.js';
import { decodeParams, optional } from '../decode.js';
import { RPC_SERVER_STATE, type RpcMethodDef, type RpcMethodTable, RpcState } from './types.js';

/** The SPDK release whose RPC interface vhostd reproduces. */
export const SPDK_COMPAT_VERSION = { major: 24, minor: 1, patch: 0, suffix: '' } as const;

/** SPDK_VERSION_STRING: "SPDK v24.01", minor zero-padded, ".patch" only when non-zero. */
export function spdkVersionString(version: string): string {
  const { major, minor, patch, suffix } = SPDK_COMPAT_VERSION;
  const minorStr = String(minor).padStart(2, '0');
  const patchStr = patch !== 0 ? `.${patch}` : '';
  return `SPDK v${major}.${minorStr}${patchStr}${suffix} compatible (vhostd ${version})`;
}

const getMethodsSchema = { current: optional('bool'), include_aliases: optional('bool') };

/** `table` is read at call time, so it lists every method registered by then. */
export function frameworkMethods(ctx: RpcContext, table: () => RpcMethodTable): RpcMethodDef[] {
  return [
    {
      name: 'rpc_get_methods',
      aliases: ['get_rpc_methods'],
      states: RpcState.STARTUP | RpcState.RUNTIME,
      handler(params) {
        // `current`: only methods whose state mask includes the present state (always RUNTIME
        // over the socket), as rpc.py load_config relies on to skip STARTUP-only entries.
        const p = decodeParams(params, getMethodsSchema, { message: 'Invalid parameters', paramsOptional: true });
        return [...table().values()]
          .filter((m) => p.include_aliases || !m.deprecated)
          .filter((m) => !p.current || (m.states & RPC_SERVER_STATE) === RPC_SERVER_STATE)
          .map((m) => m.name);
      },
    },
    {
      // SPDK registers it for STARTUP only and answers -1 at runtime. vhostd is always initialized
      // by the time its socket listens, so a call is a successful no-op instead: rpc.py load_config
      // calls it unconditionally for a config whose subsystems are all empty. It stays out of
      // rpc_get_methods(current) like in SPDK, which load_config's retry loop depends on to end.
      name: 'framework_start_init',
      states: RpcState.STARTUP,
      callableOutsideStates: true,
      handler(params) {
        if (params !== undefined) throw invalidParams('framework_start_init requires no parameters');
        return true;
      },
    },
    {
      name: 'spdk_get_version',
      aliases: ['get_spdk_version'],
      states: RpcState.STARTUP | RpcState.RUNTIME,
      handler(params) {
        if (params !== undefined) throw invalidParams('spdk_get_version method requires no parameters');
        return { version: spdkVersionString(ctx.version), fields: { ...SPDK_COMPAT_VERSION } };
      },
    },
  ];
}
