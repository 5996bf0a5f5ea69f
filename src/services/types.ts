// The control-plane API the RPC layer calls. RPC methods decode params, call one of these, and
// encode the reply; they hold no state of their own.
import type { Logger } from 'pino';
import type { ConfigCall } from '../bdev/bdev.js';
import type { BdevRegistry } from '../bdev/registry.js';
import type { ReactorStats } from '../reactor/messages.js';

export interface BlkControllerParams {
  ctrlr: string;
  devName: string;
  cpumask?: string;
  readonly?: boolean;
  packedRing?: boolean;
}

/** One element of SPDK's vhost_get_controllers reply. */
export interface ControllerInfo {
  ctrlr: string;
  cpumask: string;
  delay_base_us: number;
  iops_threshold: number;
  socket: string;
  sessions: Array<Record<string, unknown>>;
  /** A live migration is logging dirty pages through one of the sessions. */
  dirty_logging: boolean;
  backend_specific: Record<string, unknown>;
}

export interface VhostControllerService {
  readonly socketDir: string;
  createBlkController(p: BlkControllerParams): Promise<void>;
  createScsiController(p: { ctrlr: string; cpumask?: string }): Promise<void>;
  /** Returns the target number used (targetNum -1 picks the first free one). */
  scsiAddTarget(ctrlr: string, targetNum: number, bdevName: string): Promise<number>;
  scsiRemoveTarget(ctrlr: string, targetNum: number): Promise<void>;
  deleteController(ctrlr: string): Promise<void>;
  /** Throws ENODEV for an unknown name. */
  getControllers(name?: string): ControllerInfo[];
  setCoalescing(ctrlr: string, delayBaseUs: number, iopsThreshold: number): void;
  /**
   * The RPC calls that recreate the controllers of one SPDK subsystem, in creation order (SPDK's
   * spdk_vhost_blk_config_json / spdk_vhost_scsi_config_json), for framework_get_config.
   */
  writeConfig(subsystem: 'vhost_blk' | 'vhost_scsi'): ConfigCall[];
}

/** Reactor statistics for framework_get_reactors / thread_get_stats. */
export interface ReactorInfoProvider {
  readonly cpumask: string;
  /** gc: each reactor collects its garbage first (when node runs with --expose-gc). */
  stats(opts?: { gc?: boolean }): Promise<ReactorStats[]>;
}

/** Everything an RPC method may touch. */
export interface RpcContext {
  bdevs: BdevRegistry;
  vhost: VhostControllerService;
  logger: Logger;
  version: string;
  /** Absent in RPC unit tests that run without reactors. */
  reactors?: ReactorInfoProvider;
}
