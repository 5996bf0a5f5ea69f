// Framework RPCs (SPDK v24.01 lib/rpc/rpc.c): rpc_get_methods and spdk_get_version.
import type { RpcContext } from '../../services/types.js';
import { invalidParams } from '../../util/errors.js';
import { decodeParams, optional } from '../decode.js';
import type { RpcMethodDef, RpcMethodTable } from './types.js';

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
      handler(params) {
        // `current` filters by framework state; every method here is callable at runtime.
        const p = decodeParams(params, getMethodsSchema, { message: 'Invalid parameters', paramsOptional: true });
        return [...table().values()].filter((m) => p.include_aliases || !m.deprecated).map((m) => m.name);
      },
    },
    {
      name: 'spdk_get_version',
      aliases: ['get_spdk_version'],
      handler(params) {
        if (params !== undefined) throw invalidParams('spdk_get_version method requires no parameters');
        return { version: spdkVersionString(ctx.version), fields: { ...SPDK_COMPAT_VERSION } };
      },
    },
  ];
}
