// qemu-storage-daemon (QSD) as a reference vhost-user-blk backend: the peer the e2e harness and
// guest scripts are validated against, and a baseline to compare vhostd with.
//
//   await using qsd = await Qsd.start({ disks: [{ backing: { kind: 'file', sizeBytes: 64 << 20 }, numQueues: 2 }] });
//   const r = await runGuest({ script, devices: qsd.disks[0].qemuArgs() });
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TIMEOUT_SCALE, makeTempDir, spawnTied, vhostUserBlkArgs } from './guest.js';
import { QmpClient } from './qmp.js';

export type QsdBacking =
  /** A raw image file. Created sparse with sizeBytes when missing; a caller's path is never deleted. */
  | { kind: 'file'; path?: string; sizeBytes?: number; discard?: 'unmap' | 'ignore'; cacheDirect?: boolean }
  /** null-co: reads return zeros, writes are dropped. */
  | { kind: 'null'; sizeBytes: number }
  /** A sparse file on /dev/shm (RAM), removed on stop. */
  | { kind: 'memory'; sizeBytes: number; discard?: 'unmap' | 'ignore' };

export interface QsdDiskOptions {
  backing: QsdBacking;
  /** virtio-blk request queues the export offers (default 1). */
  numQueues?: number;
  logicalBlockSize?: 512 | 4096;
  /** default true; false makes the guest see a read-only disk */
  writable?: boolean;
  /** run the export in its own iothread (default false: the main loop) */
  iothread?: boolean;
  /** where to listen (default: <qsd dir>/vhost.<index>) */
  socketPath?: string;
  /**
   * Export the block node of disk `sameNodeAs` (an earlier index) a second time instead of
   * opening `backing` again: two vhost-user-blk sockets onto one image, e.g. a migration's source
   * and destination. `backing` is then ignored.
   */
  sameNodeAs?: number;
}

export interface QsdDisk {
  id: string;
  nodeName: string;
  socketPath: string;
  /** the image file, for 'file' and 'memory' backings */
  imagePath?: string;
  sizeBytes: number;
  /** QEMU args attaching this export as a vhost-user-blk-pci disk (numQueues defaults to the export's). */
  qemuArgs(opts?: Parameters<typeof vhostUserBlkArgs>[1]): string[];
}

export interface QsdOptions {
  disks: QsdDiskOptions[];
  /** startup limit (default 20 s, scaled by VHOSTD_E2E_TIMEOUT_SCALE) */
  timeoutMs?: number;
  /** extra qemu-storage-daemon arguments */
  extraArgs?: string[];
}

export class Qsd {
  private stderrText = '';
  private exited = false;
  private readonly exitPromise: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private qmpClient: Promise<QmpClient> | undefined;

