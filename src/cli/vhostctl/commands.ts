// vhostctl subcommands: the same names, positional arguments, flags and params building as SPDK
// v24.01 scripts/rpc.py + python/spdk/rpc/{__init__,bdev,vhost}.py, so rpc.py invocations work
// with vhostctl unchanged. Each spec says how to turn parsed arguments into the RPC params and how
// rpc.py prints the result. The bdev layer commands (bdev_set_qos_limit, bdev_enable_histogram,
// bdev_get_histogram, bdev_reset_iostat, bdev_get_iostat --reset-mode) follow v25.09's rpc.py,
// which sends every option that was given, 0 included (withDefined).
import { setTimeout as sleep } from 'node:timers/promises';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { bdevTable, controllerTable, histogramTable, iostatRateTable, iostatTable, methodTable, reactorTable } from './tables.js';

/** Parsed positionals and options of one subcommand, keyed by name (commander's camelCase). */
// `any`: CLI glue; each builder reads exactly the keys its command declared.
export type CliArgs = Record<string, any>;

/** How rpc.py prints the result: print_dict, print_json (bare strings raw), or not at all. */
export type OutputStyle = 'dict' | 'json' | 'none';

export interface RpcCommandSpec {
  name: string;
  description: string;
  /** RPC method to call; defaults to `name`. */
  method?: string;
  /** Old rpc.py names; they call `method` and print "<alias> is deprecated, use <name> instead.". */
  deprecatedAliases?: readonly string[];
  /** Adds the positional arguments and options. */
  configure(cmd: Command): void;
  /** Refuses argument combinations commander cannot express (as rpc.py's argparse would); runs before params. */
  validate?(args: CliArgs): void;
  /** Builds the params object sent (undefined or {} = no params, as rpc.py). */
  params(args: CliArgs): object | undefined;
  output: OutputStyle;
  /** --table rendering for list results; `previous` is the first of two samples (see sampleMs). */
  table?(result: unknown, previous?: unknown): string;
  /** With --table: call twice this many ms apart and render rates over the interval (0: once). */
  sampleMs?(args: CliArgs): number;
  /**
   * With --table, for tables that need several calls (other methods, several names, samples an
   * interval apart): returns the query that makes them and renders the table, or undefined for
   * the usual one call of `method` with `params` rendered by `table`.
   */
  tableQuery?(args: CliArgs): TableQuery | undefined;
}

/** One RPC call on the open connection (rejects with RpcError as RpcClient.call). */
export type RpcCall = (method: string, params?: object) => Promise<unknown>;
export type TableQuery = (call: RpcCall) => Promise<string>;

/** Python int(): optional sign and decimal digits. */
export function parseIntArg(value: string): number {
  const trimmed = value.trim();
  if (!/^[+-]?\d+$/.test(trimmed)) throw new InvalidArgumentError(`invalid int value: '${value}'`);
  const n = Number(trimmed);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`int value out of range: '${value}'`);
  return n;
}

/** Python float(). */
export function parseFloatArg(value: string): number {
  const trimmed = value.trim();
  const n = Number(trimmed);
  if (trimmed === '' || Number.isNaN(n)) throw new InvalidArgumentError(`invalid float value: '${value}'`);
  return n;
}

function parseDifType(value: string): number {
  const n = parseIntArg(value);
  if (![0, 1, 2, 3].includes(n)) throw new InvalidArgumentError(`invalid choice: ${value} (choose from 0, 1, 2, 3)`);
  return n;
}

/** rpc.py adds optional keys with `if value:`; falsy values (0, '', false, None) are left out. */
function withTruthy(base: Record<string, unknown>, optional: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [key, value] of Object.entries(optional)) if (value) out[key] = value;
  return out;
}

/** rpc.py v25.09 (client.py remove_null): optional keys are sent unless None, so 0 and false are sent. */
function withDefined(base: Record<string, unknown>, optional: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [key, value] of Object.entries(optional)) if (value !== undefined) out[key] = value;
  return out;
}

const RESET_MODES = ['all', 'maxmin', 'none'];

/**
 * bdev_get_iostat --table --interval S: bdev_get_iostat twice S seconds apart (a --reset-mode goes
 * with the second call only, so it does not zero the first sample), and bdev_get_bdevs for the
 * assigned QoS limits.
 */
