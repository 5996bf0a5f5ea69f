// Controllers by name: creation and deletion with SPDK's rules (one exclusive bdev claim per blk
// controller, sockets in the socket directory), and the vhost_get_controllers view.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ConfigCall } from '../bdev/bdev.js';
import type { BdevRegistry } from '../bdev/registry.js';
import { BlkModel } from '../devices/blk/blk-model.js';
import { ScsiModel } from '../devices/scsi/scsi-model.js';
import { MAX_SCSI_TARGETS, ScsiControl } from '../devices/scsi/scsi-spec.js';
import { scsiLunInfoFromBdev } from '../scsi/index.js';
import { formatCpumask, parseCpumask, type ReactorPool } from '../reactor/reactor-pool.js';
import { VhostdError, invalidParams } from '../util/errors.js';
import { Controller } from './controller.js';
import type { BlkControllerParams, ControllerInfo, VhostControllerService } from './types.js';

/** SPDK's defaults for vhost_controller_set_coalescing. */
const DEFAULT_DELAY_BASE_US = 0;
const DEFAULT_IOPS_THRESHOLD = 60000;
const MAX_SOCKET_PATH = 107;
export const MAX_CONTROLLERS = 256;

interface Entry {
  controller: Controller;
  cores: number[];
  /** blk: the one bdev; scsi: unused (see scsi). */
  bdevName: string;
  readonly: boolean;
  packedRing: boolean;
  kind: 'blk' | 'scsi';
  /** scsi: the model whose targets new sessions start from. */
  scsi?: ScsiModel;
  /** scsi: target number → bdev name. */
  targets: Map<number, string>;
  delayBaseUs: number;
  iopsThreshold: number;
}

export interface VhostServiceOptions {
  socketDir: string;
  socketMode: number;
  /** Group of the controller sockets (--socket-group). */
  socketGid?: number;
}

export class VhostService implements VhostControllerService {
  private readonly controllers = new Map<string, Entry>();
  readonly socketDir: string;

  constructor(
    private readonly opts: VhostServiceOptions,
    private readonly bdevs: BdevRegistry,
    private readonly pool: ReactorPool,
    private readonly log: Logger,
  ) {
    this.socketDir = opts.socketDir;
    pool.onEvent((e) => {
      for (const [name, entry] of this.controllers) {
        if (entry.controller.ownsDevice(e.devId)) this.log.error({ ctrlr: name, reason: e.reason }, 'device stopped after a guest protocol violation');
      }
    });
  }

  private checkName(ctrlr: string): string {
    // A NUL would cut the socket path short in the kernel (a socket file named by the prefix).
    if (typeof ctrlr !== 'string' || ctrlr.length === 0 || ctrlr.includes('/') || ctrlr.includes('\0') || ctrlr === '.' || ctrlr === '..') {
      throw invalidParams(`invalid controller name ${JSON.stringify(ctrlr)}`);
    }
    if (this.controllers.has(ctrlr)) throw VhostdError.errno('EEXIST', `controller ${ctrlr} already exists`);
    const path = join(this.socketDir, ctrlr);
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw invalidParams(`socket path ${path} is longer than ${MAX_SOCKET_PATH} bytes`);
    if (this.controllers.size >= MAX_CONTROLLERS) throw VhostdError.errno('ENOSPC', `at most ${MAX_CONTROLLERS} controllers`);
    return path;
  }

  private cores(cpumask: string | undefined): number[] {
    if (cpumask === undefined) return this.pool.cores;
    let cores: number[];
    try {
      cores = parseCpumask(cpumask);
    } catch (e) {
      throw invalidParams((e as Error).message);
    }
    if (!cores.every((c) => this.pool.cores.includes(c))) {
      throw invalidParams(`cpumask ${cpumask} is not a subset of the application cpumask ${this.pool.cpumask}`);
    }
    return cores;
  }

  async createBlkController(p: BlkControllerParams): Promise<void> {
    const socketPath = this.checkName(p.ctrlr);
    const cores = this.cores(p.cpumask);
    const bdev = this.bdevs.open(p.devName, p.ctrlr);
    try {
      const model = new BlkModel(p.ctrlr, bdev, this.bdevs.openSpec(bdev), { readonly: p.readonly ?? false, packedRing: p.packedRing ?? false });
      const controller = new Controller({ name: p.ctrlr, socketPath, cores, model, socketMode: this.opts.socketMode, socketGid: this.opts.socketGid }, this.pool, this.log);
      controller.listen();
      this.controllers.set(p.ctrlr, {
        controller,
        cores,
        bdevName: bdev.name,
        readonly: p.readonly ?? false,
        packedRing: p.packedRing ?? false,
        kind: 'blk',
        targets: new Map(),
        delayBaseUs: DEFAULT_DELAY_BASE_US,
        iopsThreshold: DEFAULT_IOPS_THRESHOLD,
      });
    } catch (e) {
      this.bdevs.release(bdev.name, p.ctrlr);
      throw e;
    }
  }

