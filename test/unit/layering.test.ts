// The layering check (.dependency-cruiser.cjs, run by `npm test`) can fail: the real rules are
// run over a small synthetic src/ tree in a temp directory that breaks each kind of rule once,
// next to imports the rules allow, and every violation, and only those, must be reported.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cruise, type ICruiseResult } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';

const repo = fileURLToPath(new URL('../..', import.meta.url));

const fixture: Record<string, string> = {
  // Allowed: downward imports, the lists of kinds and backends, the addon facade.
  'src/util/errors.ts': `export const E = 1;\n`,
  'src/native/index.ts':
    `import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n` +
    `export const addon: unknown = require('../../addon.node');\n`,
  'src/memory/region.ts': `import { addon } from '../native/index.js';\nexport const r = addon;\n`,
  'src/bdev/bdev.ts': `import { E } from '../util/errors.js';\nexport const b = E;\n`,
  'src/bdev/channels.ts': `import * as listed from './modules/index.js';\nexport const c = Object.values(listed);\n`,
  'src/bdev/modules/index.ts': `export { a } from './a/a.js';\n`,
  'src/bdev/modules/a/a.ts':
    `import { b } from '../../bdev.js';\nimport { addon } from '../../../native/index.js';\n` +
    `export const a = [b, addon];\n`,
  'src/vhost-user/data-plane.ts': `export interface DataPlane { start(): void }\n`,
  'src/devices/device.ts': `export interface Device { run(): void }\n`,
  'src/devices/kinds.ts': `import { k1 } from './k1/k1.js';\nexport const kinds = [k1];\n`,
  'src/devices/k2/k2.ts': `export const k2 = 2;\n`,
  'src/reactor/r.ts':
    `import { kinds } from '../devices/kinds.js';\n` +
    `import type { DataPlane } from '../vhost-user/data-plane.js';\n` +
    `export const r: DataPlane | typeof kinds = kinds;\n`,
  'src/rpc/m.ts': `import { c } from '../bdev/channels.js';\nexport const m = c;\n`,
  // The allow-list (BACKEND_BUILDS_ON): qcow2 may use the uring module's file I/O path.
  'src/bdev/modules/uring/uring.ts': `export const fileChannel = 1;\n`,
  'src/bdev/modules/uring/module.ts': `import { fileChannel } from './uring.js';\nexport const uringModule = fileChannel;\n`,
  'src/bdev/modules/qcow2/channel.ts': `import { fileChannel } from '../uring/uring.js';\nexport const q = fileChannel;\n`,

  // Violations, one each, in the order of `expected`.
  'src/vhost-user/session.ts': `import { r } from '../reactor/r.js';\nexport const s = r;\n`,
  'src/memory/memory-table.ts':
    `import type { DataPlane } from '../vhost-user/data-plane.js';\nexport type T = DataPlane;\n`,
  'src/plugins/p.ts': `import { E } from '../util/errors.js';\nexport const p = E;\n`,
  'src/plugins/leaf.ts': `export const leaf = 1;\n`,
  'src/rpc/uses-plugin.ts': `import { leaf } from '../plugins/leaf.js';\nexport const u = leaf;\n`,
  'src/reactor/bad.ts': `import { k1 } from '../devices/k1/k1.js';\nexport const x = k1;\n`,
  'src/devices/k1/k1.ts': `import { k2 } from '../k2/k2.js';\nexport const k1 = k2;\n`,
  'src/devices/helpers.ts': `import { k2 } from './k2/k2.js';\nexport const h = k2;\n`,
  'src/bdev/modules/b/b.ts': `import { a } from '../a/a.js';\nexport const b2 = a;\n`,
  'src/bdev/modules/c/c.ts': `import { a } from '../index.js';\nexport const c2 = a;\n`,
  'src/bdev/modules/d/d.ts': `import { c } from '../../channels.js';\nexport const d = c;\n`,
  'src/bdev/modules/qcow2/module.ts': `import { uringModule } from '../uring/module.js';\nexport const q2 = uringModule;\n`,
  'src/bdev/modules/uring/file-info.ts': `import { q } from '../qcow2/channel.js';\nexport const fi = q;\n`,
  'src/bdev/io.ts': `import { a } from './modules/a/a.js';\nexport const io = a;\n`,
  'src/services/names-backend.ts': `import { a } from '../bdev/modules/a/a.js';\nexport const nb = a;\n`,
  'src/services/s.ts':
    `import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n` +
    `export const n: unknown = require('../../addon.node');\n`,
  'src/util/cycle-a.ts': `import { cb } from './cycle-b.js';\nexport const ca = () => cb;\n`,
  'src/util/cycle-b.ts': `import { ca } from './cycle-a.js';\nexport const cb = () => ca;\n`,
  'addon.node': '',
};