  private constructor(
    private readonly child: ChildProcess,
    readonly dir: string,
    readonly disks: QsdDisk[],
    private readonly ownedFiles: string[],
  ) {
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      this.stderrText += d;
    });
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      this.stderrText += d;
    });
    this.exitPromise = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.exited = true;
        resolve({ code, signal });
      });
    });
  }

  static async start(opts: QsdOptions): Promise<Qsd> {
    const dir = await makeTempDir('vhostd-qsd-');
    const owned: string[] = [];
    const args: string[] = [];
    const disks: QsdDisk[] = [];
    try {
      for (const [i, d] of opts.disks.entries()) {
        const shared = d.sameNodeAs === undefined ? undefined : disks[d.sameNodeAs];
        if (d.sameNodeAs !== undefined && !shared) throw new Error(`disk ${i}: sameNodeAs ${d.sameNodeAs} is not an earlier disk`);
        const nodeName = shared ? shared.nodeName : `disk${i}`;
        const id = `export${i}`;
        const socketPath = d.socketPath ?? path.join(dir, `vhost.${i}`);
        const b = d.backing;
        let imagePath: string | undefined;
        let sizeBytes: number;
        if (shared) {
          imagePath = shared.imagePath;
          sizeBytes = shared.sizeBytes;
        } else if (b.kind === 'null') {
          sizeBytes = b.sizeBytes;
          args.push('--blockdev', `driver=null-co,node-name=${nodeName},size=${sizeBytes},read-zeroes=on`);
        } else {
          if (b.kind === 'memory') {
            imagePath = path.join('/dev/shm', `${path.basename(dir)}-disk${i}.img`);
            owned.push(imagePath);
          } else if (b.path) {
            imagePath = b.path;
          } else {
            imagePath = path.join(dir, `disk${i}.img`);
          }
          if (!fs.existsSync(imagePath)) {
            if (b.sizeBytes === undefined) throw new Error(`${imagePath} does not exist and no sizeBytes given`);
            await fsp.writeFile(imagePath, '');
            await fsp.truncate(imagePath, b.sizeBytes);
          }
          sizeBytes = (await fsp.stat(imagePath)).size;
          const direct = b.kind === 'file' && b.cacheDirect ? 'on' : 'off';
          args.push(
            '--blockdev',
            `driver=file,node-name=${nodeName},filename=${imagePath},discard=${b.discard ?? 'unmap'},cache.direct=${direct}`,
          );
        }
        const exp = [
          'type=vhost-user-blk',
          `id=${id}`,
          `node-name=${nodeName}`,
          'addr.type=unix',
          `addr.path=${socketPath}`,
          `writable=${d.writable === false ? 'off' : 'on'}`,
          `num-queues=${d.numQueues ?? 1}`,
        ];
        if (d.logicalBlockSize) exp.push(`logical-block-size=${d.logicalBlockSize}`);
        if (d.iothread) {
          args.push('--object', `iothread,id=iothread${i}`);
          exp.push(`iothread=iothread${i}`);
        }
        args.push('--export', exp.join(','));
        const numQueues = d.numQueues ?? 1;
        disks.push({
          id,
          nodeName,
          socketPath,
          imagePath,
          sizeBytes,
          qemuArgs: (o = {}) => vhostUserBlkArgs(socketPath, { numQueues, ...o }),
        });
      }
      const qmpPath = path.join(dir, 'qmp.sock');
      const pidfile = path.join(dir, 'qsd.pid');
      args.push(
        '--chardev', `socket,id=qmp0,path=${qmpPath},server=on,wait=off`,
        '--monitor', 'chardev=qmp0',
        '--pidfile', pidfile,
        ...(opts.extraArgs ?? []),
      ); // prettier-ignore
      await fsp.writeFile(path.join(dir, 'cmdline'), `qemu-storage-daemon ${args.join(' ')}\n`);
      const child = spawnTied('qemu-storage-daemon', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      const qsd = new Qsd(child, dir, disks, owned);
      // QSD writes its pid file once every export is listening (documented ordering)
      const deadline = Date.now() + (opts.timeoutMs ?? 20_000) * TIMEOUT_SCALE;
      while (!fs.existsSync(pidfile)) {
        if (qsd.exited || Date.now() > deadline) {
          await qsd.stop();
          throw new Error(
            `qemu-storage-daemon did not start${qsd.exited ? '' : ' in time'}:\n${qsd.stderrText}\nargs: ${args.join(' ')}`,
          );
        }
        await sleep(20);
      }
      return qsd;
    } catch (e) {
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
      for (const f of owned) await fsp.rm(f, { force: true }).catch(() => {});
      throw e;
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
  get stderr(): string {
    return this.stderrText;
  }
  get running(): boolean {
    return !this.exited;
  }

  async qmp<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.qmpClient ??= QmpClient.connect(path.join(this.dir, 'qmp.sock'));
    return (await this.qmpClient).execute<T>(command, args);
  }

  /** SIGTERM (QSD flushes and exits), SIGKILL after 5 s; removes its temp files. Idempotent. */
  async stop(): Promise<void> {
    if (this.qmpClient) await this.qmpClient.then((q) => q.close(), () => {});
    if (!this.exited) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exitPromise;
      clearTimeout(t);
    }
    await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => {});
    for (const f of this.ownedFiles) await fsp.rm(f, { force: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

export function startQsd(opts: QsdOptions): Promise<Qsd> {
  return Qsd.start(opts);
}
