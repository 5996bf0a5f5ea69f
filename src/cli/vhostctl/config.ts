// save_config / load_config (and the per-subsystem variants) exactly as SPDK v24.01
// python/spdk/rpc/__init__.py does them, client side: save asks framework_get_subsystems and then
// framework_get_config per subsystem; load checks every method against rpc_get_methods, then
// replays the calls allowed in the current state, in file order, as long as that makes progress.

/** The one thing these need from a connection: a call that rejects with RpcError on an error reply. */
export interface ConfigRpc {
  call<T = unknown>(method: string, params?: object): Promise<T>;
}

/** What rpc.py raises as JSONRPCException with a plain message (no request/response dump). */
export class ConfigCommandError extends Error {}

/** Python's json.dumps(value, indent=indent) (ensure_ascii), as rpc.py's _json_dump writes files. */
export function pythonJsonDump(value: unknown, indent: number | null): string {
  const str = (s: string) => JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const walk = (v: unknown, level: number): string => {
    if (v === null || v === undefined) return 'null';
    if (typeof v === 'string') return str(v);
    if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : v > 0 ? 'Infinity' : v < 0 ? '-Infinity' : 'NaN';
    if (typeof v === 'boolean') return v ? 'true' : 'false';
    const items = Array.isArray(v)
      ? v.map((x) => walk(x, level + 1))
      : Object.entries(v as Record<string, unknown>)
          .filter(([, x]) => x !== undefined)
          .map(([k, x]) => `${str(k)}: ${walk(x, level + 1)}`);
    const [open, close] = Array.isArray(v) ? ['[', ']'] : ['{', '}'];
    if (items.length === 0) return open + close;
    if (indent === null) return `${open}${items.join(', ')}${close}`;
    const pad = (n: number) => '\n' + ' '.repeat(indent * n);
    return `${open}${pad(level + 1)}${items.join(`,${pad(level + 1)}`)}${pad(level)}${close}`;
  };
  return walk(value, 0);
}

/** rpc.py _json_dump: indent < 0 means compact; a newline follows. */
function dump(value: unknown, indent: number): string {
  return `${pythonJsonDump(value, indent < 0 ? null : indent)}\n`;
}

export async function saveConfig(rpc: ConfigRpc, indent = 2): Promise<string> {
  const config: { subsystems: Array<{ subsystem: string; config: unknown }> } = { subsystems: [] };
  for (const elem of await rpc.call<Array<{ subsystem: string }>>('framework_get_subsystems')) {
    config.subsystems.push({ subsystem: elem.subsystem, config: await rpc.call('framework_get_config', { name: elem.subsystem }) });
  }
  return dump(config, indent);
}

export async function saveSubsystemConfig(rpc: ConfigRpc, name: string, indent = 2): Promise<string> {
  return dump({ subsystem: name, config: await rpc.call('framework_get_config', { name }) }, indent);
}

interface Entry {
  method?: unknown;
  params?: object;
}

interface SubsystemConfig {
  subsystem?: unknown;
  config?: Entry[] | null;
}

/** Python truthiness of a JSON value (empty containers and strings, 0, false, null are falsy). */
function truthy(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object' && v !== null) return Object.keys(v).length > 0;
  return Boolean(v);
}

function isEntryAllowed(elem: Entry, allowed: string[]): boolean {
  return typeof elem === 'object' && elem !== null && typeof elem.method === 'string' && allowed.includes(elem.method);
}

/** client.call(**elem): the entry's method with its params (rpc.py sends none when empty). */
function callEntry(rpc: ConfigRpc, elem: Entry): Promise<unknown> {
  return rpc.call(elem.method as string, truthy(elem.params) ? elem.params : undefined);
}

function subsystemsOf(json: unknown): SubsystemConfig[] {
  const subsystems = (json as { subsystems?: unknown } | null)?.subsystems;
  // rpc.py would die with a KeyError/TypeError traceback; say what is wrong instead.
  if (!Array.isArray(subsystems)) throw new ConfigCommandError('Invalid JSON configuration: expected an object with a "subsystems" array');
  return subsystems as SubsystemConfig[];
}

/**
 * rpc.py load_config. Returns what rpc.py prints on stdout: nothing, or the note that some entries
 * were never callable (e.g. STARTUP-only methods such as bdev_set_options on a running target).
 */
export async function loadConfig(rpc: ConfigRpc, json: unknown, includeAliases = false): Promise<string> {
  const subsystems = subsystemsOf(json).filter((s) => truthy(s.config));
  let allowed = await rpc.call<string[]>('rpc_get_methods', { include_aliases: includeAliases });
  if (subsystems.length === 0 && allowed.includes('framework_start_init')) {
    await rpc.call('framework_start_init');
    return '';
  }
  for (const s of subsystems) {
    for (const elem of s.config as Entry[]) {
      if (!isEntryAllowed(elem, allowed)) throw new ConfigCommandError('Unknown method was included in the config file');
    }
  }
  while (subsystems.length > 0) {
    allowed = await rpc.call<string[]>('rpc_get_methods', { current: true, include_aliases: includeAliases });
    let allowedFound = false;
    for (const s of [...subsystems]) {
      const config = s.config as Entry[];
      for (const elem of [...config]) {
        if (!isEntryAllowed(elem, allowed)) continue;
        await callEntry(rpc, elem);
        config.splice(config.indexOf(elem), 1);
        allowedFound = true;
      }
      if (config.length === 0) subsystems.splice(subsystems.indexOf(s), 1);
    }
    if (allowed.includes('framework_start_init')) {
      await rpc.call('framework_start_init');
      allowedFound = true;
    }
    if (!allowedFound) break;
  }
  return subsystems.length > 0 ? 'Some configs were skipped because the RPC state that can call them passed over.\n' : '';
}

/** rpc.py load_subsystem_config: one subsystem's entries, those callable now. */
export async function loadSubsystemConfig(rpc: ConfigRpc, json: unknown): Promise<string> {
  const subsystem = json as SubsystemConfig;
  if (!truthy(subsystem?.config)) return '';
  const config = subsystem.config as Entry[];
  let allowed = await rpc.call<string[]>('rpc_get_methods');
  for (const elem of config) {
    if (!isEntryAllowed(elem, allowed)) throw new ConfigCommandError('Unknown method was included in the config file');
  }
  allowed = await rpc.call<string[]>('rpc_get_methods', { current: true });
  for (const elem of [...config]) {
    if (!isEntryAllowed(elem, allowed)) continue;
    await callEntry(rpc, elem);
    config.splice(config.indexOf(elem), 1);
  }
  return config.length > 0 ? 'Some configs were skipped because they cannot be called in the current RPC state.\n' : '';
}
