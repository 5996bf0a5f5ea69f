// The layering of src/, checked by dependency-cruiser in `npm test` (alone: `npm run check:layers`).
// Every rule lives here; test/unit/layering.test.ts proves each kind of rule can fail.
// Type-only imports count like any other (tsPreCompilationDeps), so "the types live in the
// lower layer" is part of the rule, not a loophole.

// Layers, top to bottom. A module may import its own folder and anything in a lower row; never a
// row above, and never the other folder of its own row (peers stay independent of each other).
// util is the bottom row: everyone may use it, it uses nothing of src/. Skipping rows downward is
// fine (app → reactor, rpc → bdev/modules, services → native).
//
// Where the order is not obvious, the lower layer owns the interface the higher one implements:
//   reactor → devices      reactors run the Device/DeviceKind interface (devices/device.ts and the
//                          list devices/kinds.ts); they never name a kind (reactor-names-no-device-kind)
//   reactor → vhost-user   the reactor implements vhost-user's DataPlane (vhost-user/data-plane.ts)
//   devices → vhost-user   a device kind provides vhost-user's DeviceModel (features, config space)
//   vhost-user → virtio    a session negotiates virtio features and hands its rings to QueueRunners
//   virtio → bdev          the descriptor walker builds the bdev's scatter lists (bdev/io.ts)
// initiator (QEMU's role, for tests, the bench and vhost-load) sits beside services: the target
// never imports it, only the CLI does; it may use the wire formats below it.
const LAYERS = [
  { cli: 'src/cli/' },
  { app: 'src/app\\.ts$' }, // composition root: RPC server + service + reactors + bdev registry
  { rpc: 'src/rpc/' },
  { services: 'src/services/', initiator: 'src/initiator/' },
  { reactor: 'src/reactor/' },
  { devices: 'src/devices/' },
  { 'vhost-user': 'src/vhost-user/' },
  { virtio: 'src/virtio/', scsi: 'src/scsi/' },
  { bdev: 'src/bdev/', memory: 'src/memory/' },
  { native: 'src/native/' },
  { util: 'src/util/' },
];

const BDEV_INTERFACE = '^src/bdev/[^/]+\\.ts$';
// The one file that names every backend (src/bdev/modules/index.ts, one line per backend, each a
// BdevModule): channels.ts builds the reactors' channel factories from it and rpc/methods
// registers the modules' RPC methods from it. Backends are handed openBdev instead of importing
// channels.ts, which keeps this acyclic.
const BDEV_BACKEND_LIST = '^src/bdev/modules/index\\.ts$';
const BDEV_BACKEND = '^src/bdev/modules/([^/]+)/';
// The allow-list of backends built on another backend's I/O path: the backend folder, and the
// files of the other backend it may import (never its module.ts: the list stays the only way to a
// module). qcow2 serves its image files through the uring module's FileChannel and opens them as
// the uring module does (file-info.ts). Any other import between backends stays an error.
const BACKEND_BUILDS_ON = {
  qcow2: ['^src/bdev/modules/uring/uring\\.ts$', '^src/bdev/modules/uring/file-info\\.ts$'],
};
// The one devices file that names every device kind.
const DEVICE_KIND_LIST = '^src/devices/kinds\\.ts$';
const DEVICE_KIND = '^src/devices/([^/]+)/';

const layerRules = LAYERS.flatMap((row, i) =>
  Object.entries(row).flatMap(([name, path]) => {
    const above = LAYERS.slice(0, i).flatMap((r) => Object.entries(r));
    const peers = Object.entries(row).filter(([peer]) => peer !== name);
    const forbidden = [...above, ...peers];
    if (forbidden.length === 0) return []; // the top row may import anything of src/
    return {
      name: `layer:${name}`,
      severity: 'error',
      comment:
        `${name} must not import a layer above it or beside it (${forbidden.map(([n]) => n).join(', ')}); ` +
        'see LAYERS in .dependency-cruiser.cjs and README "Architecture"',
      from: { path: `^${path}` },
      to: { path: forbidden.map(([, p]) => `^${p}`) },
    };
  }),
);
const ALL_LAYERS = LAYERS.flatMap((row) => Object.values(row).map((p) => `^${p}`));

