// vhostctl: a drop-in for SPDK's scripts/rpc.py for the methods vhostd implements.
//   vhostctl [-s RPC_SOCKET] [-t TIMEOUT] [-r RETRIES] [--dry-run] METHOD ARGS...
//   vhostctl call METHOD [JSON_PARAMS]
// Output and error text follow rpc.py so existing scripts keep working.
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { RpcClient, RpcError } from '../rpc/client.js';
import { DEFAULT_RPC_SOCKET } from '../rpc/server.js';
import { type CliArgs, type OutputStyle, type RpcCommandSpec, type TableQuery, parseFloatArg, parseIntArg, rpcCommands } from './vhostctl/commands.js';
import { ConfigCommandError, type ConfigRpc, loadConfig, loadSubsystemConfig, saveConfig, saveSubsystemConfig } from './vhostctl/config.js';
import { formatConnectError, formatDict, formatJson, formatRpcError, pythonJsonDumps } from './vhostctl/output.js';

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const processIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

interface GlobalOptions {
  serverAddr: string;
  timeout: number;
  connRetries: number;
  dryRun?: boolean;
}

interface Invocation {
  method: string;
  params: object | undefined;
  output: OutputStyle;
  table?: (result: unknown, previous?: unknown) => string;
  /** With a table: the first sample, this many ms before the one shown (rates over the interval). */
  sampleMs?: number;
  /** With a table: makes its own calls and renders (instead of one call of `method`). */
  tableQuery?: TableQuery;
  /** Name typed by the user, when it is a deprecated alias of `canonical`. */
  deprecated?: { alias: string; canonical: string };
}

/** Thrown by actions to end the program with an exit code after printing. */
class ExitError extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

/** rpc.py's replace_arg_underscores: `--packed_ring` means `--packed-ring`. */
export function normalizeOptionUnderscores(args: readonly string[]): string[] {
  return args.map((arg) => {
    if (!arg.startsWith('--') || !arg.includes('_')) return arg;
    const [opt = '', ...vals] = arg.split('=');
    return [opt.replaceAll('_', '-'), ...vals].join('=');
  });
}

function print(io: CliIo, style: OutputStyle, result: unknown): void {
  if (style === 'dict') io.out(`${formatDict(result)}\n`);
  else if (style === 'json') io.out(`${formatJson(result)}\n`);
}

async function connect(client: RpcClient, opts: GlobalOptions, io: CliIo): Promise<void> {
  // rpc.py -r: retry N times at 200 ms intervals, then one last attempt that reports its error.
  for (let i = 0; i < opts.connRetries; i++) {
    try {
      return await client.connect();
    } catch {
      await sleep(200);
    }
  }
  try {
    await client.connect();
  } catch (err) {
    const details = existsSync(opts.serverAddr)
      ? (err as Error).message
      : `Invalid or non-existing address: '${opts.serverAddr}'`;
    io.err(`${formatConnectError(opts.serverAddr, details)}\n`);
    throw new ExitError(1);
  }
}

