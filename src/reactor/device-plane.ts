// The data plane of one vhost-user session: spreads the device's queues over the reactors of its
// cpumask (first queue on the least-loaded one) and forwards memory/queue changes to them.
import type { DirtyLogShare } from '../memory/dirty-log.js';
import type { RegionShare } from '../memory/region.js';
import type { Coalescing, QueueConfig } from '../virtio/queue-runner.js';
import type { DataPlane } from '../vhost-user/data-plane.js';
import type { DeviceSpec } from './messages.js';
import type { ReactorHandle, ReactorPool } from './reactor-pool.js';

let nextDevId = 1;

export class DevicePlane implements DataPlane {
  readonly devId = nextDevId++;
  private readonly reactors: ReactorHandle[];
  private readonly attached = new Set<ReactorHandle>();
  private readonly queueReactor = new Map<number, ReactorHandle>();
  private regions: RegionShare[] = [];
  private dirtyLog: DirtyLogShare | undefined;
  private coalescing: Coalescing | undefined;

  constructor(
    pool: ReactorPool,
    cores: number[],
    private spec: DeviceSpec,
  ) {
    const reactors = pool.select(cores);
    this.reactors = spec.affinity === undefined ? reactors : [pool.affine(spec.affinity, reactors)];
  }

  /** The cores whose reactors serve this session's queues (one per reactor, queues round robin). */
  get cores(): number[] {
    return this.reactors.map((r) => r.core);
  }

  /** Which reactor serves queue `qid`. */
  reactorFor(qid: number): ReactorHandle {
    return this.reactors[qid % this.reactors.length];
  }

  private async ensureAttached(r: ReactorHandle): Promise<void> {
    if (this.attached.has(r)) return;
    this.attached.add(r);
    await r.request({ op: 'attach', devId: this.devId, spec: this.spec });
    await r.request({ op: 'memory', devId: this.devId, regions: this.regions });
    if (this.dirtyLog) await r.request({ op: 'dirtyLog', devId: this.devId, log: this.dirtyLog });
  }

  async setDirtyLog(log: DirtyLogShare | undefined): Promise<void> {
    this.dirtyLog = log;
    await Promise.all([...this.attached].map((r) => r.request({ op: 'dirtyLog', devId: this.devId, log })));
  }

  async setMemory(regions: RegionShare[]): Promise<void> {
    this.regions = regions;
    await Promise.all([...this.attached].map((r) => r.request({ op: 'memory', devId: this.devId, regions })));
  }

  async startQueue(cfg: QueueConfig, kickFd: number): Promise<void> {
    const r = this.reactorFor(cfg.qid);
    await this.ensureAttached(r);
    await r.request({ op: 'startQueue', devId: this.devId, cfg: { ...cfg, coalescing: this.coalescing }, kickFd });
    this.queueReactor.set(cfg.qid, r);
    r.load++;
  }

  isRunning(qid: number): boolean {
    return this.queueReactor.has(qid);
  }

  /** Stops a running queue once its in-flight requests are done; returns the next avail index. */
  async stopQueue(qid: number): Promise<number> {
    const r = this.queueReactor.get(qid);
    if (!r) throw new Error(`queue ${qid} is not running`);
    this.queueReactor.delete(qid);
    r.load--;
    return r.request<number>({ op: 'stopQueue', devId: this.devId, qid });
  }

  /** Stops every queue of the device at once (a protocol violation); in-flight requests still complete. */
  async fail(): Promise<void> {
    await Promise.all([...this.attached].map((r) => r.request({ op: 'fail', devId: this.devId })));
  }

  async setCallFd(qid: number, fd: number): Promise<void> {
    const r = this.queueReactor.get(qid);
    if (r) await r.request({ op: 'setCall', devId: this.devId, qid, fd });
  }

  async setCoalescing(c: Coalescing): Promise<void> {
    this.coalescing = c;
    await Promise.all([...this.attached].map((r) => r.request({ op: 'coalescing', devId: this.devId, coalescing: c })));
  }

  /**
   * A device-specific action on every reactor serving this session (SCSI hot-plug); `spec` is the
   * device as it stands after the action, for reactors that attach later. Resolves once every
   * reactor finished it (a hot-detach waits for the target's in-flight commands).
   */
  async control(action: string, arg: unknown, spec: DeviceSpec): Promise<void> {
    this.spec = spec;
    await Promise.all([...this.attached].map((r) => r.request({ op: 'control', devId: this.devId, action, arg })));
  }

  async close(): Promise<void> {
    for (const r of this.queueReactor.values()) r.load--;
    this.queueReactor.clear();
    await Promise.all([...this.attached].map((r) => r.request({ op: 'detach', devId: this.devId })));
    this.attached.clear();
  }
}
