// Replays an SPDK JSON config (the save_config format) inside the daemon at start: `vhostd --json`.
// Follows SPDK's lib/init/json_config.c: entries are RPC calls run in file order, first the
// methods allowed at STARTUP, then (after framework_start_init) the RUNTIME-only ones; subsystem
// names are not checked, a null or empty config is fine, and the first failing call stops the load.
//
// Where vhostd differs, on purpose: SPDK fails on any method it does not know. vhostd skips, with
// a warning, the SPDK methods that only tune SPDK internals it does not have (I/O buffer pools,
// socket and accel options, the scheduler, NVMe hotplug polling...), so a config saved by a real
// SPDK vhost target loads as long as the bdevs and controllers it creates are ones vhostd has.
// Any other unknown method, or a malformed entry, fails the load before anything is created.
import type { Logger } from 'pino';
import { VhostdError } from '../util/errors.js';
import { RpcState, type RpcMethodEntry, type RpcMethodTable } from './methods/index.js';

/** SPDK methods without a vhostd equivalent that only tune SPDK itself: skipped with a warning. */
const SPDK_TUNING_METHODS = new Set([
  'sock_set_default_impl',
  'accel_assign_opc',
  'accel_set_driver',
  'dsa_scan_accel_module',
  'iaa_scan_accel_module',
  'ioat_scan_accel_module',
  'framework_set_scheduler',
  'framework_disable_cpumask_locks',
  'framework_enable_cpumask_locks',
  'bdev_nvme_set_hotplug',
  'vmd_enable',
  'log_set_flag',
  'log_clear_flag',
  'log_set_level',
  'log_set_print_level',
  'trace_enable_tpoint_group',
  'trace_disable_tpoint_group',
  'trace_set_tpoint_mask',
  'trace_clear_tpoint_mask',
  // Their names in SPDK v18.10, whose save_config of a vhost app writes the NVMe module's
  // set_bdev_nvme_options and set_bdev_nvme_hotplug into every bdev subsystem.
  'set_bdev_nvme_hotplug',
  'scan_ioat_copy_engine',
  'set_nvmf_target_config',
  'set_log_level',
  'set_log_print_level',
  'set_trace_flag',
  'clear_trace_flag',
]);

/** Whether an SPDK method vhostd does not implement can be skipped without changing what it serves. */
export function isIgnorableSpdkMethod(method: string): boolean {
  // iobuf_set_options, sock_impl_set_options, accel_set_options, bdev_nvme_set_options, ...
  // and the older spelling set_bdev_nvme_options, set_iscsi_options, set_nvmf_target_options.
  return SPDK_TUNING_METHODS.has(method) || /^[a-z0-9_]+_set_options$/.test(method) || /^set_[a-z0-9_]+_options$/.test(method);
}

export class ConfigError extends Error {}

interface Step {
  where: string;
  method: string;
  params: unknown;
  entry: RpcMethodEntry;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** Validates the file's shape and resolves every entry; throws ConfigError before anything runs. */
function plan(config: unknown, table: RpcMethodTable, log: Logger, source: string): Step[] {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new ConfigError(`${source}: a config is a JSON object with a "subsystems" array, not ${describe(config)}`);
  }
  const subsystems = (config as { subsystems?: unknown }).subsystems;
  if (subsystems === undefined) {
    log.warn({ config: source }, "no 'subsystems' key in the JSON configuration; nothing to load");
    return [];
  }
  if (!Array.isArray(subsystems)) throw new ConfigError(`${source}: "subsystems" must be an array, not ${describe(subsystems)}`);
  const steps: Step[] = [];
  subsystems.forEach((sub: unknown, si) => {
    if (typeof sub !== 'object' || sub === null || Array.isArray(sub)) {
      throw new ConfigError(`${source}: subsystems[${si}] must be an object, not ${describe(sub)}`);
    }
    const { subsystem, config: entries } = sub as { subsystem?: unknown; config?: unknown };
    if (typeof subsystem !== 'string') throw new ConfigError(`${source}: subsystems[${si}] has no "subsystem" name`);
    if (entries === null) return;
    if (!Array.isArray(entries)) {
      throw new ConfigError(`${source}: subsystem '${subsystem}': "config" must be an array or null, not ${describe(entries)}`);
    }
    // Newer SPDK can save batches (arrays of calls); they run in order like single entries.
    const flat: Array<[string, unknown]> = [];
    entries.forEach((e: unknown, i) => {
      if (Array.isArray(e)) e.forEach((x: unknown, j) => flat.push([`${i}.${j}`, x]));
      else flat.push([String(i), e]);
    });
    for (const [index, raw] of flat) {
      const where = `subsystem '${subsystem}' entry ${index}`;
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${source}: ${where} must be an object, not ${describe(raw)}`);
      const { method, params } = raw as { method?: unknown; params?: unknown };
      if (typeof method !== 'string') throw new ConfigError(`${source}: ${where} has no "method" string`);
      if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) {
        throw new ConfigError(`${source}: ${where} (${method}): "params" must be an object, not ${describe(params)}`);
      }
      const entry = table.get(method);
      if (!entry) {
        if (isIgnorableSpdkMethod(method)) {
          log.warn({ config: source, subsystem, method }, `skipping ${method}: an SPDK tuning method with no effect in vhostd`);
          continue;
        }
        throw new ConfigError(`${source}: ${where}: method '${method}' is not implemented by vhostd`);
      }
      steps.push({ where, method, params, entry });
    }
  });
  return steps;
}

async function run(step: Step, source: string): Promise<void> {
  try {
    await step.entry.handler(step.params);
  } catch (e) {
    const reason =
      e instanceof VhostdError ? `${e.message} (code ${e.code})${e.detail ? `: ${e.detail}` : ''}` : e instanceof Error ? e.message : String(e);
    throw new ConfigError(`${source}: ${step.where} (${step.method}) failed: ${reason}`);
  }
}

/** Loads `config` through `table`; throws ConfigError naming the entry that could not be applied. */
export async function loadJsonConfig(config: unknown, table: RpcMethodTable, log: Logger, source = 'JSON config'): Promise<void> {
  const steps = plan(config, table, log, source);
  // STARTUP pass, then framework_start_init (nothing to do: vhostd initializes eagerly), then the
  // RUNTIME pass without the methods that already ran (SPDK calls a both-state method once).
  for (const s of steps) if (s.entry.states & RpcState.STARTUP) await run(s, source);
  for (const s of steps) if (s.entry.states & RpcState.RUNTIME && !(s.entry.states & RpcState.STARTUP)) await run(s, source);
  log.info({ config: source, calls: steps.length }, 'JSON config loaded');
}
