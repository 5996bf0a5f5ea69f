// Persistent configuration (SPDK v24.01 lib/init/subsystem_rpc.c): framework_get_subsystems and
// framework_get_config, from which rpc.py save_config (and vhostctl save_config) builds the JSON
// file that `vhostd --json` and load_config replay; plus the two bdev-subsystem methods SPDK
// writes into every saved config (bdev_set_options, bdev_wait_for_examine), as accepted no-ops.
// Also their SPDK v18.10 names, get_subsystems and get_subsystem_config (v18.10
// lib/event/rpc/subsystem_rpc.c), which that release's rpc.py save_config calls.
import type { RpcContext } from '../../services/types.js';
import { invalidParams } from '../../util/errors.js';
import { decodeParams, optional, required } from '../decode.js';
import { type RpcMethodDef, RpcState } from './types.js';

/** One entry of a subsystem's config: an RPC call (params absent when there are none). */
export interface ConfigEntry {
  method: string;
  params?: Record<string, unknown>;
}

export interface SubsystemDef {
  name: string;
  dependsOn: string[];
  /** Its write_config_json; absent for subsystems with nothing to save (config is then null). */
  config?: () => ConfigEntry[];
}

/**
 * vhostd's subsystems under SPDK's names, dependencies before dependants (SPDK's sort order; the
 * newer rpc.py save_config resolves depends_on in list order). scsi has no config of its own.
 */
export function subsystems(ctx: RpcContext): SubsystemDef[] {
  return [
    {
      name: 'bdev',
      dependsOn: [],
      // SPDK: bdev_set_options, module options, each bdev's write_config_json, and
      // bdev_wait_for_examine last. There are no options worth saving here, and a STARTUP-only
      // bdev_set_options would only make load_config at runtime report a skipped entry.
      // Each bdev's create is followed by its layer's settings (bdev_set_qos_limit, bdev_enable_histogram).
      config: () => [...ctx.bdevs.list().flatMap((b) => [b.writeConfig(), ...ctx.bdevs.layerOf(b).writeConfig(b.name)]), { method: 'bdev_wait_for_examine' }],
    },
    { name: 'scsi', dependsOn: ['bdev'] },
    { name: 'vhost_blk', dependsOn: ['bdev'], config: () => ctx.vhost.writeConfig('vhost_blk') },
    { name: 'vhost_scsi', dependsOn: ['scsi'], config: () => ctx.vhost.writeConfig('vhost_scsi') },
  ];
}

const getConfigSchema = { name: required('string'), with_batches: optional('bool') };
/** SPDK v18.10's rpc_get_subsystem_config decoders. */
const legacyGetConfigSchema = { name: required('string') };

function subsystemList(ctx: RpcContext, params: unknown, method: string): Array<{ subsystem: string; depends_on: string[] }> {
  if (params !== undefined) throw invalidParams(`'${method}' requires no arguments`);
  return subsystems(ctx).map((s) => ({ subsystem: s.name, depends_on: [...s.dependsOn] }));
}

function subsystemConfig(ctx: RpcContext, name: string): ConfigEntry[] | null {
  const sub = subsystems(ctx).find((s) => s.name === name);
  if (!sub) throw invalidParams(`Subsystem '${name}' not found`);
  return sub.config ? sub.config() : null;
}

/** SPDK's bdev_set_options decoders (all optional); the values tune SPDK's own I/O pools. */
const bdevOptionsSchema = {
  bdev_io_pool_size: optional('uint32'),
  bdev_io_cache_size: optional('uint32'),
  bdev_auto_examine: optional('bool'),
  iobuf_small_cache_size: optional('uint32'),
  iobuf_large_cache_size: optional('uint32'),
};

export function subsystemMethods(ctx: RpcContext): RpcMethodDef[] {
  return [
    {
      name: 'framework_get_subsystems',
      handler: (params) => subsystemList(ctx, params, 'framework_get_subsystems'),
    },
    {
      // SPDK v18.10's name: same reply ([{subsystem, depends_on}]), its own error message.
      name: 'get_subsystems',
      legacy: true,
      replacedBy: 'framework_get_subsystems',
      handler: (params) => subsystemList(ctx, params, 'get_subsystems'),
    },
    {
      name: 'framework_get_config',
      handler(params) {
        // with_batches (newer SPDK) is accepted and ignored: vhostd never writes batches.
        const p = decodeParams(params, getConfigSchema, { message: 'Invalid arguments' });
        return subsystemConfig(ctx, p.name);
      },
    },
    {
      // SPDK v18.10's name, called by its rpc.py save_config / save_subsystem_config. The entries
      // keep today's method names (vhostd's get_rpc_methods lists both, so v18.10's load_config
      // replays them) but those without params are left out: v18.10's load_config calls
      // `client.call(elem['method'], elem['params'])` and dies on a KeyError without "params",
      // and the only such entry, bdev_wait_for_examine, postdates v18.10 and does nothing here.
      name: 'get_subsystem_config',
      legacy: true,
      replacedBy: 'framework_get_config',
      handler(params) {
        const p = decodeParams(params, legacyGetConfigSchema, { message: 'Invalid arguments' });
        const config = subsystemConfig(ctx, p.name);
        return config && config.filter((e) => e.params !== undefined);
      },
    },
    {
      // Sizes of SPDK's bdev_io pools and caches: nothing to tune in vhostd. STARTUP-only as in
      // SPDK, so `vhostd --json` runs it (a no-op) and rpc.py load_config at runtime skips it.
      name: 'bdev_set_options',
      aliases: ['set_bdev_options'],
      states: RpcState.STARTUP,
      handler(params) {
        if (params !== undefined) decodeParams(params, bdevOptionsSchema, { message: 'Invalid parameters' });
        return true;
      },
    },
    {
      // bdevs here are ready as soon as they are created: nothing to wait for.
      name: 'bdev_wait_for_examine',
      handler(params) {
        if (params !== undefined) throw invalidParams('bdev_wait_for_examine requires no parameters');
        return true;
      },
    },
  ];
}