function iostatRateQuery(a: CliArgs): TableQuery {
  if (a.perChannel) throw new Error('bdev_get_iostat: --interval shows rates per bdev; leave out -c/--per-channel');
  const interval = Number(a.interval);
  if (!(interval > 0)) throw new Error(`bdev_get_iostat: --interval must be above 0 seconds (got ${String(a.interval)})`);
  const byName = withTruthy({}, { name: a.name });
  return async (call) => {
    const first = await call('bdev_get_iostat', byName);
    await sleep(interval * 1000);
    const second = await call('bdev_get_iostat', withTruthy(byName, { reset_mode: a.resetMode }));
    const bdevs = await call('bdev_get_bdevs', byName);
    return iostatRateTable(second, first, asRows(bdevs));
  };
}

/** SPDK's reply to bdev_get_histogram for a bdev whose histogram was never enabled: -ENOMEM. */
const HISTOGRAM_NOT_ENABLED = -12;

/** bdev_get_histogram --table: one call per name; no names: every bdev whose histogram is enabled. */
function histogramQuery(names: string[]): TableQuery {
  return async (call) => {
    const rows: Array<{ name: string; reply: unknown }> = [];
    if (names.length > 0) {
      for (const name of names) rows.push({ name, reply: await call('bdev_get_histogram', { name }) });
    } else {
      for (const b of asRows(await call('bdev_get_bdevs'))) {
        const name = String(b.name);
        try {
          rows.push({ name, reply: await call('bdev_get_histogram', { name }) });
        } catch (err) {
          // SPDK: never enabled (-ENOMEM), or disabled while a channel is open (-32603 "Bad address").
          const e = err as { code?: unknown; message?: unknown };
          if (e.code !== HISTOGRAM_NOT_ENABLED && !(e.code === -32603 && e.message === 'Bad address')) throw err;
        }
      }
    }
    return histogramTable(rows);
  };
}

