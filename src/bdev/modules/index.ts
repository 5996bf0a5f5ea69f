// The bdev modules: the only file that names the backends, one line each. Every export here is a
// BdevModule (src/bdev/module.ts); channels.ts turns them into BDEV_MODULES (the reactors' channel
// factories, and the list src/rpc/methods registers each module's RPC methods from).
// Adding a backend: a folder src/bdev/modules/<name>/ whose module.ts exports a BdevModule, and
// one line here.
export { mallocModule } from './malloc/module.js';
export { nullModule } from './null/module.js';
export { uringModule } from './uring/module.js';
export { rbdModule } from './rbd/module.js';
export { delayModule } from './delay/module.js';
export { errorModule } from './error/module.js';
export { qcow2Module } from './qcow2/module.js';
