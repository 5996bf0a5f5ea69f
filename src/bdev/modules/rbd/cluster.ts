// Rados cluster connections: create, configure and connect one librados handle (SPDK's
// bdev_rados_cluster_init / rbd_register_cluster), and the named shared connections of
// bdev_rbd_register_cluster. Everything that talks to the cluster runs off the control thread.
import { isMainThread } from 'node:worker_threads';
import { rbd } from '../../../native/rbd.js';
import { Errno } from '../../../util/errno.js';
import { rbdErrno, rbdError } from './errors.js';

/**
 * Defaults so a broken cluster fails an RPC instead of hanging it: unreachable monitors fail the
 * connect after client_mount_timeout (Ceph's default: 300 s); monitor commands and the first
 * osdmap wait are bounded by rados_mon_op_timeout (Ceph's default: none), generously, because the
 * handle lives on and librbd issues monitor commands (e.g. blocklisting a dead lock owner) that
 * must survive a monitor election. A value from the config file wins (it is kept unless it still
 * equals Ceph's default), and so does any `config` entry.
 */
export const CONNECT_TIMEOUTS: ReadonlyArray<{ key: string; cephDefault: string; value: string }> = [
  { key: 'client_mount_timeout', cephDefault: '300', value: '5' },
  { key: 'rados_mon_op_timeout', cephDefault: '0', value: '30' },
];

export interface ConnectOptions {
  /** Ceph user without the "client." prefix; librados' default (admin) when absent. */
  userId?: string;
  /** A config file to read: a path, or null for librados' search ($CEPH_CONF, /etc/ceph/ceph.conf, ...). */
  configFile?: string | null;
  /** Whether failing to read the config file is an error (it is not for register_cluster's default search). */
  configFileRequired: boolean;
  /** rados_conf_set key → value, applied after the file, in order. */
  config?: Record<string, string>;
  /** Keyring path (register_cluster's key_file). */
  keyFile?: string;
  /** Cores for librados' threads (register_cluster's core_mask). */
  cpus?: number[];
}

/** Owns one handle id; closing twice is harmless. */
export class RadosCluster {
  private closed = false;

  constructor(readonly id: number) {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await rbd().rbdClusterClose(this.id);
  }
}

function confGet(id: number, key: string): string {
  const v = rbd().rbdConfGet(id, key);
  return typeof v === 'string' ? v : '';
}

/** Creates, configures and connects a cluster handle; nothing is left open if it fails. */
export async function connectCluster(o: ConnectOptions): Promise<RadosCluster> {
  closeAllAtExit();
  const id = rbd().rbdClusterCreate(o.userId ?? null);
  if (id < 0) throw rbdError(-id, `rados_create for client.${o.userId ?? 'admin'}`);
  const cluster = new RadosCluster(id);
  try {
    if (o.configFile !== undefined) {
      const rc = rbd().rbdConfReadFile(id, o.configFile);
      if (rc < 0 && o.configFileRequired) {
        const which = o.configFile ?? (process.env.CEPH_CONF ? `CEPH_CONF=${process.env.CEPH_CONF}` : '/etc/ceph/ceph.conf');
        throw rbdError(-rc, `cannot read the Ceph config file (${which})`);
      }
    }
    for (const t of CONNECT_TIMEOUTS) {
      if (confGet(id, t.key) === t.cephDefault) rbd().rbdConfSet(id, t.key, t.value);
    }
    for (const [key, value] of Object.entries(o.config ?? {})) {
      const rc = rbd().rbdConfSet(id, key, value);
      if (rc < 0) {
        const why = rc === -Errno.ENOENT ? 'unknown option' : 'invalid value';
        throw rbdError(-rc, `config ${key}=${JSON.stringify(value)}: ${why}`);
      }
    }
    if (o.keyFile !== undefined) {
      const rc = rbd().rbdConfSet(id, 'keyring', o.keyFile);
      if (rc < 0) throw rbdError(-rc, `key_file ${o.keyFile}`);
    }
    const monHost = confGet(id, 'mon_host');
    const rc = await rbd().rbdConnect(id, o.cpus ?? []);
    if (rc < 0) {
      const user = `client.${o.userId ?? 'admin'}`;
      if (monHost === '') throw rbdError(-rc, 'cannot connect to the Ceph cluster: no monitors configured (mon_host)');
      if (rc === -Errno.ETIMEDOUT) {
        const t = confGet(id, 'client_mount_timeout');
        throw rbdError(-rc, `cannot reach the Ceph monitors at ${monHost} as ${user} (client_mount_timeout ${t} s)`);
      }
      throw rbdError(-rc, `cannot connect to the Ceph monitors at ${monHost} as ${user}`);
    }
    return cluster;
  } catch (e) {
    await cluster.close();
    throw e;
  }
}