/** argparse action='append': every occurrence of the option, in order. */
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** rpc.py's `--config key=value` lists → {key: value}; undefined when the option was not given. */
function keyValueMap(entries: string[] | undefined, option: string): Record<string, string> | undefined {
  if (!entries || entries.length === 0) return undefined;
  const map: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    // rpc.py raises Exception('--config %s not in key=value form'); a plain Error is printed by main().
    if (eq < 0) throw new Error(`${option} ${entry} not in key=value form`);
    map[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return map;
}

const asRows = (result: unknown) => (Array.isArray(result) ? (result as Record<string, unknown>[]) : []);

const tableOption = (cmd: Command) => cmd.option('--table', 'print the result as a table');

export const rpcCommands: readonly RpcCommandSpec[] = [
  {
    name: 'rpc_get_methods',
    description: 'Get list of supported RPC methods',
    deprecatedAliases: ['get_rpc_methods'],
    configure: (cmd) => {
      cmd.option('-c, --current', 'Get list of RPC methods only callable in the current state.');
      cmd.option('-i, --include-aliases', 'include RPC aliases');
      tableOption(cmd);
    },
    params: (a) => withTruthy({}, { current: a.current, include_aliases: a.includeAliases }),
    output: 'dict',
    table: (r) => methodTable(Array.isArray(r) ? r : []),
  },
  {
    name: 'spdk_get_version',
    description: 'Get SPDK version',
    deprecatedAliases: ['get_spdk_version'],
    configure: () => {},
    params: () => undefined,
    output: 'json',
  },
  {
    name: 'framework_start_init',
    description: 'Start initialization of subsystems',
    configure: () => {},
    params: () => undefined,
    output: 'none',
  },
  {
    name: 'framework_get_subsystems',
    description:
      'Print subsystems array in initialization order. Each subsystem entry contain (unsorted) array of subsystems it depends on.',
    configure: () => {},
    params: () => undefined,
    output: 'dict',
  },
  {
    name: 'framework_get_config',
    description: 'Print subsystem configuration',
    configure: (cmd) => cmd.argument('<name>', 'Name of subsystem to query'),
    params: (a) => ({ name: a.name }),
    output: 'dict',
  },
  {
    name: 'bdev_wait_for_examine',
    description: 'Report when all bdevs have been examined',
    configure: () => {},
    params: () => undefined,
    output: 'none',
  },
  {
    name: 'bdev_malloc_create',
    description: 'Create a bdev with malloc backend',
    deprecatedAliases: ['construct_malloc_bdev'],
    configure: (cmd) => {
      cmd.option('-b, --name <name>', 'Name of the bdev');
      cmd.option('-u, --uuid <uuid>', 'UUID of the bdev');
      cmd.argument('<total_size>', 'Size of malloc bdev in MB (float > 0)', parseFloatArg);
      cmd.argument('<block_size>', 'Data block size for this bdev', parseIntArg);
      cmd.option('-p, --physical-block-size <size>', 'Physical block size for this bdev.', parseIntArg);
      cmd.option('-o, --optimal-io-boundary <blocks>', 'Split on optimal IO boundary, in number of blocks, default 0 (disabled)', parseIntArg);
      cmd.option('-m, --md-size <size>', 'Metadata size for this bdev (0, 8, 16, 32, 64, or 128). Default is 0.', parseIntArg);
      cmd.option('-i, --md-interleave', 'Metadata location, interleaved if set, and separated if omitted.');
      cmd.option('-t, --dif-type <type>', 'Protection information type. Default=0 - no protection.', parseDifType);
      cmd.option('-d, --dif-is-head-of-md', 'Protection information is in the first 8 bytes of metadata. Default=false.');
    },
    // rpc.py: num_blocks = (total_size * 1024 * 1024) // block_size
    params: (a) =>
      withTruthy(
        { num_blocks: Math.floor((a.total_size * 1024 * 1024) / a.block_size), block_size: a.block_size },
        {
          physical_block_size: a.physicalBlockSize,
          name: a.name,
          uuid: a.uuid,
          optimal_io_boundary: a.optimalIoBoundary,
          md_size: a.mdSize,
          md_interleave: a.mdInterleave,
          dif_type: a.difType,
          dif_is_head_of_md: a.difIsHeadOfMd,
        },
      ),
    output: 'json',
  },
  {
    name: 'bdev_malloc_delete',
    description: 'Delete a malloc disk',
    deprecatedAliases: ['delete_malloc_bdev'],
    configure: (cmd) => cmd.argument('<name>', 'malloc bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'bdev_null_create',
    description: 'Add a bdev with null backend',
    deprecatedAliases: ['construct_null_bdev'],
    configure: (cmd) => {
      cmd.argument('<name>', 'Block device name');
      cmd.option('-u, --uuid <uuid>', 'UUID of the bdev');
      cmd.argument('<total_size>', 'Size of null bdev in MB (int > 0). Includes only data blocks.', parseIntArg);
      cmd.argument('<block_size>', 'Data block size for this bdev.', parseIntArg);
      cmd.option('-p, --physical-block-size <size>', 'Physical block size for this bdev.', parseIntArg);
      cmd.option('-m, --md-size <size>', 'Metadata size for this bdev. Default=0.', parseIntArg);
      cmd.option('-t, --dif-type <type>', 'Protection information type. Default=0 - no protection.', parseDifType);
      cmd.option('-d, --dif-is-head-of-md', 'Protection information is in the first 8 bytes of metadata. Default=false.');
    },
    params: (a) =>
      withTruthy(
        { name: a.name, num_blocks: Math.floor((a.total_size * 1024 * 1024) / a.block_size), block_size: a.block_size },
        { physical_block_size: a.physicalBlockSize, uuid: a.uuid, md_size: a.mdSize, dif_type: a.difType, dif_is_head_of_md: a.difIsHeadOfMd },
      ),
    output: 'json',
  },
  {
    name: 'bdev_null_delete',
    description: 'Delete a null bdev',
    deprecatedAliases: ['delete_null_bdev'],
    configure: (cmd) => cmd.argument('<name>', 'null bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'delete_bdev',
    description: 'Delete a blockdev of any type (legacy, removed in SPDK 19.04)',
    configure: (cmd) => cmd.argument('<bdev_name>', 'Blockdev name to be deleted. Example: Malloc0.'),
    params: (a) => ({ name: a.bdev_name }),
    output: 'none',
  },
  {
    name: 'bdev_get_bdevs',
    description: 'Display current blockdev list or required blockdev',
    deprecatedAliases: ['get_bdevs'],
    configure: (cmd) => {
      cmd.option('-b, --name <name>', 'Name of the Blockdev. Example: Nvme0n1');
      cmd.option('-t, --timeout-ms <ms>', 'Time in ms to wait for the bdev to appear (only used with the -b|--name option).', parseIntArg);
      tableOption(cmd);
    },
    params: (a) => withTruthy({}, { name: a.name, timeout: a.timeoutMs }),
    output: 'dict',
    table: (r) => bdevTable(asRows(r)),
  },
  {
    name: 'bdev_aio_create',
    description: 'Add a bdev with aio backend',
    deprecatedAliases: ['construct_aio_bdev'],
    configure: (cmd) => {
      cmd.argument('<filename>', 'Path to device or file (ex: /dev/sda)');
      cmd.argument('<name>', 'Block device name');
      cmd.argument('[block_size]', 'Block size for this bdev', parseIntArg);
      cmd.option('-r, --readonly', 'Set this bdev as read-only');
      // Newer rpc.py options; vhostd's aio bdev implements both.
      cmd.option('--fallocate', 'Support unmap/writezeros by fallocate');
      cmd.option('-u, --uuid <uuid>', 'UUID of the bdev (optional)');
    },
    params: (a) =>
      withTruthy({ name: a.name, filename: a.filename }, { block_size: a.block_size, readonly: a.readonly, fallocate: a.fallocate, uuid: a.uuid }),
    output: 'json',
  },
  {
    name: 'bdev_aio_delete',
    description: 'Delete an aio disk',
    deprecatedAliases: ['delete_aio_bdev'],
    configure: (cmd) => cmd.argument('<name>', 'aio bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'bdev_uring_create',
    description: 'Create a bdev with io_uring backend',
    configure: (cmd) => {
      cmd.argument('<filename>', 'Path to device or file (ex: /dev/nvme0n1)');
      cmd.argument('<name>', 'bdev name');
      cmd.argument('[block_size]', 'Block size for this bdev', parseIntArg);
      cmd.option('-u, --uuid <uuid>', 'UUID of the bdev (optional)');
    },
    params: (a) => withTruthy({ name: a.name, filename: a.filename }, { block_size: a.block_size, uuid: a.uuid }),
    output: 'json',
  },
  {
    name: 'bdev_uring_delete',
    description: 'Delete a uring bdev',
    configure: (cmd) => cmd.argument('<name>', 'uring bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  // vhostd's own (no rpc.py counterpart): qcow2 images.
  {
    name: 'bdev_qcow2_create',
    description: 'Create a bdev on a qcow2 image (and its backing chain)',
    configure: (cmd) => {
      cmd.argument('<filename>', 'Path to the qcow2 image');
      cmd.argument('<name>', 'bdev name');
      cmd.option('-r, --readonly', 'open the image read-only');
      cmd.option('-b, --backing-file <file>', "backing file instead of the header's (relative to the image's directory)");
      cmd.option('-u, --uuid <uuid>', 'UUID of the bdev (optional)');
    },
    params: (a) => withTruthy({ name: a.name, filename: a.filename }, { readonly: a.readonly, backing_file: a.backingFile, uuid: a.uuid }),
    output: 'json',
  },
  {
    name: 'bdev_qcow2_delete',
    description: 'Delete a qcow2 bdev (its metadata is written back first)',
    configure: (cmd) => cmd.argument('<name>', 'qcow2 bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'bdev_qcow2_create_image',
    description: 'Create a new qcow2 image file (refuses an existing file)',
    configure: (cmd) => {
      cmd.argument('<filename>', 'Absolute path of the new image');
      cmd.argument('<size>', 'Virtual size in bytes (a multiple of 512)', parseIntArg);
      cmd.option('-c, --cluster-size <bytes>', 'Cluster size (default 65536)', parseIntArg);
      cmd.option('-b, --backing-file <file>', "Backing file (relative to the image's directory)");
      cmd.option('-F, --backing-format <fmt>', 'Format of the backing file: qcow2 or raw (default: probed)');
    },
    params: (a) =>
      withTruthy({ filename: a.filename, size: a.size }, { cluster_size: a.clusterSize, backing_file: a.backingFile, backing_format: a.backingFormat }),
    output: 'json',
  },
  {
    name: 'bdev_qcow2_snapshot',
    description: 'Live external snapshot: create an overlay over the image of a qcow2 bdev in use and switch the bdev to it',
    configure: (cmd) => {
      cmd.argument('<name>', 'qcow2 bdev name');
      cmd.argument('<snapshot_file>', 'Absolute path of the new overlay (must not exist)');
      cmd.option('-c, --cluster-size <bytes>', 'Cluster size of the overlay (default 65536)', parseIntArg);
    },
    params: (a) => withTruthy({ name: a.name, snapshot_file: a.snapshot_file }, { cluster_size: a.clusterSize }),
    output: 'json',
  },
  {
    name: 'bdev_rbd_register_cluster',
    description: 'Add a Rados cluster with ceph rbd backend',
    configure: (cmd) => {
      cmd.argument('<name>', 'Name of the Rados cluster only known to rbd bdev');
      cmd.option('--user <user>', 'Ceph user name (i.e. admin, not client.admin)');
      cmd.option('--config-param <key=value>', 'adds a key=value configuration option for rados_conf_set (default: rely on config file)', collect);
      cmd.option('--config-file <path>', 'The file path of the Rados configuration file');
      cmd.option('--key-file <path>', 'The file path of the Rados keyring file');
      cmd.option('--core-mask <mask>', 'Set core mask for librbd IO context threads');
    },
    // rpc.py adds each optional key when it `is not None`.
    params: (a) => {
      const p: Record<string, unknown> = { name: a.name };
      if (a.user !== undefined) p.user_id = a.user;
      const configParam = keyValueMap(a.configParam, '--config');
      if (configParam !== undefined) p.config_param = configParam;
      if (a.configFile !== undefined) p.config_file = a.configFile;
      if (a.keyFile !== undefined) p.key_file = a.keyFile;
      if (a.coreMask !== undefined) p.core_mask = a.coreMask;
      return p;
    },
    output: 'json',
  },
  {
    name: 'bdev_rbd_unregister_cluster',
    description: 'Unregister a Rados cluster object',
    configure: (cmd) => cmd.argument('<name>', 'Name of the Rados Cluster only known to rbd bdev'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'bdev_rbd_get_clusters_info',
    description: 'Display registered Rados Cluster names and related info',
    configure: (cmd) => cmd.option('-b, --name <name>', 'Name of the registered Rados Cluster Name. Example: Cluster1'),
    params: (a) => (a.name !== undefined ? { name: a.name } : undefined),
    output: 'json',
  },
  {
    name: 'bdev_rbd_create',
    description: 'Add a bdev with ceph rbd backend',
    deprecatedAliases: ['construct_rbd_bdev'],
    configure: (cmd) => {
      cmd.option('-b, --name <name>', 'Name of the bdev');
      cmd.option('--user <user>', 'Ceph user name (i.e. admin, not client.admin)');
      cmd.option('--config <key=value>', 'adds a key=value configuration option for rados_conf_set (default: rely on config file)', collect);
      // The spellings of bdev_rbd_register_cluster, accepted here too.
      cmd.option('--user-id <user>', 'same as --user');
      cmd.option('--config-param <key=value>', 'same as --config', collect);
      cmd.argument('<pool_name>', 'rbd pool name');
      cmd.argument('<rbd_name>', 'rbd image name');
      cmd.argument('<block_size>', 'rbd block size', parseIntArg);
      cmd.option('-c, --cluster-name <name>', 'cluster name to identify the Rados cluster');
      cmd.option('-u, --uuid <uuid>', 'UUID of the bdev');
    },
    // rpc.py: pool_name, rbd_name, block_size; name if truthy; the rest when given.
    params: (a) => {
      const p: Record<string, unknown> = { pool_name: a.pool_name, rbd_name: a.rbd_name, block_size: a.block_size };
      if (a.name) p.name = a.name;
      const user = a.user ?? a.userId;
      if (user !== undefined) p.user_id = user;
      const config = keyValueMap([...(a.config ?? []), ...(a.configParam ?? [])], '--config');
      if (config !== undefined) p.config = config;
      if (a.clusterName !== undefined) p.cluster_name = a.clusterName;
      if (a.uuid !== undefined) p.uuid = a.uuid;
      return p;
    },
    output: 'json',
  },
  {
    name: 'bdev_rbd_delete',
    description: 'Delete a rbd bdev',
    deprecatedAliases: ['delete_rbd_bdev'],
    configure: (cmd) => cmd.argument('<name>', 'rbd bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'bdev_delay_create',
    description: 'Add a delay bdev on existing bdev',
    configure: (cmd) => {
      cmd.requiredOption('-b, --base-bdev-name <name>', 'Name of the existing bdev');
      cmd.requiredOption('-d, --name <name>', 'Name of the delay bdev');
      cmd.option('-u, --uuid <uuid>', 'UUID of the bdev (optional)');
      cmd.requiredOption('-r, --avg-read-latency <us>', 'Average latency to apply before completing read ops (in microseconds)', parseIntArg);
      cmd.requiredOption('-t, --nine-nine-read-latency <us>', 'latency to apply to 1 in 100 read ops (in microseconds)', parseIntArg);
      cmd.requiredOption('-w, --avg-write-latency <us>', 'Average latency to apply before completing write ops (in microseconds)', parseIntArg);
      cmd.requiredOption('-n, --nine-nine-write-latency <us>', 'latency to apply to 1 in 100 write ops (in microseconds)', parseIntArg);
    },
    params: (a) =>
      withTruthy(
        {
          base_bdev_name: a.baseBdevName,
          name: a.name,
          avg_read_latency: a.avgReadLatency,
          p99_read_latency: a.nineNineReadLatency,
          avg_write_latency: a.avgWriteLatency,
          p99_write_latency: a.nineNineWriteLatency,
        },
        { uuid: a.uuid },
      ),
    output: 'json',
  },
  {
    name: 'bdev_delay_delete',
    description: 'Delete a delay bdev',
    configure: (cmd) => cmd.argument('<name>', 'delay bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'bdev_delay_update_latency',
    description: 'Update one of the latency values for a given delay bdev',
    configure: (cmd) => {
      cmd.argument('<delay_bdev_name>', 'The name of the given delay bdev');
      cmd.argument('<latency_type>', 'one of: avg_read, avg_write, p99_read, p99_write. No other values accepted.');
      cmd.argument('<latency_us>', 'new latency value in microseconds.', parseIntArg);
    },
    params: (a) => ({ delay_bdev_name: a.delay_bdev_name, latency_type: a.latency_type, latency_us: a.latency_us }),
    output: 'json',
  },
  {
    name: 'bdev_error_create',
    description: 'Add bdev with error injection backend',
    deprecatedAliases: ['construct_error_bdev'],
    configure: (cmd) => {
      cmd.argument('<base_name>', 'base bdev name');
      cmd.option('--uuid <uuid>', 'UUID for this bdev');
    },
    params: (a) => (a.uuid !== undefined ? { base_name: a.base_name, uuid: a.uuid } : { base_name: a.base_name }),
    output: 'json',
  },
  {
    name: 'bdev_error_delete',
    description: 'Delete an error bdev',
    deprecatedAliases: ['delete_error_bdev'],
    configure: (cmd) => cmd.argument('<name>', 'error bdev name'),
    params: (a) => ({ name: a.name }),
    output: 'none',
  },
  {
    name: 'bdev_error_inject_error',
    description: 'bdev inject error',
    deprecatedAliases: ['bdev_inject_error'],
    configure: (cmd) => {
      cmd.argument('<name>', 'the name of the error injection bdev');
      cmd.argument('<io_type>', "io_type: 'clear' 'read' 'write' 'unmap' 'flush' 'all'");
      cmd.argument('<error_type>', "error_type: 'failure' 'pending' 'corrupt_data' 'nomem'");
      cmd.option('-n, --num <num>', 'the number of commands you want to fail', parseIntArg);
      cmd.option('-q, --queue-depth <qd>', 'the queue depth at which to trigger the error', parseIntArg);
      cmd.option('-o, --corrupt-offset <offset>', 'the offset in bytes to xor with corrupt_value', parseIntArg);
      cmd.option('-v, --corrupt-value <value>', 'the value for xor (1-255, 0 is invalid)', parseIntArg);
    },
    params: (a) =>
      withTruthy(
        { name: a.name, io_type: a.io_type, error_type: a.error_type },
        { num: a.num, queue_depth: a.queueDepth, corrupt_offset: a.corruptOffset, corrupt_value: a.corruptValue },
      ),
    output: 'none',
  },
  {
    name: 'bdev_get_iostat',
    description: 'Display current I/O statistics of all the blockdevs or specified blockdev.',
    deprecatedAliases: ['get_bdevs_iostat'],
    configure: (cmd) => {
      cmd.option('-b, --name <name>', 'Name of the Blockdev. Example: Nvme0n1');
      cmd.option('-c, --per-channel', 'Display per channel IO stats for specified device');
      cmd.addOption(new Option('--reset-mode <mode>', 'Mode to reset I/O statistics after getting').choices(RESET_MODES));
      tableOption(cmd);
      cmd.option(
        '--interval <s>',
        'with --table: sample twice this many seconds apart and show IO/s and MiB/s over the interval next to the QoS limits (bdev_get_bdevs assigned_rate_limits)',
        parseFloatArg,
      );
    },
    // v24.01 rpc.py: name and per_channel when truthy; v25.09's --reset-mode when given.
    params: (a) => withTruthy({}, { name: a.name, per_channel: a.perChannel, reset_mode: a.resetMode }),
    output: 'dict',
    table: (r) => iostatTable(r),
    tableQuery: (a) => (a.interval === undefined ? undefined : iostatRateQuery(a)),
  },
  {
    name: 'bdev_reset_iostat',
    description: 'Reset I/O statistics of all the blockdevs or specified blockdev.',
    configure: (cmd) => {
      cmd.option('-b, --name <name>', 'Name of the Blockdev. Example: Nvme0n1');
      cmd.addOption(new Option('-m, --mode <mode>', 'Mode to reset I/O statistics').choices(RESET_MODES));
    },
    params: (a) => withDefined({}, { name: a.name, mode: a.mode }),
    output: 'none',
  },
  {
    name: 'bdev_set_qos_limit',
    description: 'Set QoS rate limit on a blockdev',
    deprecatedAliases: ['set_bdev_qos_limit'],
    configure: (cmd) => {
      cmd.argument('<name>', 'Blockdev name to set QoS. Example: Malloc0');
      cmd.option('--rw-ios-per-sec <n>', 'R/W IOs per second limit (>=1000, example: 20000). 0 means unlimited.', parseIntArg);
      cmd.option('--rw-mbytes-per-sec <n>', 'R/W megabytes per second limit (>=1, example: 100). 0 means unlimited.', parseIntArg);
      cmd.option('--r-mbytes-per-sec <n>', 'Read megabytes per second limit (>=1, example: 100). 0 means unlimited.', parseIntArg);
      cmd.option('--w-mbytes-per-sec <n>', 'Write megabytes per second limit (>=1, example: 100). 0 means unlimited.', parseIntArg);
    },
    // rpc.py sends each limit that was given, 0 included (0 removes that limit).
    params: (a) =>
      withDefined(
        { name: a.name },
        { rw_ios_per_sec: a.rwIosPerSec, rw_mbytes_per_sec: a.rwMbytesPerSec, r_mbytes_per_sec: a.rMbytesPerSec, w_mbytes_per_sec: a.wMbytesPerSec },
      ),
    output: 'none',
  },
  {
    name: 'bdev_enable_histogram',
    description: 'Enable or disable histogram for specified bdev',
    deprecatedAliases: ['enable_bdev_histogram'],
    configure: (cmd) => {
      // argparse: both store into `enable` (default True), the last one given wins.
      cmd.option('-e, --enable', 'Enable histograms on specified device');
      cmd.option('-d, --disable', 'Disable histograms on specified device');
      cmd.on('option:disable', () => cmd.setOptionValue('enable', false));
      cmd.option('-o, --opc <opc>', 'Enable histogram for specified io type. Defaults to all io types if not specified. Refer to bdev_get_bdevs RPC for the list of io types.');
      cmd.option('--granularity <n>', 'Histogram bucket granularity.', parseIntArg);
      cmd.option('--min-nsec <ns>', 'Histogram min value in nanoseconds.', parseIntArg);
      cmd.option('--max-nsec <ns>', 'Histogram max value in nanoseconds.', parseIntArg);
      cmd.argument('<name>', 'bdev name');
    },
    // v25.09 rpc.py: name, enable, then each option that was given (0 included).
    params: (a) =>
      withDefined({ name: a.name, enable: a.enable ?? true }, { opc: a.opc, granularity: a.granularity, min_nsec: a.minNsec, max_nsec: a.maxNsec }),
    output: 'none',
  },
  {
    name: 'bdev_get_histogram',
    description: 'Get histogram for specified bdev (with --table: percentiles of one or more bdevs, or of every bdev whose histogram is on)',
    deprecatedAliases: ['get_bdev_histogram'],
    configure: (cmd) => {
      cmd.argument('[name...]', 'bdev name (several, or none for every bdev with an enabled histogram, with --table)');
      tableOption(cmd);
    },
    validate: (a) => {
      const names = a.name as string[];
      if (names.length !== 1 && !a.table) {
        throw new Error(names.length === 0 ? 'bdev_get_histogram: the following arguments are required: name' : 'bdev_get_histogram: more than one name needs --table');
      }
    },
    params: (a) => ((a.name as string[]).length > 0 ? { name: (a.name as string[])[0] } : undefined),
    output: 'dict',
    tableQuery: (a) => histogramQuery(a.name as string[]),
  },
  {
    name: 'vhost_controller_set_coalescing',
    description: 'Set vhost controller coalescing',
    deprecatedAliases: ['set_vhost_controller_coalescing'],
    configure: (cmd) => {
      cmd.argument('<ctrlr>', 'controller name');
      cmd.argument('<delay_base_us>', 'Base delay time', parseIntArg);
      cmd.argument('<iops_threshold>', 'IOPS threshold when coalescing is enabled', parseIntArg);
    },
    params: (a) => ({ ctrlr: a.ctrlr, delay_base_us: a.delay_base_us, iops_threshold: a.iops_threshold }),
    output: 'none',
  },
  {
    name: 'vhost_create_scsi_controller',
    description: 'Add new vhost controller',
    deprecatedAliases: ['construct_vhost_scsi_controller'],
    configure: (cmd) => {
      cmd.argument('<ctrlr>', 'controller name');
      cmd.option('--cpumask <mask>', 'cpu mask for this controller');
      cmd.option('--delay', 'whether delay starting controller or not');
    },
    params: (a) => withTruthy({ ctrlr: a.ctrlr, delay: a.delay ?? false }, { cpumask: a.cpumask }),
    output: 'none',
  },
  {
    name: 'vhost_start_scsi_controller',
    description: 'Start vhost scsi controller',
    configure: (cmd) => cmd.argument('<ctrlr>', 'controller name'),
    params: (a) => ({ ctrlr: a.ctrlr }),
    output: 'none',
  },
  {
    name: 'vhost_scsi_controller_add_target',
    description: 'Add lun to vhost controller',
    deprecatedAliases: ['add_vhost_scsi_lun'],
    configure: (cmd) => {
      cmd.argument('<ctrlr>', 'controller name where add lun');
      cmd.argument('<scsi_target_num>', 'scsi_target_num', parseIntArg);
      cmd.argument('<bdev_name>', 'bdev name');
    },
    params: (a) => ({ ctrlr: a.ctrlr, scsi_target_num: a.scsi_target_num, bdev_name: a.bdev_name }),
    output: 'json',
  },
  {
    name: 'vhost_scsi_controller_remove_target',
    description: 'Remove target from vhost controller',
    deprecatedAliases: ['remove_vhost_scsi_target'],
    configure: (cmd) => {
      cmd.argument('<ctrlr>', 'controller name to remove target from');
      cmd.argument('<scsi_target_num>', 'scsi_target_num', parseIntArg);
    },
    params: (a) => ({ ctrlr: a.ctrlr, scsi_target_num: a.scsi_target_num }),
    output: 'none',
  },
  {
    name: 'remove_vhost_scsi_dev',
    description: 'Remove device from vhost controller (legacy, SPDK 17.07)',
    configure: (cmd) => {
      cmd.argument('<ctrlr>', 'controller name to remove device from');
      cmd.argument('<scsi_dev_num>', 'scsi_dev_num', parseIntArg);
    },
    params: (a) => ({ ctrlr: a.ctrlr, scsi_dev_num: a.scsi_dev_num }),
    output: 'none',
  },
  {
    name: 'vhost_create_blk_controller',
    description: 'Add a new vhost block controller',
    deprecatedAliases: ['construct_vhost_blk_controller'],
    configure: (cmd) => {
      cmd.argument('<ctrlr>', 'controller name');
      cmd.argument('<dev_name>', 'device name');
      cmd.option('--cpumask <mask>', 'cpu mask for this controller');
      cmd.option('--transport <name>', 'virtio blk transport name (default: vhost_user_blk)');
      cmd.option('-r, --readonly', 'Set controller as read-only');
      cmd.option('-p, --packed-ring', 'Set controller as packed ring supported');
    },
    // rpc.py passes vars(args) minus globals and None values: booleans always, strings when given.
    params: (a) => {
      const p: Record<string, unknown> = { ctrlr: a.ctrlr, dev_name: a.dev_name };
      if (a.cpumask !== undefined) p.cpumask = a.cpumask;
      if (a.transport !== undefined) p.transport = a.transport;
      p.readonly = a.readonly ?? false;
      p.packed_ring = a.packedRing ?? false;
      return p;
    },
    output: 'none',
  },
  {
    name: 'vhost_get_controllers',
    description: 'List all or specific vhost controller(s)',
    deprecatedAliases: ['get_vhost_controllers'],
    configure: (cmd) => {
      cmd.option('-n, --name <name>', 'Name of vhost controller');
      tableOption(cmd);
    },
    params: (a) => withTruthy({}, { name: a.name }),
    output: 'dict',
    table: (r) => controllerTable(asRows(r)),
  },
  {
    name: 'vhost_delete_controller',
    description: 'Delete a vhost controller',
    deprecatedAliases: ['remove_vhost_controller'],
    configure: (cmd) => cmd.argument('<ctrlr>', 'controller name'),
    params: (a) => ({ ctrlr: a.ctrlr }),
    output: 'none',
  },
  {
    name: 'framework_get_reactors',
    description: 'Display list of all reactors',
    configure: (cmd) => {
      tableOption(cmd);
      cmd.option('--interval <s>', 'with --table: sample twice this many seconds apart for IOPS and busy % over the interval (0: one sample, no IOPS)', parseFloatArg, 1);
    },
    params: () => undefined,
    output: 'dict',
    table: (r, previous) => reactorTable(r, previous),
    sampleMs: (a) => Math.max(0, Number(a.interval ?? 1)) * 1000,
  },
  {
    name: 'thread_get_stats',
    description: 'Display current statistics of all the threads',
    configure: () => undefined,
    params: () => undefined,
    output: 'dict',
  },
];
