// A real RpcServer on a temp socket, backed by a real BdevRegistry and a recording fake of the
// vhost control plane, for RPC method and vhostctl tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { ConfigCall } from '../../../src/bdev/bdev.js';
import { BdevRegistry } from '../../../src/bdev/registry.js';
import { registerMethods } from '../../../src/rpc/methods/index.js';
import { RpcServer } from '../../../src/rpc/server.js';
import type { BlkControllerParams, ControllerInfo, RpcContext, VhostControllerService } from '../../../src/services/types.js';
import { VhostdError } from '../../../src/util/errors.js';

export interface RecordedCall {
  method: string;
  args: unknown[];
}

/** Keeps controllers in a map and claims bdevs through the registry like the real service. */
export class FakeVhostService implements VhostControllerService {
  readonly socketDir: string;
  readonly calls: RecordedCall[] = [];
  readonly controllers = new Map<string, ControllerInfo>();
  /** Makes the next call throw this (to test error mapping). */
  failNext: Error | undefined;

  constructor(
    private readonly bdevs: BdevRegistry,
    socketDir = '/tmp/vhostd-test',
  ) {
    this.socketDir = socketDir;
  }

  private record(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
    const err = this.failNext;
    this.failNext = undefined;
    if (err) throw err;
  }

  private get(ctrlr: string): ControllerInfo {
    const c = this.controllers.get(ctrlr);
    if (!c) throw VhostdError.errno('ENODEV', `controller ${ctrlr} does not exist`);
    return c;
  }

  private add(ctrlr: string, cpumask: string | undefined, backend: Record<string, unknown>): void {
    if (this.controllers.has(ctrlr)) throw VhostdError.errno('EEXIST', `controller ${ctrlr} exists`);
    this.controllers.set(ctrlr, {
      ctrlr,
      cpumask: cpumask ?? '0x1',
      delay_base_us: 0,
      iops_threshold: 60000,
      socket: join(this.socketDir, ctrlr),
      sessions: [],
      dirty_logging: false,
      backend_specific: backend,
    });
  }

  async createBlkController(p: BlkControllerParams): Promise<void> {
    this.record('createBlkController', p);
    this.bdevs.open(p.devName, p.ctrlr);
    this.add(p.ctrlr, p.cpumask, { block: { readonly: p.readonly ?? false, bdev: p.devName, transport: 'vhost_user_blk' } });
  }

  async createScsiController(p: { ctrlr: string; cpumask?: string }): Promise<void> {
    this.record('createScsiController', p);
    this.add(p.ctrlr, p.cpumask, { scsi: [] });
  }

  async scsiAddTarget(ctrlr: string, targetNum: number, bdevName: string): Promise<number> {
    this.record('scsiAddTarget', ctrlr, targetNum, bdevName);
    const targets = this.get(ctrlr).backend_specific.scsi as Array<Record<string, unknown>>;
    let num = targetNum;
    if (num < 0) for (num = 0; targets.some((t) => t.scsi_dev_num === num); num++);
    if (num >= 8) throw VhostdError.errno('EINVAL', 'target number out of range');
    if (targets.some((t) => t.scsi_dev_num === num)) throw VhostdError.errno('EEXIST', `target ${num} exists`);
    this.bdevs.open(bdevName, ctrlr);
    targets.push({ scsi_dev_num: num, id: num, target_name: `Target ${num}`, luns: [{ id: 0, bdev_name: bdevName }] });
    return num;
  }

  async scsiRemoveTarget(ctrlr: string, targetNum: number): Promise<void> {
    this.record('scsiRemoveTarget', ctrlr, targetNum);
    const targets = this.get(ctrlr).backend_specific.scsi as Array<Record<string, unknown>>;
    const i = targets.findIndex((t) => t.scsi_dev_num === targetNum);
    if (i < 0) throw VhostdError.errno('EINVAL', `no target ${targetNum}`);
    targets.splice(i, 1);
  }

  async deleteController(ctrlr: string): Promise<void> {
    this.record('deleteController', ctrlr);
    const c = this.get(ctrlr);
    const block = c.backend_specific.block as { bdev: string } | undefined;
    if (block) this.bdevs.release(block.bdev, ctrlr);
    this.controllers.delete(ctrlr);
  }

  getControllers(name?: string): ControllerInfo[] {
    this.record('getControllers', name);
    return name === undefined ? [...this.controllers.values()] : [this.get(name)];
  }

  setCoalescing(ctrlr: string, delayBaseUs: number, iopsThreshold: number): void {
    this.record('setCoalescing', ctrlr, delayBaseUs, iopsThreshold);
    const c = this.get(ctrlr);
    c.delay_base_us = delayBaseUs;
    c.iops_threshold = iopsThreshold;
  }

  /** Recorded only: the RPC tests that use this fake do not save configurations. */
  writeConfig(subsystem: 'vhost_blk' | 'vhost_scsi'): ConfigCall[] {
    this.record('writeConfig', subsystem);
    return [];
  }
}

export interface TestServer {
  server: RpcServer;
  ctx: RpcContext;
  bdevs: BdevRegistry;
  vhost: FakeVhostService;
  socketPath: string;
  dir: string;
  stop(): Promise<void>;
}

export async function startTestServer(opts: { maxConnections?: number; maxRequestBytes?: number } = {}): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'vhostd-rpc-'));
  const socketPath = join(dir, 'spdk.sock');
  const logger = pino({ level: process.env.VHOSTD_TEST_LOG ?? 'silent' });
  const bdevs = new BdevRegistry();
  const vhost = new FakeVhostService(bdevs, dir);
  const ctx: RpcContext = { bdevs, vhost, logger, version: '0.1.0-test' };
  const server = new RpcServer({ socketPath, logger, ...opts });
  registerMethods(server, ctx);
  await server.start();
  return {
    server,
    ctx,
    bdevs,
    vhost,
    socketPath,
    dir,
    async stop() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
