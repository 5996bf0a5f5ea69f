// vhostctl subcommands: the same names, positional arguments, flags and params building as SPDK
// v24.01 scripts/rpc.py + python/spdk/rpc/{__init__,bdev,vhost}.py, so rpc.py invocations work
// with vhostctl unchanged. Each spec says how to turn parsed arguments into the RPC params and how
// rpc.py prints the result.
import { type Command, InvalidArgumentError } from 'commander';
import { bdevTable, controllerTable, methodTable, reactorTable } from './tables.js';

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
  /** Builds the params object sent (undefined or {} = no params, as rpc.py). */
  params(args: CliArgs): object | undefined;
  output: OutputStyle;
  /** --table rendering for list results. */
  table?(result: unknown): string;
}

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
    configure: (cmd) => tableOption(cmd),
    params: () => undefined,
    output: 'dict',
    table: (r) => reactorTable(r),
  },
  {
    name: 'thread_get_stats',
    description: 'Display current statistics of all the threads',
    configure: () => undefined,
    params: () => undefined,
    output: 'dict',
  },
];
