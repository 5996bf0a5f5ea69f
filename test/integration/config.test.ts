// Persistent configuration against real vhostd processes: `vhostctl save_config` writes what
// `vhostd --json` and `vhostctl load_config` recreate exactly; SPDK-saved configs load with their
// SPDK-only tuning entries skipped, and anything vhostd cannot apply fails the start clearly.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/blk-spec.js';
import { BlkInitiator } from '../../src/initiator/blk-initiator.js';
import { RpcError } from '../../src/rpc/client.js';
import { VhostdProcess } from '../lib/vhostd.js';

const root = new URL('../../', import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), 'vhostd-config-'));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function vhostctl(rpcSocket: string, args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', join(root, 'src/cli/vhostctl.ts'), '-s', rpcSocket, ...args],
      { cwd: root, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(stdin ?? '');
  });
}

/** Runs a vhostd that is expected to fail at start. */
function vhostdFailing(args: string[]): Promise<Run> {
  const dir = mkdtempSync(join(work, 'd-'));
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(root, 'src/cli/vhostd.ts'), '-S', dir, '-r', join(dir, 'spdk.sock'), ...args],
      { cwd: root, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

interface State {
  bdevs: unknown[];
  controllers: Array<Record<string, unknown>>;
}

/** What a client sees; only the socket path must differ (each daemon has its own socket dir). */
async function state(d: VhostdProcess): Promise<State> {
  const controllers = await d.rpc<Array<Record<string, unknown>>>('vhost_get_controllers');
  for (const c of controllers) {
    assert.equal(c.socket, d.socket(c.ctrlr as string));
    c.socket = '<socket dir>/' + String(c.ctrlr);
  }
  return { bdevs: await d.rpc<unknown[]>('bdev_get_bdevs'), controllers };
}

after(() => rmSync(work, { recursive: true, force: true }));

const pattern = (seed: number, len: number) => Uint8Array.from({ length: len }, (_, i) => (i * 13 + seed) & 0xff);

describe('save_config / load_config / --json', () => {
  let original: State;
  let saved: string;
  let withScsi = false;
  const savedFile = join(work, 'saved.json');

  before(async () => {
    const d = await VhostdProcess.start();
    try {
      await d.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: 16384, block_size: 512 });
      await d.rpc('bdev_malloc_create', { name: 'Malloc4k', num_blocks: 1024, block_size: 4096, uuid: '0b5f9c1e-5a7d-4c41-9a52-5d1f2c3b4a69' });
      await d.rpc('bdev_null_create', { name: 'Null0', num_blocks: 2048, block_size: 512 });
      await d.rpc('bdev_null_create', { name: 'Spare', num_blocks: 8, block_size: 4096 });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Malloc0' });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.ro', dev_name: 'Null0', readonly: true });
      await d.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.4k', dev_name: 'Malloc4k', cpumask: '0x1' });
      await d.rpc('vhost_controller_set_coalescing', { ctrlr: 'vhost.4k', delay_base_us: 80, iops_threshold: 12000 });
      // SCSI controllers, where this build has them: targets 0 and 3 on two bdevs.
      await d.rpc('bdev_null_create', { name: 'Lun0', num_blocks: 64, block_size: 512 });
      await d.rpc('bdev_malloc_create', { name: 'Lun3', num_blocks: 64, block_size: 4096 });
      try {
        await d.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi.0' });
        withScsi = true;
      } catch (e) {
        if (!(e instanceof RpcError && /not supported/i.test(e.message))) throw e;
      }
      if (withScsi) {
        await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi.0', scsi_target_num: 3, bdev_name: 'Lun3' });
        await d.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi.0', scsi_target_num: 0, bdev_name: 'Lun0' });
      }
      original = await state(d);
      const r = await vhostctl(d.rpcSocket, ['save_config']);
      assert.equal(r.code, 0, r.stderr);
      saved = r.stdout;
      writeFileSync(savedFile, saved);
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('the saved file has SPDK save_config shape', () => {
    const cfg = JSON.parse(saved) as { subsystems: Array<{ subsystem: string; config: Array<{ method: string; params?: Record<string, unknown> }> | null }> };
    assert.deepEqual(
      cfg.subsystems.map((s) => s.subsystem),
      ['bdev', 'scsi', 'vhost_blk', 'vhost_scsi'],
    );
    const bdev = cfg.subsystems[0].config ?? [];
    assert.deepEqual(
      bdev.map((c) => c.method),
      ['bdev_malloc_create', 'bdev_malloc_create', 'bdev_null_create', 'bdev_null_create', 'bdev_null_create', 'bdev_malloc_create', 'bdev_wait_for_examine'],
    );
    assert.equal(cfg.subsystems[1].config, null);
    assert.deepEqual(cfg.subsystems[2].config, [
      { method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: '0x1', readonly: false, transport: 'vhost_user_blk' } },
      { method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.ro', dev_name: 'Null0', cpumask: '0x1', readonly: true, transport: 'vhost_user_blk' } },
      { method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.4k', dev_name: 'Malloc4k', cpumask: '0x1', readonly: false, transport: 'vhost_user_blk' } },
      { method: 'vhost_controller_set_coalescing', params: { ctrlr: 'vhost.4k', delay_base_us: 80, iops_threshold: 12000 } },
    ]);
    assert.deepEqual(
      cfg.subsystems[3].config,
      withScsi
        ? [
            { method: 'vhost_create_scsi_controller', params: { ctrlr: 'scsi.0', cpumask: '0x1', delay: true } },
            { method: 'vhost_scsi_controller_add_target', params: { ctrlr: 'scsi.0', scsi_target_num: 0, bdev_name: 'Lun0' } },
            { method: 'vhost_scsi_controller_add_target', params: { ctrlr: 'scsi.0', scsi_target_num: 3, bdev_name: 'Lun3' } },
            { method: 'vhost_start_scsi_controller', params: { ctrlr: 'scsi.0' } },
          ]
        : [],
    );
    // rpc.py's json.dump(indent=2) plus a newline.
    assert.ok(saved.startsWith('{\n  "subsystems": [\n    {\n      "subsystem": "bdev",'));
    assert.ok(saved.endsWith('\n}\n'));
  });

  test('vhostd --json FILE recreates the same bdevs and controllers', async () => {
    const d = await VhostdProcess.start(['--json', savedFile]);
    try {
      assert.deepEqual(await state(d), original);
      // Saving again gives the same file, byte for byte (uuids are part of it).
      const again = await vhostctl(d.rpcSocket, ['save_config']);
      assert.equal(again.stdout, saved);
      // The controllers serve I/O with their saved settings.
      const rw = await BlkInitiator.connect(d.socket('vhost.0'));
      try {
        const data = pattern(3, 4096);
        assert.equal((await rw.write(8, data)).status, BlkStatus.OK);
        assert.deepEqual((await rw.read(8, 4096)).data, data);
      } finally {
        rw.close();
      }
      const ro = await BlkInitiator.connect(d.socket('vhost.ro'));
      try {
        assert.equal((await ro.write(0, pattern(4, 512))).status, BlkStatus.IOERR);
        assert.equal((await ro.read(0, 512)).status, BlkStatus.OK);
      } finally {
        ro.close();
      }
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  test('vhostctl load_config into a fresh daemon gives the same result (stdin and -j)', async () => {
    for (const viaStdin of [true, false]) {
      const d = await VhostdProcess.start();
      try {
        const r = viaStdin ? await vhostctl(d.rpcSocket, ['load_config'], saved) : await vhostctl(d.rpcSocket, ['load_config', '-j', savedFile]);
        assert.deepEqual(r, { code: 0, stdout: '', stderr: '' });
        assert.deepEqual(await state(d), original);
        assert.equal((await vhostctl(d.rpcSocket, ['save_config'])).stdout, saved);
      } finally {
        assert.equal(await d.stop(), 0);
      }
    }
  });

  test('compact and custom indents are what rpc.py writes', async () => {
    const d = await VhostdProcess.start(['--json', savedFile]);
    try {
      const compact = await vhostctl(d.rpcSocket, ['save_config', '-i', '-1']);
      assert.equal(compact.stdout, `${JSON.stringify(JSON.parse(saved)).replaceAll('":', '": ').replaceAll(',"', ', "').replaceAll(',{', ', {')}\n`);
      const sub = await vhostctl(d.rpcSocket, ['save_subsystem_config', '-n', 'vhost_blk', '-i', '4']);
      const cfg = JSON.parse(saved) as { subsystems: Array<{ subsystem: string }> };
      assert.equal(sub.stdout, `${JSON.stringify(cfg.subsystems[2], null, 4)}\n`);
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });
});

describe('RPC states and the framework methods', () => {
  let d: VhostdProcess;
  before(async () => {
    d = await VhostdProcess.start();
  });
  after(async () => {
    assert.equal(await d.stop(), 0);
  });

  test('rpc_get_methods(current) leaves out STARTUP-only methods', async () => {
    const all = await d.rpc<string[]>('rpc_get_methods');
    const current = await d.rpc<string[]>('rpc_get_methods', { current: true });
    for (const m of ['framework_start_init', 'bdev_set_options']) {
      assert.ok(all.includes(m), m);
      assert.ok(!current.includes(m), m);
    }
    for (const m of ['framework_get_subsystems', 'framework_get_config', 'bdev_wait_for_examine', 'bdev_malloc_create', 'rpc_get_methods']) {
      assert.ok(current.includes(m), m);
    }
    assert.deepEqual(
      all.filter((m) => !current.includes(m)),
      ['framework_start_init', 'bdev_set_options'],
    );
  });

  test('framework_start_init is a no-op once running; STARTUP-only methods answer -1', async () => {
    assert.equal(await d.rpc('framework_start_init'), true);
    await assert.rejects(d.rpc('framework_start_init', { x: 1 }), (e: RpcError) => e.code === -32602);
    await assert.rejects(d.rpc('bdev_set_options', { bdev_io_pool_size: 1024 }), (e: RpcError) => e.code === -1 && /before framework is initialized/.test(e.message));
  });

  test('framework_get_config errors as SPDK', async () => {
    await assert.rejects(d.rpc('framework_get_config', { name: 'nvmf' }), (e: RpcError) => e.code === -32602 && e.message === "Subsystem 'nvmf' not found");
    await assert.rejects(d.rpc('framework_get_config'), (e: RpcError) => e.code === -32602 && e.message === 'Invalid arguments');
    await assert.rejects(d.rpc('framework_get_subsystems', { name: 'bdev' }), (e: RpcError) => e.code === -32602);
    assert.equal(await d.rpc('framework_get_config', { name: 'scsi' }), null);
  });

  test('load_config skips entries not callable at runtime and refuses unknown methods', async () => {
    const withStartup = {
      subsystems: [
        { subsystem: 'bdev', config: [{ method: 'bdev_set_options', params: { bdev_io_pool_size: 65535 } }, { method: 'bdev_null_create', params: { name: 'S0', num_blocks: 8, block_size: 512 } }] },
      ],
    };
    const r = await vhostctl(d.rpcSocket, ['load_config'], JSON.stringify(withStartup));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'Some configs were skipped because the RPC state that can call them passed over.\n');
    assert.equal((await d.rpc<unknown[]>('bdev_get_bdevs', { name: 'S0' })).length, 1);

    const unknown = { subsystems: [{ subsystem: 'bdev', config: [{ method: 'bdev_null_create', params: { name: 'S1', num_blocks: 8, block_size: 512 } }, { method: 'bdev_nvme_attach_controller', params: {} }] }] };
    const u = await vhostctl(d.rpcSocket, ['load_config'], JSON.stringify(unknown));
    assert.equal(u.code, 1);
    assert.match(u.stderr, /Unknown method was included in the config file/);
    await assert.rejects(d.rpc('bdev_get_bdevs', { name: 'S1' }));

    const failing = { subsystems: [{ subsystem: 'bdev', config: [{ method: 'bdev_null_create', params: { name: 'S0', num_blocks: 8, block_size: 512 } }] }] };
    const f = await vhostctl(d.rpcSocket, ['load_config'], JSON.stringify(failing));
    assert.equal(f.code, 1);
    assert.match(f.stderr, /"method": "bdev_null_create"[\s\S]*Got JSON-RPC error response[\s\S]*"code": -17/);

    // All subsystems empty: rpc.py just calls framework_start_init.
    assert.deepEqual(await vhostctl(d.rpcSocket, ['load_config'], '{"subsystems": [{"subsystem": "bdev", "config": []}]}'), { code: 0, stdout: '', stderr: '' });
  });
});

describe('vhostd --json with configs saved by SPDK', () => {
  /** Shaped like `rpc.py save_config` of an SPDK v24.01 vhost target. */
  const spdkConfig = {
    subsystems: [
      { subsystem: 'keyring', config: [] },
      { subsystem: 'iobuf', config: [{ method: 'iobuf_set_options', params: { small_pool_count: 8192, large_pool_count: 1024, small_bufsize: 8192, large_bufsize: 135168 } }] },
      {
        subsystem: 'sock',
        config: [
          { method: 'sock_set_default_impl', params: { impl_name: 'posix' } },
          { method: 'sock_impl_set_options', params: { impl_name: 'posix', recv_buf_size: 2097152, send_buf_size: 2097152 } },
        ],
      },
      { subsystem: 'vmd', config: [] },
      { subsystem: 'accel', config: [{ method: 'accel_set_options', params: { small_cache_size: 128, large_cache_size: 16, task_count: 2048 } }] },
      {
        subsystem: 'bdev',
        config: [
          { method: 'bdev_set_options', params: { bdev_io_pool_size: 65535, bdev_io_cache_size: 256, bdev_auto_examine: true, iobuf_small_cache_size: 128, iobuf_large_cache_size: 16 } },
          { method: 'bdev_raid_set_options', params: { process_window_size_kb: 1024 } },
          { method: 'bdev_nvme_set_options', params: { action_on_timeout: 'none', timeout_us: 0 } },
          { method: 'bdev_nvme_set_hotplug', params: { period_us: 100000, enable: false } },
          {
            method: 'bdev_malloc_create',
            params: { name: 'Malloc0', num_blocks: 2048, block_size: 512, physical_block_size: 512, uuid: '3c1b2a64-1f3e-4d2e-9d7a-2a8c7f0e9b11', optimal_io_boundary: 0 },
          },
          { method: 'bdev_wait_for_examine' },
        ],
      },
      { subsystem: 'scsi', config: null },
      { subsystem: 'vhost_scsi', config: [] },
      { subsystem: 'vhost_blk', config: [{ method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: '1', readonly: false, transport: 'vhost_user_blk' } }] },
      { subsystem: 'scheduler', config: [{ method: 'framework_set_scheduler', params: { name: 'static' } }] },
    ],
  };

  test('loads, skipping SPDK tuning methods with a warning each', async () => {
    const file = join(work, 'spdk.json');
    writeFileSync(file, JSON.stringify(spdkConfig, null, 2));
    const d = await VhostdProcess.start(['--json', file]);
    try {
      const [c] = await d.rpc<Array<{ ctrlr: string; backend_specific: { block: { bdev: string } } }>>('vhost_get_controllers');
      assert.equal(c.ctrlr, 'vhost.0');
      assert.equal(c.backend_specific.block.bdev, 'Malloc0');
      for (const m of ['iobuf_set_options', 'sock_set_default_impl', 'sock_impl_set_options', 'accel_set_options', 'bdev_raid_set_options', 'bdev_nvme_set_options', 'bdev_nvme_set_hotplug', 'framework_set_scheduler']) {
        assert.equal(d.logsMatching(new RegExp(`skipping ${m}: an SPDK tuning method`)).length, 1, m);
      }
    } finally {
      assert.equal(await d.stop(), 0);
    }
  });

  const failures: Array<[string, unknown, RegExp]> = [
    [
      'an unknown method',
      { subsystems: [{ subsystem: 'nvmf', config: [{ method: 'nvmf_create_transport', params: { trtype: 'TCP' } }] }] },
      /subsystem 'nvmf' entry 0: method 'nvmf_create_transport' is not implemented by vhostd/,
    ],
    [
      'a call that fails',
      {
        subsystems: [
          {
            subsystem: 'bdev',
            config: [
              { method: 'bdev_null_create', params: { name: 'N', num_blocks: 8, block_size: 512 } },
              { method: 'bdev_null_create', params: { name: 'N', num_blocks: 8, block_size: 512 } },
            ],
          },
        ],
      },
      /subsystem 'bdev' entry 1 \(bdev_null_create\) failed: File exists \(code -17\)/,
    ],
    ['a file that is not a config', [1, 2], /a config is a JSON object with a "subsystems" array, not an array/],
    ['params that are not an object', { subsystems: [{ subsystem: 'bdev', config: [{ method: 'bdev_wait_for_examine', params: [] }] }] }, /"params" must be an object/],
    ['invalid JSON', '{"subsystems": [', /is not valid JSON/],
  ];
  for (const [name, content, message] of failures) {
    test(`fails to start, saying why, on ${name}`, async () => {
      const file = join(work, 'bad.json');
      writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
      const r = await vhostdFailing(['--json', file]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, message);
      assert.match(r.stderr.trim().split('\n').at(-1) ?? '', /^vhostd: /);
    });
  }
});
