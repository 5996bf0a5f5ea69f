// The qcow2 rows' images (issue #15): `qcow2` (a fully allocated image: every cluster written
// with a pattern before the bench starts) and `qcow2-fresh` (an empty image, new before every
// measured run: its random writes take the allocation path). Each target gets its own copy, made
// outside the measured window; vhostd serves it with bdev_qcow2_create, qemu-storage-daemon with
// driver=qcow2 over driver=file,aio=io_uring,cache.direct=on.
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { QmpClient } from '../../test/e2e/lib/qmp.js';

/** Default cluster size (QEMU's). */
export const QCOW2_CLUSTER = 65536;

export type Qcow2Kind = 'qcow2' | 'qcow2-fresh';

export function isQcow2Kind(kind: string): kind is Qcow2Kind {
  return kind === 'qcow2' || kind === 'qcow2-fresh';
}

/** Why the qcow2 rows cannot run here (qemu-img / qemu-io missing), or undefined. */
export function qcow2Missing(): string | undefined {
  const missing = ['qemu-img', 'qemu-io'].filter((c) => {
    try {
      execFileSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  return missing.length ? `not available: ${missing.join(' and ')} not installed` : undefined;
}

const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { stdio: ['ignore', 'pipe', 'pipe'] });

/** A target's own image of a row: <dir>/vhostd-bench-<pid>-<target>-<kind>.qcow2. */
export function qcow2ImagePath(dir: string, target: string, kind: Qcow2Kind): string {
  return join(dir, `vhostd-bench-${process.pid}-${target}-${kind}.qcow2`);
}

/**
 * The fully allocated image every target copies: metadata preallocated (clusters in order), then
 * every byte written through qemu-io with a non-zero pattern, so no read meets an unallocated
 * cluster or a hole in the file.
 */
export function createFullImage(dir: string, sizeBytes: number, log: (m: string) => void): string {
  const path = join(dir, `vhostd-bench-${process.pid}-qcow2-template.qcow2`);
  rmSync(path, { force: true });
  log(`writing the ${sizeBytes >> 20} MiB fully allocated qcow2 image ${path}`);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `preallocation=metadata,cluster_size=${QCOW2_CLUSTER}`, path, String(sizeBytes));
  const chunk = 64 << 20;
  const cmds: string[] = [];
  for (let off = 0; off < sizeBytes; off += chunk) cmds.push('-c', `write -q -P 0x5a ${off} ${Math.min(chunk, sizeBytes - off)}`);
  execFileSync('qemu-io', ['-f', 'qcow2', ...cmds, path], { stdio: ['ignore', 'pipe', 'pipe'] });
  return path;
}

/** `path` becomes a copy of the fully allocated image, or a new empty image (qemu-img create). */
export function prepareImage(kind: Qcow2Kind, path: string, files: { qcow2?: string; sizeBytes: number }): void {
  rmSync(path, { force: true });
  if (kind === 'qcow2') {
    if (!files.qcow2) throw new Error('no fully allocated qcow2 image');
    copyFileSync(files.qcow2, path);
  } else {
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${QCOW2_CLUSTER}`, path, String(files.sizeBytes));
  }
}

export function imageLabel(kind: Qcow2Kind, path: string): string {
  return `qcow2 ${path} (${QCOW2_CLUSTER >> 10} KiB clusters, ${kind === 'qcow2' ? 'fully allocated' : 'empty, new per run'})`;
}

/** QSD's two nodes of a qcow2 image: the file (io_uring, O_DIRECT) and the format over it. */
export function qsdQcow2Nodes(node: string, path: string): Array<Record<string, unknown>> {
  return [
    { driver: 'file', 'node-name': `${node}-file`, filename: path, aio: 'io_uring', cache: { direct: true }, locking: 'off' },
    { driver: 'qcow2', 'node-name': node, file: `${node}-file` },
  ];
}

/** The same nodes as --blockdev arguments. */
export function qsdQcow2Args(node: string, path: string): string[] {
  return [
    '--blockdev', `driver=file,node-name=${node}-file,filename=${path},aio=io_uring,cache.direct=on,locking=off`,
    '--blockdev', `driver=qcow2,node-name=${node},file=${node}-file`,
  ]; // prettier-ignore
}

export interface QsdExportSpec {
  id: string;
  node: string;
  socket: string;
  queues: number;
  iothread: string;
}

/**
 * A new empty image under QSD's exports of `node`, over QMP: the exports go (waiting for
 * BLOCK_EXPORT_DELETED), then the nodes, the image is created anew, and nodes and exports come
 * back with the same ids and sockets.
 */
export async function qsdRenewImage(qmpPath: string, node: string, path: string, exports: QsdExportSpec[], files: { sizeBytes: number }): Promise<void> {
  const qmp = await QmpClient.connect(qmpPath);
  try {
    for (const e of exports) {
      const gone = qmp.waitEvent('BLOCK_EXPORT_DELETED', (ev) => ev.data?.id === e.id, 10_000);
      await qmp.execute('block-export-del', { id: e.id });
      await gone;
    }
    await qmp.execute('blockdev-del', { 'node-name': node });
    await qmp.execute('blockdev-del', { 'node-name': `${node}-file` });
    prepareImage('qcow2-fresh', path, files);
    for (const n of qsdQcow2Nodes(node, path)) await qmp.execute('blockdev-add', n);
    for (const e of exports) {
      rmSync(e.socket, { force: true });
      await qmp.execute('block-export-add', {
        type: 'vhost-user-blk',
        id: e.id,
        'node-name': e.node,
        addr: { type: 'unix', path: e.socket },
        writable: true,
        'num-queues': e.queues,
        iothread: e.iothread,
      });
    }
  } finally {
    qmp.close();
  }
}