/** The settings of a bdev_rbd_register_cluster call, as SPDK dumps them. */
export interface ClusterInfo {
  name: string;
  user_id?: string;
  config_param?: Record<string, string>;
  config_file?: string;
  key_file?: string;
  core_mask?: string;
}

/** SPDK's dump_single_cluster_entry, in its key order. */
function dumpCluster(info: ClusterInfo): Record<string, unknown> {
  const out: Record<string, unknown> = { cluster_name: info.name };
  if (info.user_id !== undefined) out.user_id = info.user_id;
  if (info.config_param !== undefined) out.config_param = { ...info.config_param };
  if (info.config_file !== undefined) out.config_file = info.config_file;
  if (info.key_file !== undefined) out.key_file = info.key_file;
  if (info.core_mask !== undefined) out.core_mask = info.core_mask;
  return out;
}

interface SharedCluster {
  info: ClusterInfo;
  cluster: RadosCluster;
  users: number;
}

/** Named shared connections (bdev_rbd_register_cluster); bdevs that use one hold a reference. */
export class RbdClusterRegistry {
  private readonly clusters = new Map<string, SharedCluster>();
  private readonly pending = new Set<string>();

  async register(info: ClusterInfo, cpus: number[] | undefined): Promise<void> {
    if (this.clusters.has(info.name) || this.pending.has(info.name)) {
      throw rbdErrno('EEXIST', `rbd cluster ${info.name} is already registered`);
    }
    this.pending.add(info.name);
    try {
      // SPDK: the default file search when no config_file is given (ignoring its failure), then
      // config_param, then key_file.
      const cluster = await connectCluster({
        userId: info.user_id,
        configFile: info.config_file ?? null,
        configFileRequired: info.config_file !== undefined,
        config: info.config_param,
        keyFile: info.key_file,
        cpus,
      });
      this.clusters.set(info.name, { info, cluster, users: 0 });
    } finally {
      this.pending.delete(info.name);
    }
  }

  async unregister(name: string): Promise<void> {
    const c = this.clusters.get(name);
    if (!c) throw rbdErrno('ENOENT', `rbd cluster ${name} is not registered`);
    if (c.users > 0) throw rbdErrno('EBUSY', `rbd cluster ${name} is used by ${c.users} bdev(s)`);
    this.clusters.delete(name);
    await c.cluster.close();
  }

  /** Takes a reference for a bdev; the returned function drops it. */
  acquire(name: string): { cluster: RadosCluster; info: ClusterInfo; release: () => void } {
    const c = this.clusters.get(name);
    if (!c) throw rbdErrno('ENOENT', `rbd cluster ${name} is not registered (bdev_rbd_register_cluster)`);
    c.users++;
    let released = false;
    return {
      cluster: c.cluster,
      info: c.info,
      release: () => {
        if (released) return;
        released = true;
        c.users--;
      },
    };
  }

  /** bdev_rbd_get_clusters_info: one entry, or all of them (ENOENT when there are none). */
  info(name?: string): Record<string, unknown> | Record<string, unknown>[] {
    if (this.clusters.size === 0) throw rbdErrno('ENOENT', 'no rbd cluster is registered');
    if (name === undefined) return [...this.clusters.values()].map((c) => dumpCluster(c.info));
    const c = this.clusters.get(name);
    if (!c) throw rbdErrno('ENOENT', `rbd cluster ${name} is not registered`);
    return dumpCluster(c.info);
  }
}

/** How long exit may wait for librbd to flush and close images before the process just ends. */
export const EXIT_CLOSE_TIMEOUT_MS = 10_000;

let exitHookInstalled = false;

/**
 * vhostd exits without destroying its bdevs; librbd must still flush its cache and release the
 * image's exclusive lock (or the next opener waits for the lock to time out), and librados threads
 * must be stopped before exit() runs static destructors. With a cluster that stopped answering
 * this would hang forever, so it is bounded. Installed with the first connection.
 */
export function closeAllAtExit(): void {
  if (exitHookInstalled || !isMainThread) return;
  exitHookInstalled = true;
  process.once('exit', (code) => {
    rbd().rbdCloseAllSync(EXIT_CLOSE_TIMEOUT_MS, code);
  });
}
