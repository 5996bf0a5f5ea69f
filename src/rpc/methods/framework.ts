// Framework RPCs (SPDK v24.01 lib/rpc/rpc.c, lib/event/app.c): rpc_get_methods, spdk_get_version
// and framework_start_init, plus their names of SPDK v18.10 (get_rpc_methods, start_subsystem_init)
// that its rpc.py load_config calls.
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

/**
 * rpc_get_methods. `current`: only methods whose state mask includes the present state (always
 * RUNTIME over the socket), as rpc.py load_config relies on to skip STARTUP-only entries.
 * `include_aliases` defaults to `aliasesByDefault`.
 */
function listMethods(table: RpcMethodTable, params: unknown, aliasesByDefault: boolean): string[] {
  const p = decodeParams(params, getMethodsSchema, { message: 'Invalid parameters', paramsOptional: true });
  const includeAliases = p.include_aliases ?? aliasesByDefault;
  return [...table.values()]
    .filter((m) => includeAliases || !m.deprecated)
    .filter((m) => !p.current || (m.states & RPC_SERVER_STATE) === RPC_SERVER_STATE)
    .map((m) => m.name);
}

/** `table` is read at call time, so it lists every method registered by then. */
export function frameworkMethods(ctx: RpcContext, table: () => RpcMethodTable): RpcMethodDef[] {
  return [
    {
      name: 'rpc_get_methods',
      states: RpcState.STARTUP | RpcState.RUNTIME,
      handler: (params) => listMethods(table(), params, false),
    },
    {
      // The name up to SPDK v19.07, whose rpc.py load_config / load_subsystem_config call it
      // (v18.10: without params, then with {"current": true}) and replay only the entries whose
      // method is in the list. Their config files, and the SPDK that answered them, use the names
      // of their day (construct_malloc_bdev, construct_vhost_blk_controller, add_vhost_scsi_lun,
      // set_bdev_options...), which today are deprecated aliases: so under its old name the list
      // includes the aliases and legacy methods unless include_aliases (which those clients never
      // send) says otherwise. A separate method rather than an alias for that reason.
      name: 'get_rpc_methods',
      legacy: true,
      replacedBy: 'rpc_get_methods',
      states: RpcState.STARTUP | RpcState.RUNTIME,
      handler: (params) => listMethods(table(), params, true),
    },
    {
      // SPDK registers it for STARTUP only and answers -1 at runtime. vhostd is always initialized
      // by the time its socket listens, so a call is a successful no-op instead: rpc.py load_config
      // calls it unconditionally for a config whose subsystems are all empty. It stays out of
      // rpc_get_methods(current) like in SPDK, which load_config's retry loop depends on to end.
      name: 'framework_start_init',
      // SPDK v18.10's name. Its load_config calls it only when get_rpc_methods {"current": true}
      // lists it, which at runtime it does not (STARTUP-only there too: v18.10 lib/event/app.c).
      aliases: ['start_subsystem_init'],
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
