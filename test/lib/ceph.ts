// A Ceph cluster for the RBD tests: a throwaway single-node one from test/ceph/ceph-cluster.sh
// (mon + memstore OSD on 127.0.0.1, up in a few seconds), or the external cluster CEPH_CONF names.
// Images are created and inspected with the rbd CLI.
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const script = join(root, 'test/ceph/ceph-cluster.sh');

/** The ceph packages are missing and cannot be installed here (ceph-cluster.sh exit status 77). */
export class CephUnavailable extends Error {}

export interface CephCluster {
  /** ceph.conf path: pass it as CEPH_CONF. */
  conf: string;
  /** A pool the tests may create images in. */
  pool: string;
  /** CEPH_CONF was given: someone else's cluster, only our images are removed at the end. */
  external: boolean;
  /** Runs the rbd CLI against the cluster; resolves with stdout. */
  rbd(args: string[], opts?: { timeoutMs?: number }): Promise<Buffer>;
  /** Creates pool/name; `size` as the rbd CLI takes it (e.g. "16M", "1026K"). Removed by stop(). */
  createImage(name: string, size: string): Promise<void>;
  /** The whole image, read with `rbd export`. */
  exportImage(name: string): Promise<Buffer>;
  /** Clients watching the image (an open librbd handle is one). */
  watchers(name: string): Promise<number>;
  stop(): Promise<void>;
}

async function run(cmd: string, args: string[], conf: string | undefined, timeoutMs = 60_000): Promise<Buffer> {
  const env = conf ? { ...process.env, CEPH_CONF: conf } : process.env;
  const { stdout } = await exec(cmd, args, { env, timeout: timeoutMs, encoding: 'buffer', maxBuffer: 1 << 30 });
  return stdout;
}

/** Starts a throwaway cluster (or attaches to CEPH_CONF's) and makes sure a test pool exists. */
export async function startCeph(): Promise<CephCluster> {
  const externalConf = process.env.CEPH_CONF;
  let conf: string;
  let dir: string | undefined;
  if (externalConf) {
    conf = externalConf;
  } else {
    try {
      conf = (await run('bash', [script, 'start'], undefined, 600_000)).toString().trim();
    } catch (e) {
      const err = e as { code?: number; stderr?: Buffer };
      const stderr = err.stderr?.toString().trim() ?? '';
      if (err.code === 77) throw new CephUnavailable(stderr || 'ceph packages are not installed');
      throw new Error(`test/ceph/ceph-cluster.sh start failed (${String(err.code)}): ${stderr}`);
    }
    dir = dirname(conf);
  }
  const pool = process.env.VHOSTD_TEST_RBD_POOL ?? 'vhostd-test';
  const images = new Set<string>();
  const cluster: CephCluster = {
    conf,
    pool,
    external: dir === undefined,
    rbd: (args, opts) => run('rbd', args, conf, opts?.timeoutMs),
    async createImage(name, size) {
      await run('rbd', ['create', '--size', size, `${pool}/${name}`], conf);
      images.add(name);
    },
    exportImage: (name) => run('rbd', ['export', '--no-progress', `${pool}/${name}`, '-'], conf),
    async watchers(name) {
      const out = JSON.parse((await run('rbd', ['status', '--format', 'json', `${pool}/${name}`], conf)).toString()) as {
        watchers?: unknown[];
      };
      return out.watchers?.length ?? 0;
    },
    async stop() {
      if (dir !== undefined) {
        await run('bash', [script, 'stop', dir], undefined);
        return;
      }
      for (const name of images) await run('rbd', ['rm', '--no-progress', `${pool}/${name}`], conf).catch(() => undefined);
    },
  };
  try {
    const pools = (await run('ceph', ['osd', 'pool', 'ls'], conf)).toString().split('\n');
    if (!pools.includes(pool)) {
      await run('ceph', ['osd', 'pool', 'create', pool], conf);
      await run('rbd', ['pool', 'init', pool], conf);
    }
  } catch (e) {
    await cluster.stop().catch(() => undefined);
    throw e;
  }
  return cluster;
}