const expected = [
  'layer:vhost-user src/vhost-user/session.ts -> src/reactor/r.ts',
  'layer:memory src/memory/memory-table.ts -> src/vhost-user/data-plane.ts', // type-only counts
  'layer:unassigned src/plugins/p.ts -> src/util/errors.ts',
  'layer:unassigned-target src/rpc/uses-plugin.ts -> src/plugins/leaf.ts',
  'reactor-names-no-device-kind src/reactor/bad.ts -> src/devices/k1/k1.ts',
  'device-kinds-independent src/devices/k1/k1.ts -> src/devices/k2/k2.ts',
  'device-interface-names-no-kind src/devices/helpers.ts -> src/devices/k2/k2.ts',
  'bdev-backend-imports-interface-only src/bdev/modules/b/b.ts -> src/bdev/modules/a/a.ts',
  'bdev-backend-imports-interface-only src/bdev/modules/c/c.ts -> src/bdev/modules/index.ts', // the list is no interface
  'bdev-backend-imports-interface-only src/bdev/modules/qcow2/module.ts -> src/bdev/modules/uring/module.ts', // only the listed files
  'bdev-backend-imports-interface-only src/bdev/modules/uring/file-info.ts -> src/bdev/modules/qcow2/channel.ts', // one way only
  'bdev-backend-not-to-backend-list src/bdev/modules/c/c.ts -> src/bdev/modules/index.ts',
  'bdev-backend-not-to-backend-list src/bdev/modules/d/d.ts -> src/bdev/channels.ts',
  'bdev-interface-names-no-backend src/bdev/io.ts -> src/bdev/modules/a/a.ts',
  'only-the-list-names-backends src/services/names-backend.ts -> src/bdev/modules/a/a.ts',
  'addon-only-through-native-facade src/services/s.ts -> module',
  'addon-only-through-native-facade src/services/s.ts -> addon.node',
  'no-circular src/util/cycle-a.ts -> src/util/cycle-b.ts', // one report per cycle
];

describe('layering check (.dependency-cruiser.cjs)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhostd-layering-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reports each broken layer rule, import cycle and addon load, and nothing that is allowed', async () => {
    for (const [path, text] of Object.entries(fixture)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    writeFileSync(join(dir, 'tsconfig.json'), readFileSync(join(repo, 'tsconfig.json')));

    const options = await extractDepcruiseOptions(join(repo, '.dependency-cruiser.cjs'));
    const tsConfig = extractTSConfig(join(dir, 'tsconfig.json'));
    const result = await cruise(['src'], { ...options, baseDir: dir }, {}, { tsConfig });
    const output = result.output as ICruiseResult;

    const cruised = new Set(output.modules.map((m) => m.source));
    for (const path of Object.keys(fixture).filter((p) => p.endsWith('.ts'))) {
      assert.ok(cruised.has(path), `${path} was not cruised`);
    }
    const found = output.summary.violations.map((v) => `${v.rule.name} ${v.from} -> ${v.to}`).sort();
    assert.deepEqual(found, [...expected].sort());
    assert.equal(output.summary.error, expected.length);
  });
});
