// SPDK v18.10's own configuration commands against a real vhostd. v18.10's rpc.py save_config
// calls get_subsystems and get_subsystem_config; its load_config calls get_rpc_methods (without
// params, then with {"current": true}), replays the entries whose method is listed, and calls
// start_subsystem_init when the current list has it. The emulation below follows
// scripts/rpc/__init__.py and scripts/rpc/client.py of tag v18.10 line by line, including the
// client's framing (json.dumps of the request, params only when truthy, id 1).
//
// With SPDK_GIT set to a clone of SPDK that has the tag v18.10 (and python3 and git installed),
// the same round trip also runs through the real v18.10 scripts/rpc.py.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pythonJsonDump } from '../../src/cli/vhostctl/config.js';
import { VhostdProcess } from '../lib/vhostd.js';

const work = mkdtempSync(join(tmpdir(), 'vhostd-v18.10-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** scripts/rpc/client.py's JSONRPCException. */
class JSONRPCException extends Error {}

/** Python truthiness of a JSON value. */
function truthy(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object' && v !== null) return Object.keys(v).length > 0;
  return Boolean(v);
}

/** v18.10 scripts/rpc/client.py JSONRPCClient, recording what it sends. */
class Client1810 {
  readonly sent: Array<{ method: string; params?: unknown }> = [];
  private constructor(private readonly sock: Socket) {}

  static connect(path: string): Promise<Client1810> {
    return new Promise((resolve, reject) => {
      const sock = createConnection(path, () => resolve(new Client1810(sock)));
      sock.once('error', reject);
    });
  }

  async call(method: string, params: unknown = {}): Promise<unknown> {
    const req: Record<string, unknown> = { jsonrpc: '2.0', method, id: 1 };
    if (truthy(params)) req.params = params;
    this.sent.push(truthy(params) ? { method, params } : { method });
    this.sock.write(pythonJsonDump(req, null)); // json.dumps(req), no delimiter
    // Receive until the buffer parses as one JSON value.
    const response = await new Promise<Record<string, unknown>>((resolve, reject) => {
      let buf = '';
      const onData = (d: Buffer) => {
        buf += d.toString('utf8');
        try {
          const r = JSON.parse(buf) as Record<string, unknown>;
          this.sock.off('data', onData);
          resolve(r);
        } catch {
          // incomplete response; keep buffering
        }
      };
      this.sock.on('data', onData);
      this.sock.once('close', () => reject(new JSONRPCException(`Connection closed with partial response:\n${buf}`)));
    });
    if ('error' in response) throw new JSONRPCException(`Got JSON-RPC error response\nresponse:\n${JSON.stringify(response.error, null, 2)}`);
    return response.result;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** v18.10 rpc.save_config(client, fd, indent=2): the text written to fd. */
async function saveConfig1810(client: Client1810, indent = 2): Promise<string> {
  const config: { subsystems: unknown[] } = { subsystems: [] };
  for (const elem of (await client.call('get_subsystems')) as Array<{ subsystem: string }>) {
    const cfg = { subsystem: elem.subsystem, config: await client.call('get_subsystem_config', { name: elem.subsystem }) };
    config.subsystems.push(cfg);
  }
  return `${pythonJsonDump(config, indent < 0 ? null : indent)}\n`;
}

/** v18.10 rpc.load_config(client, fd): what it prints. */
async function loadConfig1810(client: Client1810, text: string): Promise<string> {
  const jsonConfig = JSON.parse(text) as { subsystems: Array<{ subsystem: string; config: Array<Record<string, unknown>> | null }> };
  // remove subsystems with no config
  const subsystems = jsonConfig.subsystems;
  for (const subsystem of [...subsystems]) if (!truthy(subsystem.config)) subsystems.splice(subsystems.indexOf(subsystem), 1);
  // check if methods in the config file are known
  let allowedMethods = (await client.call('get_rpc_methods')) as string[];
  for (const subsystem of [...subsystems]) {
    for (const elem of [...(subsystem.config ?? [])]) {
      if (!('method' in elem) || !allowedMethods.includes(elem.method as string)) {
        throw new JSONRPCException('Unknown method was included in the config file');
      }
    }
  }
  while (subsystems.length > 0) {
    allowedMethods = (await client.call('get_rpc_methods', { current: true })) as string[];
    let allowedFound = false;
    for (const subsystem of [...subsystems]) {
      const config = subsystem.config ?? [];
      for (const elem of [...config]) {
        if (!('method' in elem) || !allowedMethods.includes(elem.method as string)) continue;
        // elem['params']: a KeyError in Python when absent.
        if (!('params' in elem)) throw new Error("KeyError: 'params'");
        await client.call(elem.method as string, elem.params);
        config.splice(config.indexOf(elem), 1);
        allowedFound = true;
      }
      if (config.length === 0) subsystems.splice(subsystems.indexOf(subsystem), 1);
    }
    if (allowedMethods.includes('start_subsystem_init')) {
      await client.call('start_subsystem_init');
      allowedFound = true;
    }
    if (!allowedFound) break;
  }
  return subsystems.length > 0 ? 'Some configs were skipped because the RPC state that can call them passed over.\n' : '';
}

async function with1810<T>(d: VhostdProcess, fn: (c: Client1810) => Promise<T>): Promise<{ result: T; sent: Client1810['sent'] }> {
  const c = await Client1810.connect(d.rpcSocket);
  try {
    return { result: await fn(c), sent: c.sent };
  } finally {
    c.close();
  }
}

/** What a client sees of the daemon's objects. */
async function state(d: VhostdProcess): Promise<{ bdevs: unknown[]; controllers: unknown[] }> {
  return { bdevs: await d.rpc<unknown[]>('bdev_get_bdevs'), controllers: await d.rpc<unknown[]>('vhost_get_controllers') };
}

/** The objects an SPDK v18.10 user makes, with v18.10 rpc.py's method names and params. */
async function populate1810(d: VhostdProcess): Promise<void> {
  await with1810(d, async (c) => {
    assert.equal(await c.call('construct_malloc_bdev', { num_blocks: 16384, block_size: 512, name: 'Malloc0' }), 'Malloc0');
    assert.equal(await c.call('construct_malloc_bdev', { num_blocks: 2048, block_size: 4096, name: 'Malloc1' }), 'Malloc1');
    assert.equal(await c.call('construct_null_bdev', { name: 'Null0', num_blocks: 2048, block_size: 512 }), 'Null0');
    await c.call('construct_vhost_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Malloc0' });
    await c.call('construct_vhost_blk_controller', { ctrlr: 'vhost.ro', dev_name: 'Null0', cpumask: '0x1', readonly: true });
    await c.call('set_vhost_controller_coalescing', { ctrlr: 'vhost.0', delay_base_us: 80, iops_threshold: 12000 });
    await c.call('construct_vhost_scsi_controller', { ctrlr: 'scsi.0' });
    await c.call('add_vhost_scsi_lun', { ctrlr: 'scsi.0', scsi_target_num: 2, bdev_name: 'Malloc1' });
  });
}

describe('SPDK v18.10 rpc.py save_config / load_config', () => {
  test('every v18.10 method name of what vhostd does is listed by get_rpc_methods', async () => {
    // From `git grep SPDK_RPC_REGISTER v18.10 -- lib`: the methods of the bdev modules, vhost
    // controllers and framework that vhostd implements.
    const v1810 = [
      'get_rpc_methods', 'get_subsystems', 'get_subsystem_config', 'start_subsystem_init',
      'set_bdev_options', 'get_bdevs', 'get_bdevs_iostat', 'delete_bdev',
      'construct_malloc_bdev', 'delete_malloc_bdev', 'construct_null_bdev', 'delete_null_bdev',
      'construct_aio_bdev', 'delete_aio_bdev', 'construct_rbd_bdev', 'delete_rbd_bdev',
      'construct_error_bdev', 'delete_error_bdev', 'bdev_inject_error',
      'construct_vhost_blk_controller', 'construct_vhost_scsi_controller', 'add_vhost_scsi_lun',
      'remove_vhost_scsi_target', 'remove_vhost_controller', 'get_vhost_controllers', 'set_vhost_controller_coalescing',
    ];
    const d = await VhostdProcess.start();
    try {
      const { result } = await with1810(d, (c) => c.call('get_rpc_methods'));
      assert.deepEqual(v1810.filter((m) => !(result as string[]).includes(m)), []);
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('round trip: v18.10 save_config, restart, v18.10 load_config brings the same objects back', async () => {
    const d1 = await VhostdProcess.start();
    let original;
    let saved: string;
    try {
      await populate1810(d1);
      original = await state(d1);
      const save = await with1810(d1, (c) => saveConfig1810(c));
      saved = save.result;
      assert.deepEqual(save.sent, [
        { method: 'get_subsystems' },
        { method: 'get_subsystem_config', params: { name: 'bdev' } },
        { method: 'get_subsystem_config', params: { name: 'scsi' } },
        { method: 'get_subsystem_config', params: { name: 'vhost_blk' } },
        { method: 'get_subsystem_config', params: { name: 'vhost_scsi' } },
      ]);
    } finally {
      assert.equal(await d1.stop({ keepDir: true }), 0);
    }
    // Every entry has params (v18.10's load_config reads elem['params'] unconditionally).
    const cfg = JSON.parse(saved) as { subsystems: Array<{ subsystem: string; config: Array<{ method: string; params?: object }> | null }> };
    assert.ok(saved.startsWith('{\n  "subsystems": [\n    {\n      "subsystem": "bdev",'));
    const entries = cfg.subsystems.flatMap((s) => s.config ?? []);
    assert.deepEqual(
      entries.filter((e) => e.params === undefined),
      [],
    );
    assert.deepEqual(
      entries.map((e) => e.method),
      [
        'bdev_malloc_create', 'bdev_malloc_create', 'bdev_null_create',
        'vhost_create_blk_controller', 'vhost_controller_set_coalescing', 'vhost_create_blk_controller',
        'vhost_create_scsi_controller', 'vhost_scsi_controller_add_target', 'vhost_start_scsi_controller',
      ],
    );

    // Same socket directory, so the controllers' socket paths match too.
    const d2 = await VhostdProcess.start([], { dir: d1.dir });
    try {
      const load = await with1810(d2, (c) => loadConfig1810(c, saved));
      assert.equal(load.result, '');
      assert.deepEqual(load.sent.slice(0, 2), [{ method: 'get_rpc_methods' }, { method: 'get_rpc_methods', params: { current: true } }]);
      assert.deepEqual(
        load.sent.slice(2).map((s) => s.method),
        entries.map((e) => e.method),
      );
      assert.deepEqual(await state(d2), original);
      // And saving again gives the same file.
      assert.equal((await with1810(d2, (c) => saveConfig1810(c))).result, saved);
    } finally {
      assert.equal(await d2.stop(), 0);
    }
  });

  test('v18.10 load_config of a config as SPDK v18.10 saved it: legacy names, STARTUP-only entries skipped', async () => {
    // Shaped like v18.10 save_config of its vhost app (lib/bdev/bdev.c, bdev_malloc.c,
    // lib/vhost/vhost_{blk,scsi}.c, vhost.c write_config_json), less the NVMe module's entries.
    const config1810 = {
      subsystems: [
        { subsystem: 'copy', config: null },
        { subsystem: 'interface', config: null },
        { subsystem: 'net_framework', config: null },
        {
          subsystem: 'bdev',
          config: [
            { method: 'set_bdev_options', params: { bdev_io_pool_size: 65536, bdev_io_cache_size: 256 } },
            { method: 'construct_malloc_bdev', params: { name: 'Malloc0', num_blocks: 2048, block_size: 512, uuid: '8f1d4c52-6c2b-4b1e-9b1f-2f0e3c6d7a81' } },
            { method: 'construct_malloc_bdev', params: { name: 'Malloc1', num_blocks: 256, block_size: 4096, uuid: '0d4e7a9b-3c5f-4e2a-8b6d-1a2b3c4d5e6f' } },
          ],
        },
        { subsystem: 'nbd', config: [] },
        { subsystem: 'scsi', config: null },
        {
          subsystem: 'vhost',
          config: [
            { method: 'construct_vhost_scsi_controller', params: { ctrlr: 'scsi.0', cpumask: '1' } },
            { method: 'add_vhost_scsi_lun', params: { ctrlr: 'scsi.0', scsi_target_num: 0, bdev_name: 'Malloc1' } },
            { method: 'construct_vhost_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: '1', readonly: false } },
            { method: 'set_vhost_controller_coalescing', params: { ctrlr: 'vhost.0', delay_base_us: 80, iops_threshold: 12000 } },
          ],
        },
      ],
    };
    const d = await VhostdProcess.start();
    try {
      const load = await with1810(d, (c) => loadConfig1810(c, JSON.stringify(config1810, null, 2)));
      // As on a running SPDK v18.10: set_bdev_options is STARTUP-only, so it is left over.
      assert.equal(load.result, 'Some configs were skipped because the RPC state that can call them passed over.\n');
      assert.deepEqual(
        load.sent.map((s) => s.method),
        [
          'get_rpc_methods',
          'get_rpc_methods',
          'construct_malloc_bdev', 'construct_malloc_bdev',
          'construct_vhost_scsi_controller', 'add_vhost_scsi_lun', 'construct_vhost_blk_controller', 'set_vhost_controller_coalescing',
          'get_rpc_methods',
        ],
      );
      const bdevs = await d.rpc<Array<{ name: string; uuid: string; claimed: boolean }>>('bdev_get_bdevs');
      assert.deepEqual(
        bdevs.map((b) => [b.name, b.uuid, b.claimed]),
        [
          // Controllers open their bdevs without claiming them, as SPDK's vhost does.
          ['Malloc0', '8f1d4c52-6c2b-4b1e-9b1f-2f0e3c6d7a81', false],
          ['Malloc1', '0d4e7a9b-3c5f-4e2a-8b6d-1a2b3c4d5e6f', false],
        ],
      );
      const ctrls = await d.rpc<Array<{ ctrlr: string; delay_base_us: number; backend_specific: Record<string, unknown> }>>('vhost_get_controllers');
      assert.deepEqual(ctrls.map((c) => c.ctrlr).sort(), ['scsi.0', 'vhost.0']);
      assert.equal(ctrls.find((c) => c.ctrlr === 'vhost.0')?.delay_base_us, 80);
      assert.match(JSON.stringify(ctrls.find((c) => c.ctrlr === 'scsi.0')?.backend_specific), /Malloc1/);
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('vhostd --json loads the same v18.10 config, NVMe module tuning entries of that release included', async () => {
    const file = join(work, 'spdk-v18.10.json');
    writeFileSync(
      file,
      JSON.stringify({
        subsystems: [
          { subsystem: 'copy', config: null },
          {
            subsystem: 'bdev',
            config: [
              { method: 'set_bdev_options', params: { bdev_io_pool_size: 65536, bdev_io_cache_size: 256 } },
              { method: 'set_bdev_nvme_options', params: { action_on_timeout: 'none', timeout_us: 0, retry_count: 4, nvme_adminq_poll_period_us: 1000000 } },
              { method: 'set_bdev_nvme_hotplug', params: { period_us: 100000, enable: false } },
              { method: 'construct_malloc_bdev', params: { name: 'Malloc0', num_blocks: 2048, block_size: 512, uuid: '8f1d4c52-6c2b-4b1e-9b1f-2f0e3c6d7a81' } },
            ],
          },
          { subsystem: 'scsi', config: null },
          { subsystem: 'vhost', config: [{ method: 'construct_vhost_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: '1', readonly: true } }] },
        ],
      }),
    );
    const d = await VhostdProcess.start(['--json', file]);
    try {
      const [c] = await d.rpc<Array<{ ctrlr: string; backend_specific: { block: { bdev: string; readonly: boolean } } }>>('vhost_get_controllers');
      assert.deepEqual([c?.ctrlr, c?.backend_specific.block], ['vhost.0', { bdev: 'Malloc0', readonly: true, transport: 'vhost_user_blk' }]);
      for (const m of ['set_bdev_nvme_options', 'set_bdev_nvme_hotplug']) {
        assert.equal(d.logsMatching(new RegExp(`skipping ${m}: an SPDK tuning method`)).length, 1, m);
      }
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  // The real v18.10 scripts, when a clone of SPDK is at hand ($SPDK_GIT, a git directory).
  const spdkGit = process.env.SPDK_GIT;
  const tools = (() => {
    try {
      execFileSync('python3', ['--version'], { stdio: 'ignore' });
      execFileSync('git', ['--version'], { stdio: 'ignore' });
      return spdkGit !== undefined && existsSync(spdkGit) && execFileSync('git', ['-C', spdkGit, 'tag', '-l', 'v18.10']).toString().trim() === 'v18.10';
    } catch {
      return false;
    }
  })();
  test('the real v18.10 scripts/rpc.py does the same round trip', { skip: tools ? false : 'set SPDK_GIT to an SPDK clone with tag v18.10 (needs python3 and git)' }, async () => {
    const scripts = join(work, 'spdk-v18.10');
    execFileSync('sh', ['-c', `mkdir -p "$1" && git -C "$2" archive v18.10 scripts/rpc.py scripts/rpc | tar -x -C "$1"`, 'sh', scripts, spdkGit ?? '']);
    // v18.10's client times out with time.clock(), which Python 3.8 removed.
    const rpcPy = (sock: string, args: string[], stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        const child = execFile(
          'python3',
          ['-c', 'import runpy, sys, time\ntime.clock = time.perf_counter\nsys.argv = ["rpc.py"] + sys.argv[1:]\nrunpy.run_path("rpc.py", run_name="__main__")', '-s', sock, ...args],
          { cwd: join(scripts, 'scripts'), timeout: 60_000 },
          (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
        );
        child.stdin?.end(stdin);
      });
    const d1 = await VhostdProcess.start();
    let original;
    let saved: string;
    try {
      await populate1810(d1);
      original = await state(d1);
      const save = await rpcPy(d1.rpcSocket, ['save_config']);
      assert.equal(save.code, 0, save.stdout + save.stderr);
      saved = save.stdout;
      assert.equal(saved, (await with1810(d1, (c) => saveConfig1810(c))).result);
    } finally {
      assert.equal(await d1.stop({ keepDir: true }), 0);
    }
    const d2 = await VhostdProcess.start([], { dir: d1.dir });
    try {
      const load = await rpcPy(d2.rpcSocket, ['load_config'], saved);
      assert.deepEqual([load.code, load.stdout], [0, ''], load.stderr);
      assert.deepEqual(await state(d2), original);
    } finally {
      assert.equal(await d2.stop(), 0);
    }
  });
});
