import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Command } from 'commander';
import { rpcCommands } from '../../src/cli/vhostctl/commands.js';
import { type TestServer, startTestServer } from './helpers/rpc-fixture.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source, as `node --import tsx src/cli/vhostctl.ts ARGS`. */
function run(args: string[], entry: string[] = ['--import', 'tsx', 'src/cli/vhostctl.ts']): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...entry, ...args], { cwd: repoRoot, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('vhostctl', () => {
  let t: TestServer;
  const ctl = (...args: string[]) => run(['-s', t.socketPath, ...args]);

  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(async () => {
    await t.stop();
  });

  it('prints help for the program and for subcommands', async () => {
    const top = await run(['--help']);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /bdev_malloc_create/);
    assert.match(top.stdout, /vhost_create_blk_controller/);
    const sub = await run(['bdev_malloc_create', '--help']);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /-b, --name <name>/);
    assert.match(sub.stdout, /total_size +Size of malloc bdev in MB/);
    const none = await run([]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /Usage: vhostctl/);
  });

  it('creates bdevs with rpc.py arguments and prints the bare name', async () => {
    const malloc = await ctl('bdev_malloc_create', '64', '512', '-b', 'Malloc0');
    assert.deepEqual(malloc, { code: 0, stdout: 'Malloc0\n', stderr: '' });
    assert.equal(t.bdevs.get('Malloc0').numBlocks, (64 * 1024 * 1024) / 512);

    const auto = await ctl('bdev_malloc_create', '0.5', '4096', '-u', '6d5c8a0e-1111-4222-8333-444455556666');
    assert.equal(auto.stdout, 'Malloc1\n'); // Malloc0 is taken, so the auto-namer moves on
    assert.equal(t.bdevs.get('Malloc1').uuid, '6d5c8a0e-1111-4222-8333-444455556666');

    const nul = await ctl('bdev_null_create', 'Null0', '64', '512');
    assert.deepEqual(nul, { code: 0, stdout: 'Null0\n', stderr: '' });
    assert.equal(t.bdevs.get('Null0').numBlocks, 131072);
  });

  it('prints nothing for `true` results and deletes', async () => {
    await ctl('bdev_null_create', 'Null0', '1', '512');
    assert.deepEqual(await ctl('bdev_null_delete', 'Null0'), { code: 0, stdout: '', stderr: '' });
    assert.equal(t.bdevs.has('Null0'), false);
  });

  it('prints lists as indented JSON, or as a table with --table', async () => {
    await ctl('bdev_malloc_create', '1', '512', '-b', 'Malloc0');
    const json = await ctl('bdev_get_bdevs', '-b', 'Malloc0');
    assert.equal(json.code, 0);
    const parsed = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    assert.equal(parsed[0]?.name, 'Malloc0');
    assert.equal(json.stdout, `${JSON.stringify(parsed, null, 2)}\n`);

    const table = await ctl('bdev_get_bdevs', '--table');
    assert.equal(table.code, 0);
    assert.match(table.stdout, /Name.*Product.*Block size/);
    assert.match(table.stdout, /Malloc0.*Malloc disk.*512.*2048/);

    // Global -t (timeout, seconds) and bdev_get_bdevs -t (timeout_ms) do not clash.
    assert.equal((await run(['-t', '5', '-s', t.socketPath, 'bdev_get_bdevs', '-t', '100', '-b', 'Malloc0'])).code, 0);
  });

  it('creates a blk controller with rpc.py flags', async () => {
    await ctl('bdev_malloc_create', '1', '512', '-b', 'Malloc0');
    await ctl('bdev_malloc_create', '1', '512', '-b', 'Malloc1');
    const res = await ctl('vhost_create_blk_controller', '--cpumask', '0x1', '-r', 'vhost.1', 'Malloc0');
    assert.deepEqual(res, { code: 0, stdout: '', stderr: '' });
    // rpc.py also accepts the underscore spelling --packed_ring.
    assert.equal((await ctl('vhost_create_blk_controller', 'vhost.2', 'Malloc1', '--packed_ring')).code, 0);
    const blkCalls = t.vhost.calls.filter((c) => c.method === 'createBlkController').map((c) => c.args[0]);
    assert.deepEqual(blkCalls, [
      { ctrlr: 'vhost.1', devName: 'Malloc0', cpumask: '0x1', readonly: true, packedRing: false },
      { ctrlr: 'vhost.2', devName: 'Malloc1', cpumask: undefined, readonly: false, packedRing: true },
    ]);

    const list = await ctl('vhost_get_controllers', '-n', 'vhost.1');
    assert.equal((JSON.parse(list.stdout) as Array<{ ctrlr: string }>)[0]?.ctrlr, 'vhost.1');
    const table = await ctl('vhost_get_controllers', '--table');
    assert.match(table.stdout, /vhost\.1.*blk: Malloc0 \(ro\).*0x1/);
    assert.match(table.stdout, /vhost\.2.*blk: Malloc1/);
  });

  it('manages scsi targets, printing the target number', async () => {
    await ctl('bdev_malloc_create', '1', '512', '-b', 'Malloc0');
    assert.equal((await ctl('vhost_create_scsi_controller', 'vhost.0', '--cpumask', '0x2')).code, 0);
    assert.deepEqual(await ctl('vhost_scsi_controller_add_target', 'vhost.0', '-1', 'Malloc0'), { code: 0, stdout: '0\n', stderr: '' });
    assert.equal((await ctl('vhost_scsi_controller_remove_target', 'vhost.0', '0')).code, 0);
    assert.equal((await ctl('vhost_controller_set_coalescing', 'vhost.0', '50', '1000')).code, 0);
    assert.equal((await ctl('vhost_delete_controller', 'vhost.0')).code, 0);
    assert.deepEqual(
      t.vhost.calls.map((c) => c.method),
      ['createScsiController', 'scsiAddTarget', 'scsiRemoveTarget', 'setCoalescing', 'deleteController'],
    );
  });

  it('prints JSON-RPC errors like rpc.py and exits 1', async () => {
    const res = await ctl('bdev_get_bdevs', '-b', 'nope');
    assert.equal(res.code, 1);
    assert.equal(res.stdout, '');
    assert.equal(
      res.stderr,
      [
        'request:',
        '{',
        '  "name": "nope",',
        '  "method": "bdev_get_bdevs",',
        '  "req_id": 1',
        '}',
        'Got JSON-RPC error response',
        'response:',
        '{',
        '  "code": -19,',
        '  "message": "No such device"',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('reports an unreachable server like rpc.py', async () => {
    const res = await run(['-s', `${t.dir}/missing.sock`, 'spdk_get_version']);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /^Error while connecting to .*missing\.sock\nIs SPDK application running\?\nError details: /);
  });

  it('rejects bad arguments before contacting the server', async () => {
    const res = await ctl('bdev_malloc_create', 'big', '512');
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /invalid float value/);
    assert.equal(t.vhost.calls.length, 0);
    assert.equal(t.bdevs.list().length, 0);
  });

  it('supports deprecated aliases with rpc.py\'s warning', async () => {
    const res = await ctl('construct_malloc_bdev', '1', '512');
    assert.deepEqual(res, { code: 0, stdout: 'Malloc0\n', stderr: 'construct_malloc_bdev is deprecated, use bdev_malloc_create instead.\n' });
    const methods = await ctl('rpc_get_methods', '-i');
    assert.ok((JSON.parse(methods.stdout) as string[]).includes('construct_vhost_blk_controller'));
  });

  it('prints the version object and supports raw calls and --dry-run', async () => {
    const version = JSON.parse((await ctl('spdk_get_version')).stdout) as { version: string; fields: object };
    assert.match(version.version, /^SPDK v24\.01 compatible/);

    await ctl('bdev_malloc_create', '1', '512', '-b', 'Malloc0');
    const raw = await ctl('call', 'bdev_get_bdevs', '{"name": "Malloc0"}');
    assert.equal((JSON.parse(raw.stdout) as Array<{ name: string }>)[0]?.name, 'Malloc0');
    const badJson = await ctl('call', 'bdev_get_bdevs', '{name');
    assert.notEqual(badJson.code, 0);

    const dry = await ctl('--dry-run', 'bdev_null_create', 'N', '1', '512');
    assert.equal(dry.code, 0);
    assert.deepEqual(JSON.parse(dry.stdout.replace(/^Request:\n/, '')), {
      method: 'bdev_null_create',
      params: { name: 'N', num_blocks: 2048, block_size: 512 },
    });
    assert.equal(t.bdevs.has('N'), false);
  });

  it('runs through the bin/vhostctl launcher', async () => {
    const res = await run(['-s', t.socketPath, 'bdev_malloc_create', '1', '512'], ['bin/vhostctl']);
    assert.deepEqual(res, { code: 0, stdout: 'Malloc0\n', stderr: '' });
  });
});

describe('vhostctl params', () => {
  /** Every null in `v`, by path. */
  const nulls = (v: unknown, path = 'params'): string[] =>
    v === null ? [path] : typeof v === 'object' ? Object.entries(v as object).flatMap(([k, x]) => nulls(x, `${path}.${k}`)) : [];

  it('never sends null for an option left unset (the server refuses null like SPDK; rpc.py leaves them out)', () => {
    for (const spec of rpcCommands) {
      const cmd = new Command(spec.name).exitOverride();
      spec.configure(cmd);
      // Only what is mandatory: each positional and each required option, as '1'.
      const argv = cmd.registeredArguments.filter((a) => a.required).map(() => '1');
      for (const o of cmd.options) if (o.mandatory) argv.push(o.long ?? '', '1');
      cmd.action(() => {});
      cmd.parse(argv, { from: 'user' });
      const args: Record<string, unknown> = {};
      cmd.registeredArguments.forEach((a, i) => {
        args[a.name()] = cmd.processedArgs[i];
      });
      assert.deepEqual(nulls(spec.params({ ...args, ...cmd.opts() })), [], spec.name);
    }
  });
});

describe('vhostctl tables', () => {
  it('vhost_get_controllers --table shows the sessions and which controller logs dirty pages for a migration', async () => {
    const { controllerTable } = await import('../../src/cli/vhostctl/tables.js');
    const row = (ctrlr: string, logging: boolean) => ({
      ctrlr,
      cpumask: '0x1',
      delay_base_us: 0,
      iops_threshold: 60000,
      socket: `/var/tmp/${ctrlr}`,
      sessions: [{ id: 1, dirty_logging: logging }],
      dirty_logging: logging,
      backend_specific: { block: { readonly: false, bdev: 'M0', transport: 'vhost_user_blk' } },
    });
    const lines = controllerTable([row('src', true), row('dst', false)]).split('\n');
    assert.ok(lines.some((l) => /Migration/.test(l)));
    assert.ok(lines.some((l) => /src.*│ 1 .*logging dirty pages/.test(l)));
    assert.ok(lines.some((l) => /dst/.test(l) && !/logging/.test(l)));
  });
});