const rules = [
  ...layerRules,
  {
    name: 'layer:unassigned',
    severity: 'error',
    comment:
      'every module under src/ belongs to a layer: add its folder to LAYERS in .dependency-cruiser.cjs',
    from: { path: '^src/', pathNot: ALL_LAYERS },
    to: {},
  },
  {
    name: 'layer:unassigned-target',
    severity: 'error',
    comment:
      'every module under src/ belongs to a layer: add its folder to LAYERS in .dependency-cruiser.cjs',
    from: {},
    to: { path: '^src/', pathNot: ALL_LAYERS },
  },
  {
    name: 'reactor-names-no-device-kind',
    severity: 'error',
    comment:
      'reactors run devices through src/devices/device.ts and the list in src/devices/kinds.ts; ' +
      'they never import a device kind (src/devices/<kind>/) themselves',
    from: { path: '^src/reactor/' },
    to: { path: DEVICE_KIND },
  },
  {
    name: 'device-kinds-independent',
    severity: 'error',
    comment: 'a device kind (src/devices/<kind>/) never imports another kind',
    from: { path: DEVICE_KIND },
    to: { path: DEVICE_KIND, pathNot: '^src/devices/$1/' },
  },
  {
    name: 'device-interface-names-no-kind',
    severity: 'error',
    comment: 'only src/devices/kinds.ts lists the device kinds; the rest of src/devices/*.ts names none',
    from: { path: '^src/devices/[^/]+\\.ts$', pathNot: DEVICE_KIND_LIST },
    to: { path: DEVICE_KIND },
  },
  {
    name: 'bdev-backend-imports-interface-only',
    severity: 'error',
    comment:
      'a bdev backend (src/bdev/modules/<name>/) imports only the bdev interface (src/bdev/*.ts), ' +
      'src/util/ and src/native/ (and npm packages): never another backend, never rpc, services, ' +
      'devices, ... (exceptions: BACKEND_BUILDS_ON in .dependency-cruiser.cjs)',
    from: { path: BDEV_BACKEND, pathNot: Object.keys(BACKEND_BUILDS_ON).map((b) => `^src/bdev/modules/${b}/`) },
    to: {
      path: '^src/',
      pathNot: ['^src/bdev/modules/$1/', BDEV_INTERFACE, '^src/util/', '^src/native/'],
    },
  },
  // The same rule for the backends of the allow-list, with the files they may use.
  ...Object.entries(BACKEND_BUILDS_ON).map(([backend, allowed]) => ({
    name: 'bdev-backend-imports-interface-only',
    severity: 'error',
    comment:
      `${backend} imports only the bdev interface (src/bdev/*.ts), src/util/, src/native/ and the ` +
      `files BACKEND_BUILDS_ON allows it (${allowed.join(', ')})`,
    from: { path: `^src/bdev/modules/${backend}/` },
    to: {
      path: '^src/',
      pathNot: [`^src/bdev/modules/${backend}/`, BDEV_INTERFACE, '^src/util/', '^src/native/', ...allowed],
    },
  })),
  {
    name: 'bdev-backend-not-to-backend-list',
    severity: 'error',
    comment:
      'backends do not import src/bdev/modules/index.ts (the list of backends) nor src/bdev/channels.ts ' +
      '(built from it); a virtual bdev gets openBdev passed to its channel factory',
    from: { path: BDEV_BACKEND },
    to: { path: [BDEV_BACKEND_LIST, '^src/bdev/channels\\.ts$'] },
  },
  {
    name: 'bdev-interface-names-no-backend',
    severity: 'error',
    comment:
      'the bdev interface (src/bdev/*.ts) does not know the backends: only the list ' +
      'src/bdev/modules/index.ts names them (channels.ts imports the list, no backend)',
    from: { path: BDEV_INTERFACE },
    to: { path: BDEV_BACKEND },
  },
  {
    name: 'only-the-list-names-backends',
    severity: 'error',
    comment:
      'outside src/bdev/, nothing imports a backend (src/bdev/modules/<name>/): rpc, services and ' +
      'the rest reach the modules through the list (src/bdev/modules/index.ts, via channels.ts ' +
      'BDEV_MODULES), so adding a backend is one folder plus one line',
    from: { path: '^src/', pathNot: '^src/bdev/' },
    to: { path: BDEV_BACKEND },
  },
  {
    name: 'addon-only-through-native-facade',
    severity: 'error',
    comment:
      'src/native/index.ts is the only module that loads the C++ addon (a .node file, through ' +
      "createRequire from 'node:module'); everything else uses its typed facade",
    from: { pathNot: '^src/native/index\\.ts$' },
    to: { path: ['\\.node$', '^module$'] },
  },
  {
    name: 'no-circular',
    severity: 'error',
    comment: 'no import cycles (type-only imports included)',
    from: {},
    to: { circular: true },
  },
];

// Temporary exceptions: none today. Should code ever have to break a rule for a while, don't
// loosen the rule: exempt the one importing file in that rule (`from.pathNot`) with a comment
// starting `TEMPORARY:` (file:line, why, what fixes it), and add a severity 'warn' rule named
// `temporary:<rule>:<file>` matching exactly that import, so every run prints it.

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: rules,
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
  },
};