  async createScsiController(p: { ctrlr: string; cpumask?: string }): Promise<void> {
    const socketPath = this.checkName(p.ctrlr);
    const cores = this.cores(p.cpumask);
    const model = new ScsiModel(p.ctrlr);
    const controller = new Controller({ name: p.ctrlr, socketPath, cores, model, socketMode: this.opts.socketMode, socketGid: this.opts.socketGid }, this.pool, this.log);
    controller.listen();
    this.controllers.set(p.ctrlr, {
      controller,
      cores,
      bdevName: '',
      readonly: false,
      packedRing: true,
      kind: 'scsi',
      scsi: model,
      targets: new Map(),
      delayBaseUs: DEFAULT_DELAY_BASE_US,
      iopsThreshold: DEFAULT_IOPS_THRESHOLD,
    });
  }

  private scsiEntry(ctrlr: string): Entry & { scsi: ScsiModel } {
    const e = this.get(ctrlr);
    if (!e.scsi) throw VhostdError.errno('EINVAL', `controller ${ctrlr} is not a SCSI controller`);
    return e as Entry & { scsi: ScsiModel };
  }

  async scsiAddTarget(ctrlr: string, targetNum: number, bdevName: string): Promise<number> {
    const e = this.scsiEntry(ctrlr);
    let t = targetNum;
    if (t === -1) {
      t = [...Array(MAX_SCSI_TARGETS).keys()].find((n) => !e.targets.has(n)) ?? -1;
      if (t < 0) throw VhostdError.errno('ENOSPC', `controller ${ctrlr} has no free target`);
    }
    if (!Number.isInteger(t) || t < 0 || t >= MAX_SCSI_TARGETS) throw VhostdError.errno('EINVAL', `target ${targetNum} is not in 0..${MAX_SCSI_TARGETS - 1}`);
    if (e.targets.has(t)) throw VhostdError.errno('EEXIST', `controller ${ctrlr} target ${t} is already occupied`);
    // A bdev served by one reactor thread (a writable qcow2 image) cannot join a running session
    // spread over several: every reactor of the session would open it, one would win the image
    // and the guest's commands on the others' queues would fail. New sessions follow the target.
    const affinity = this.bdevs.has(bdevName) ? this.bdevs.get(bdevName).threadAffinity : undefined;
    const spread = affinity === undefined ? undefined : e.controller.sessionCores().find((cores) => cores.length > 1);
    if (spread !== undefined) {
      throw VhostdError.errno(
        'EBUSY',
        `bdev ${bdevName} is served by one reactor thread (a writable qcow2 image), and the running session of controller ${ctrlr} ` +
          `has its queues on cores ${spread.join(', ')}: add the target before the VM connects (its queues then share one core), ` +
          'or create the controller with a one-core cpumask',
      );
    }
    const owner = `${ctrlr}/target${t}`;
    // Deleting the bdev hot-detaches the target, as SPDK does.
    const bdev = this.bdevs.open(bdevName, owner, () => this.scsiRemoveTarget(ctrlr, t));
    const spec = { target: t, lun: scsiLunInfoFromBdev(bdev), bdev: this.bdevs.openSpec(bdev) };
    e.targets.set(t, bdev.name);
    e.scsi.targets.set(t, spec);
    try {
      await e.controller.forEachPlane((plane) => plane.control(ScsiControl.ATTACH_TARGET, spec, e.scsi.spec()));
    } catch (err) {
      this.log.error({ ctrlr, target: t, err }, 'hot-attach failed on a running session');
    }
    this.log.info({ ctrlr, target: t, bdev: bdev.name }, 'SCSI target added');
    return t;
  }

  async scsiRemoveTarget(ctrlr: string, targetNum: number): Promise<void> {
    const e = this.scsiEntry(ctrlr);
    const bdevName = e.targets.get(targetNum);
    if (bdevName === undefined) throw VhostdError.errno('ENODEV', `controller ${ctrlr} has no target ${targetNum}`);
    e.targets.delete(targetNum);
    e.scsi.targets.delete(targetNum);
    try {
      await e.controller.forEachPlane((plane) => plane.control(ScsiControl.DETACH_TARGET, targetNum, e.scsi.spec()));
    } finally {
      this.bdevs.release(bdevName, `${ctrlr}/target${targetNum}`);
    }
    this.log.info({ ctrlr, target: targetNum, bdev: bdevName }, 'SCSI target removed');
  }