async function invoke(inv: Invocation, opts: GlobalOptions, useTable: boolean, io: CliIo): Promise<void> {
  if (opts.dryRun) {
    io.out(`Request:\n${pythonJsonDumps({ method: inv.method, params: inv.params ?? null })}\n`);
    return;
  }
  const client = new RpcClient(opts.serverAddr, { timeoutMs: opts.timeout * 1000 });
  try {
    await connect(client, opts, io);
    let previous: unknown;
    if (useTable && inv.tableQuery) {
      io.out(`${await inv.tableQuery((method, params) => client.call(method, params))}\n`);
      if (inv.deprecated) io.err(`${inv.deprecated.alias} is deprecated, use ${inv.deprecated.canonical} instead.\n`);
      return;
    }
    if (useTable && inv.table && inv.sampleMs) {
      previous = await client.call(inv.method, inv.params);
      await sleep(inv.sampleMs);
    }
    const result = await client.call(inv.method, inv.params);
    if (useTable && inv.table) io.out(`${inv.table(result, previous)}\n`);
    else print(io, inv.output, result);
    if (inv.deprecated) io.err(`${inv.deprecated.alias} is deprecated, use ${inv.deprecated.canonical} instead.\n`);
  } catch (err) {
    if (err instanceof ExitError) throw err;
    if (err instanceof RpcError) {
      // A table may call other methods too: report the one that failed.
      io.err(`${formatRpcError(err.method ?? inv.method, err.params, err.requestId ?? 0, err)}\n`);
    } else if ((err as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
      io.err('Timeout while waiting for response:\n\n\n');
    } else {
      io.err(`${(err as Error).message}\n`);
    }
    throw new ExitError(1);
  } finally {
    client.close();
  }
}

/** Collects a subcommand's positionals (by declared name) and options into one object. */
function collectArgs(cmd: Command): CliArgs {
  const args: CliArgs = {};
  cmd.registeredArguments.forEach((arg, i) => {
    args[arg.name()] = cmd.processedArgs[i];
  });
  return { ...args, ...cmd.opts() };
}

function addRpcCommand(program: Command, spec: RpcCommandSpec, io: CliIo, alias?: string): void {
  const name = alias ?? spec.name;
  const description = alias ? `${spec.description} (deprecated, use ${spec.name})` : spec.description;
  const cmd = program.command(name).description(description);
  spec.configure(cmd);
  cmd.action(async (...actionArgs: unknown[]) => {
    const self = actionArgs[actionArgs.length - 1] as Command;
    const args = collectArgs(self);
    const useTable = Boolean(args.table);
    spec.validate?.(args);
    const inv: Invocation = {
      method: spec.method ?? spec.name,
      params: spec.params(args),
      output: spec.output,
      table: spec.table,
      sampleMs: spec.sampleMs?.(args),
      tableQuery: useTable ? spec.tableQuery?.(args) : undefined,
      deprecated: alias ? { alias, canonical: spec.name } : undefined,
    };
    await invoke(inv, program.opts<GlobalOptions>(), useTable, io);
  });
}

function addRawCallCommand(program: Command, io: CliIo): void {
  program
    .command('call')
    .description('Call any RPC method with optional JSON params and print its result')
    .argument('<method>', 'RPC method name')
    .argument('[json_params]', 'params as a JSON object, e.g. \'{"name": "Malloc0"}\'', (value: string) => {
      try {
        return JSON.parse(value) as unknown;
      } catch (err) {
        throw new InvalidArgumentError(`not valid JSON: ${(err as Error).message}`);
      }
    })
    .action(async (method: string, params: unknown) => {
      if (params !== undefined && (typeof params !== 'object' || params === null)) {
        throw new InvalidArgumentError('json_params must be a JSON object or array');
      }
      await invoke({ method, params: params as object | undefined, output: 'json' }, program.opts<GlobalOptions>(), false, io);
    });
}

/** Runs `fn` on one connection, reporting failures like invoke() (rpc.py prints JSONRPCException). */
async function withClient(opts: GlobalOptions, io: CliIo, fn: (rpc: ConfigRpc) => Promise<string>): Promise<void> {
  const client = new RpcClient(opts.serverAddr, { timeoutMs: opts.timeout * 1000 });
  try {
    await connect(client, opts, io);
    io.out(await fn(client));
  } catch (err) {
    if (err instanceof ExitError) throw err;
    if (err instanceof RpcError) {
      io.err(`${formatRpcError(err.method ?? '', err.params, err.requestId ?? 0, err)}\n`);
    } else if ((err as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
      io.err('Timeout while waiting for response:\n\n\n');
    } else {
      io.err(`${(err as Error).message}\n`);
    }
    throw new ExitError(1);
  } finally {
    client.close();
  }
}

/** rpc.py _json_load: -j is a file path if one exists, else JSON text; stdin when absent. */
async function readJsonConf(jsonConf: string | undefined): Promise<unknown> {
  let text: string;
  if (jsonConf === undefined) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } else {
    text = existsSync(jsonConf) ? readFileSync(jsonConf, 'utf8') : jsonConf;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ConfigCommandError(`Invalid JSON configuration: ${(err as Error).message}`);
  }
}

function addConfigCommands(program: Command, io: CliIo): void {
  const globals = () => program.opts<GlobalOptions>();
  const indentOption = (cmd: Command) =>
    cmd.option('-i, --indent <n>', 'Indent level. Value less than 0 mean compact mode. Default indent level is 2.', parseIntArg, 2);
  indentOption(program.command('save_config').description('Write current (live) configuration of SPDK subsystems and targets to stdout.')).action(
    async (o: { indent: number }) => withClient(globals(), io, (rpc) => saveConfig(rpc, o.indent)),
  );
  program
    .command('load_config')
    .description('Configure SPDK subsystems and targets using JSON RPC.')
    .option('-i, --include-aliases', 'include RPC aliases')
    .option('-j, --json-conf <json>', 'Valid JSON configuration (default: stdin)')
    .action(async (o: { includeAliases?: boolean; jsonConf?: string }) =>
      withClient(globals(), io, async (rpc) => loadConfig(rpc, await readJsonConf(o.jsonConf), o.includeAliases ?? false)),
    );
  indentOption(program.command('save_subsystem_config').description('Write current (live) configuration of SPDK subsystem to stdout.'))
    .requiredOption('-n, --name <name>', 'Name of subsystem')
    .action(async (o: { indent: number; name: string }) => withClient(globals(), io, (rpc) => saveSubsystemConfig(rpc, o.name, o.indent)));
  program
    .command('load_subsystem_config')
    .description('Configure SPDK subsystem using JSON RPC.')
    .option('-j, --json-conf <json>', 'Valid JSON configuration (default: stdin)')
    .action(async (o: { jsonConf?: string }) => withClient(globals(), io, async (rpc) => loadSubsystemConfig(rpc, await readJsonConf(o.jsonConf))));
}

export function buildProgram(io: CliIo = processIo): Command {
  const program = new Command('vhostctl')
    .description('vhostd RPC command line interface (compatible with SPDK scripts/rpc.py)')
    .usage('[options] METHOD [ARGS...]')
    .option('-s, --server-addr <path>', 'RPC domain socket path', DEFAULT_RPC_SOCKET)
    .option(
      '-t, --timeout <seconds>',
      'Timeout as a floating point number expressed in seconds waiting for response',
      parseFloatArg,
      60,
    )
    .option('-r, --conn-retries <n>', 'Retry connecting to the RPC server N times with 0.2s interval', parseIntArg, 0)
    .option('--dry-run', 'Display request and exit')
    // Options after METHOD belong to METHOD (rpc.py's -t is a global timeout, bdev_get_bdevs -t is not).
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });

  for (const spec of rpcCommands) {
    addRpcCommand(program, spec, io);
    for (const alias of spec.deprecatedAliases ?? []) addRpcCommand(program, spec, io, alias);
  }
  addRawCallCommand(program, io);
  addConfigCommands(program, io);
  return program;
}

/** Runs vhostctl with `argv` (process.argv style); resolves to the exit code. */
export async function main(argv: readonly string[] = process.argv, io: CliIo = processIo): Promise<number> {
  const program = buildProgram(io);
  const userArgs = normalizeOptionUnderscores(argv.slice(2));
  if (userArgs.length === 0) {
    // Like rpc.py without arguments: usage, exit 1.
    io.err(program.helpInformation());
    return 1;
  }
  try {
    await program.parseAsync(userArgs, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof ExitError) return err.exitCode;
    if (err instanceof CommanderError) return err.exitCode;
    io.err(`${(err as Error).message}\n`);
    return 1;
  }
}

/** True when this module is the program being run (node vhostctl.js / tsx vhostctl.ts). */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  process.exitCode = await main();
}
