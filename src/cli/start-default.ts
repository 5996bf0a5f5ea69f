// `npm start`: a working default target — a 64 MiB malloc bdev Malloc0 exposed as blk controller
// vhost.0 — and the QEMU arguments that attach a VM to it.
import { onIgnoredSignal } from './signals.js'; // first: its listeners must exist before anything else loads
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { VhostdApp } from '../app.js';

const socketDir = process.env.VHOSTD_SOCKET_DIR ?? '/var/tmp';
const rpcSocket = process.env.VHOSTD_RPC_SOCKET ?? '/var/tmp/spdk.sock';
mkdirSync(socketDir, { recursive: true });

const app = await VhostdApp.start({ socketDir, cpumask: process.env.VHOSTD_CPUMASK ?? '0x1', rpcSocket });
await app.call('bdev_malloc_create', { name: 'Malloc0', num_blocks: (64 * 1024 * 1024) / 512, block_size: 512 });
await app.call('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Malloc0' });
const sock = join(socketDir, 'vhost.0');
process.stdout.write(`
vhostd is serving Malloc0 (64 MiB, 512-byte blocks) as vhost-user-blk controller vhost.0.
RPC socket: ${rpcSocket}  (try: bin/vhostctl -s ${rpcSocket} vhost_get_controllers)

Attach a QEMU VM (guest memory must be shared with vhostd):
  qemu-system-x86_64 -m 1G -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\
    -chardev socket,id=vhost0,path=${sock} \\
    -device vhost-user-blk-pci,chardev=vhost0,num-queues=2 ...

Stop with Ctrl-C.
`);
onIgnoredSignal((signal) => app.log.info({ signal }, 'signal ignored'));
const stop = () => app.stop().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
