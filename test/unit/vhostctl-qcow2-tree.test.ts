// vhostctl bdev_get_bdevs --table: a qcow2 bdev is followed by its image and backing chain as a
// tree, each file with its format, virtual size and allocation (driver_specific.qcow2).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bdevTable } from '../../src/cli/vhostctl/tables.js';

test('bdev_get_bdevs --table shows a qcow2 chain as a tree with allocation', () => {
  const MiB = 2 ** 20;
  const out = bdevTable([
    { name: 'Malloc0', product_name: 'Malloc disk', block_size: 512, num_blocks: 2048, uuid: 'u0', claimed: false },
    {
      name: 'Q0',
      product_name: 'QCOW2 disk',
      block_size: 512,
      num_blocks: (1024 * MiB) / 512,
      uuid: 'u1',
      claimed: false,
      driver_specific: {
        qcow2: {
          filename: '/vm/snap.qcow2',
          readonly: false,
          cluster_size: 65536,
          virtual_size: 1024 * MiB,
          allocated_bytes: 10.5 * MiB,
          backing_chain: [
            { filename: '/vm/disk.qcow2', format: 'qcow2', virtual_size: 1024 * MiB, allocated_bytes: 300 * MiB },
            { filename: '/vm/base.raw', format: 'raw', virtual_size: 512 * MiB, allocated_bytes: 512 * MiB },
          ],
        },
      },
    },
  ]);
  const lines = out.split('\n');
  const row = (needle: string) => lines.find((l) => l.includes(needle)) ?? assert.fail(`no row with ${needle}:\n${out}`);
  assert.match(row('Malloc0'), /│ 1 +│ +│ u0/);
  assert.match(row('└─ /vm/snap.qcow2 (qcow2)'), /│ 1024 +│ 10\.5 +│/);
  assert.match(row('   └─ /vm/disk.qcow2 (qcow2, backing)'), /│ 1024 +│ 300 +│/);
  assert.match(row('      └─ /vm/base.raw (raw, backing)'), /│ 512 +│ 512 +│/);
  assert.ok(lines.indexOf(row('Q0')) < lines.indexOf(row('snap.qcow2')), 'the files follow their bdev');
});
