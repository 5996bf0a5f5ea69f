// Persistent configuration (SPDK v24.01 lib/init/subsystem_rpc.c): framework_get_subsystems and
// framework_get_config, from which rpc.py save_config (and vhostctl save_config) builds the JSON
// file that `vhostd --json` and load_config replay; plus the two bdev-subsystem methods SPDK
// writes into every saved config (bdev_set_options, bdev_wait_for_examine), as accepted no-ops.
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
      config: () => [...ctx.bdevs.list().map((b) => b.writeConfig()), { method: 'bdev_wait_for_examine' }],
    },
    { name: 'scsi', dependsOn: ['bdev'] },
    { name: 'vhost_blk', dependsOn: ['bdev'], config: () => ctx.vhost.writeConfig('vhost_blk') },
    { name: 'vhost_scsi', dependsOn: ['scsi'], config: () => ctx.vhost.writeConfig('vhost_scsi') },
  ];
}

const getConfigSchema = { name: required('string'), with_batches: optional('bool') };

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
      handler(params) {
        if (params !== undefined) throw invalidParams("'framework_get_subsystems' requires no arguments");
        return subsystems(ctx).map((s) => ({ subsystem: s.name, depends_on: [...s.dependsOn] }));
      },
    },
    {
      name: 'framework_get_config',
      handler(params) {
        // with_batches (newer SPDK) is accepted and ignored: vhostd never writes batches.
        const p = decodeParams(params, getConfigSchema, { message: 'Invalid arguments' });
        const sub = subsystems(ctx).find((s) => s.name === p.name);
        if (!sub) throw invalidParams(`Subsystem '${p.name}' not found`);
        return sub.config ? sub.config() : null;
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