  private get(ctrlr: string): Entry {
    const e = this.controllers.get(ctrlr);
    if (!e) throw VhostdError.errno('ENODEV', `controller ${ctrlr} does not exist`);
    return e;
  }

  async deleteController(ctrlr: string): Promise<void> {
    const e = this.get(ctrlr);
    if (e.controller.sessionCount > 0) {
      // SPDK refuses to delete a controller while a front-end is connected.
      throw VhostdError.errno('EBUSY', `controller ${ctrlr} has a connected front-end`);
    }
    this.controllers.delete(ctrlr);
    await e.controller.close();
    this.releaseClaims(ctrlr, e);
  }

  private releaseClaims(ctrlr: string, e: Entry): void {
    if (e.kind === 'blk') this.bdevs.release(e.bdevName, ctrlr);
    for (const [t, bdev] of e.targets) this.bdevs.release(bdev, `${ctrlr}/target${t}`);
  }

  getControllers(name?: string): ControllerInfo[] {
    const entries = name === undefined ? [...this.controllers.entries()] : [[name, this.get(name)] as const];
    return entries.map(([ctrlr, e]) => {
      const sessions = e.controller.sessionInfo();
      return {
        ctrlr,
        cpumask: formatCpumask(e.cores),
        delay_base_us: e.delayBaseUs,
        iops_threshold: e.iopsThreshold,
        socket: e.controller.opts.socketPath,
        sessions,
        // vhostd's own: a live migration is logging dirty pages through this controller.
        dirty_logging: sessions.some((s) => s.dirty_logging),
        backend_specific:
          e.kind === 'blk'
            ? { block: { readonly: e.readonly, bdev: e.bdevName, transport: 'vhost_user_blk' } }
            : {
                scsi: [...e.targets.entries()]
                  .sort(([a], [b]) => a - b)
                  .map(([t, bdev]) => ({ target_name: `Target ${t}`, id: t, scsi_dev_num: t, luns: [{ id: 0, bdev_name: bdev }] })),
              },
      };
    });
  }

  /**
   * The calls that recreate this subsystem's controllers, in creation order: SPDK's
   * vhost_blk_write_config_json ({ctrlr, dev_name, cpumask, readonly, transport}) and
   * vhost_controller_set_coalescing when it differs from the defaults; SCSI controllers
   * (subsystem 'vhost_scsi') as vhost_scsi_write_config_json writes them.
   */
  writeConfig(subsystem: 'vhost_blk' | 'vhost_scsi'): ConfigCall[] {
    const calls: ConfigCall[] = [];
    for (const [ctrlr, e] of this.controllers) {
      if (subsystem !== (e.kind === 'blk' ? 'vhost_blk' : 'vhost_scsi')) continue;
      if (e.kind === 'scsi') {
        // SPDK's vhost_scsi_write_config_json: create (delayed), one add_target per target, start.
        calls.push({ method: 'vhost_create_scsi_controller', params: { ctrlr, cpumask: formatCpumask(e.cores), delay: true } });
        for (const [t, bdev] of [...e.targets].sort(([a], [b]) => a - b)) {
          calls.push({ method: 'vhost_scsi_controller_add_target', params: { ctrlr, scsi_target_num: t, bdev_name: bdev } });
        }
        calls.push({ method: 'vhost_start_scsi_controller', params: { ctrlr } });
      } else {
        calls.push({
          method: 'vhost_create_blk_controller',
          params: {
            ctrlr,
            dev_name: e.bdevName,
            cpumask: formatCpumask(e.cores),
            readonly: e.readonly,
            transport: 'vhost_user_blk',
            // Not in SPDK's output (it forgets it); written only when set, so SPDK reads the file too.
            ...(e.packedRing ? { packed_ring: true } : {}),
          },
        });
      }
      if (e.delayBaseUs !== DEFAULT_DELAY_BASE_US || e.iopsThreshold !== DEFAULT_IOPS_THRESHOLD) {
        calls.push({
          method: 'vhost_controller_set_coalescing',
          params: { ctrlr, delay_base_us: e.delayBaseUs, iops_threshold: e.iopsThreshold },
        });
      }
    }
    return calls;
  }

  setCoalescing(ctrlr: string, delayBaseUs: number, iopsThreshold: number): void {
    const e = this.get(ctrlr);
    e.delayBaseUs = delayBaseUs;
    e.iopsThreshold = iopsThreshold;
    e.controller.setCoalescing({ delayBaseUs, iopsThreshold });
  }

  async close(): Promise<void> {
    for (const [name, e] of this.controllers) {
      await e.controller.close();
      this.releaseClaims(name, e);
    }
    this.controllers.clear();
  }
}
