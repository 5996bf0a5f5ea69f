// Ceph RBD RPCs (SPDK v24.01 module/bdev/rbd/bdev_rbd_rpc.c, plus read_only from later SPDK):
// bdev_rbd_create, bdev_rbd_delete, bdev_rbd_register_cluster, bdev_rbd_unregister_cluster,
// bdev_rbd_get_clusters_info. Connecting and opening run off the control thread; a failed create
// leaves nothing behind (no rados handle, no pool context, no image, no name).
import { BdevRegistry } from '../../bdev/registry.js';
import { type ClusterInfo, type RadosCluster, RbdClusterRegistry, connectCluster } from '../../bdev/modules/rbd/cluster.js';
import { rbdErrno } from '../../bdev/modules/rbd/errors.js';
import { RBD_BLOCK_SIZES, RbdBdev, RbdImage, type RbdSettings, checkGeometry } from '../../bdev/modules/rbd/rbd.js';
import { parseCpumask } from '../../reactor/reactor-pool.js';
import type { RpcContext } from '../../services/types.js';
import { invalidParams } from '../../util/errors.js';
import { decodeParams, optional, required } from '../decode.js';
import type { RpcMethodDef } from './types.js';

const DECODE_FAILED = 'spdk_json_decode_object failed';

const createSchema = {
  name: optional('string'),
  user_id: optional('string'),
  pool_name: required('string'),
  rbd_name: required('string'),
  block_size: required('uint32'),
  cluster_name: optional('string'),
  uuid: optional('uuid'),
  read_only: optional('bool'),
};

const registerClusterSchema = {
  name: required('string'),
  user_id: optional('string'),
  config_file: optional('string'),
  key_file: optional('string'),
  core_mask: optional('string'),
};

const nameSchema = { name: required('string') };
const optionalNameSchema = { name: optional('string') };

function decodeFailed(detail: string) {
  const err = invalidParams(DECODE_FAILED);
  err.detail = detail;
  return err;
}

/**
 * Splits the JSON object `key` (a map of Ceph option → value, SPDK's bdev_rbd_decode_config) off
 * `params`, which the generic decoder then handles. Strings as SPDK; numbers and booleans are
 * accepted too and kept as their JSON text. null counts as absent.
 */
function takeConfigMap(params: unknown, key: string): { rest: unknown; map?: Record<string, string> } {
  if (params === null || typeof params !== 'object' || Array.isArray(params) || !Object.hasOwn(params, key)) {
    return { rest: params };
  }
  const { [key]: raw, ...rest } = params as Record<string, unknown>;
  if (raw === null || raw === undefined) return { rest };
  if (typeof raw !== 'object' || Array.isArray(raw)) throw decodeFailed(`${key}: expected an object`);
  const map: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v === 'string') map[k] = v;
    else if (typeof v === 'number' || typeof v === 'boolean') map[k] = String(v);
    else throw decodeFailed(`${key}.${k}: expected a string`);
    if (k === '' || k.includes('\0') || map[k].includes('\0')) throw decodeFailed(`${key}.${k}: invalid`);
  }
  return { rest, map };
}

/** Module state of one vhostd: the method table is rebuilt per in-process call, this is not. */
interface RbdState {
  clusters: RbdClusterRegistry;
  /** Names of creates still connecting, so a concurrent create cannot take them. */
  pendingNames: Set<string>;
  /** SPDK's bdev_rbd_count: every created rbd bdev counts, named or not; auto-names are Ceph<count>. */
  count: number;
}

const states = new WeakMap<RpcContext['bdevs'], RbdState>();

export function rbdMethods(ctx: RpcContext): RpcMethodDef[] {
  let state = states.get(ctx.bdevs);
  if (!state) {
    state = { clusters: new RbdClusterRegistry(), pendingNames: new Set(), count: 0 };
    states.set(ctx.bdevs, state);
  }
  const st = state;
  const { clusters, pendingNames } = st;
  const taken = (name: string) => ctx.bdevs.has(name) || pendingNames.has(name);

  async function create(params: unknown): Promise<string> {
    const { rest, map: config } = takeConfigMap(params, 'config');
    const p = decodeParams(rest, createSchema, { message: DECODE_FAILED });
    if (!RBD_BLOCK_SIZES.includes(p.block_size)) {
      throw rbdErrno('EINVAL', `block_size ${p.block_size} is not one of ${RBD_BLOCK_SIZES.join(', ')}`);
    }
    if (p.name === '') throw rbdErrno('EINVAL', 'bdev name must not be empty');
    if (p.name !== undefined) BdevRegistry.checkName(p.name);
    if (p.name !== undefined && taken(p.name)) throw rbdErrno('EEXIST', `bdev ${p.name} already exists`);
    if (p.uuid !== undefined && ctx.bdevs.list().some((b) => b.uuid === p.uuid)) {
      throw rbdErrno('EEXIST', `a bdev with uuid ${p.uuid} already exists`);
    }
    const settings: RbdSettings = {
      poolName: p.pool_name,
      rbdName: p.rbd_name,
      userId: p.user_id,
      config,
      clusterName: p.cluster_name,
      readOnly: p.read_only ?? false,
    };

    if (p.name !== undefined) pendingNames.add(p.name);
    let cluster: RadosCluster | undefined;
    let releaseCluster: () => Promise<void> = async () => undefined;
    let clusterInfo: ClusterInfo | undefined;
    let image: RbdImage | undefined;
    try {
      if (p.cluster_name !== undefined) {
        // SPDK: a registered cluster's own user and config apply; user_id/config are not used.
        const shared = clusters.acquire(p.cluster_name);
        cluster = shared.cluster;
        clusterInfo = shared.info;
        releaseCluster = async () => shared.release();
      } else {
        // SPDK: `config` replaces the config file; without it librados reads $CEPH_CONF or
        // /etc/ceph/ceph.conf (and failing to is an error).
        const own = await connectCluster({
          userId: p.user_id,
          configFile: config === undefined ? null : undefined,
          configFileRequired: true,
          config,
        });
        cluster = own;
        releaseCluster = () => own.close();
      }
      image = await RbdImage.open(cluster, p.pool_name, p.rbd_name, settings.readOnly);
      const numBlocks = checkGeometry(settings, p.block_size, image.sizeBytes);

      if (p.name !== undefined) pendingNames.delete(p.name);
      // Another module may have taken the name or uuid while we were connecting.
      if (p.name !== undefined && ctx.bdevs.has(p.name)) throw rbdErrno('EEXIST', `bdev ${p.name} already exists`);
      if (p.uuid !== undefined && ctx.bdevs.list().some((b) => b.uuid === p.uuid)) {
        throw rbdErrno('EEXIST', `a bdev with uuid ${p.uuid} already exists`);
      }
      let name = p.name;
      if (name === undefined) {
        while (taken(`Ceph${st.count}`)) st.count++;
        name = `Ceph${st.count}`;
      }
      const bdev = new RbdBdev(name, p.block_size, numBlocks, p.uuid ?? RbdBdev.newUuid(), settings, image, releaseCluster, clusterInfo);
      ctx.bdevs.add(bdev);
      st.count++;
      ctx.logger.info({ bdev: name, pool: p.pool_name, image: p.rbd_name, blocks: numBlocks, blockSize: p.block_size }, 'rbd bdev created');
      return name;
    } catch (e) {
      if (p.name !== undefined) pendingNames.delete(p.name);
      await image?.close();
      await releaseCluster();
      throw e;
    }
  }

  return [
    {
      name: 'bdev_rbd_create',
      aliases: ['construct_rbd_bdev'],
      handler: (params) => create(params),
    },
    {
      name: 'bdev_rbd_delete',
      aliases: ['delete_rbd_bdev'],
      async handler(params) {
        const p = decodeParams(params, nameSchema, { message: DECODE_FAILED });
        await ctx.bdevs.delete(p.name, 'rbd');
        return true;
      },
    },
    {
      name: 'bdev_rbd_register_cluster',
      async handler(params) {
        const { rest, map: configParam } = takeConfigMap(params, 'config_param');
        const p = decodeParams(rest, registerClusterSchema, { message: DECODE_FAILED });
        if (p.name === '') throw rbdErrno('EINVAL', 'cluster name must not be empty');
        let cpus: number[] | undefined;
        if (p.core_mask !== undefined) {
          try {
            cpus = parseCpumask(p.core_mask);
          } catch (e) {
            throw rbdErrno('EINVAL', `core_mask: ${(e as Error).message}`);
          }
        }
        const info: ClusterInfo = { name: p.name };
        if (p.user_id !== undefined) info.user_id = p.user_id;
        if (configParam !== undefined) info.config_param = configParam;
        if (p.config_file !== undefined) info.config_file = p.config_file;
        if (p.key_file !== undefined) info.key_file = p.key_file;
        if (p.core_mask !== undefined) info.core_mask = p.core_mask;
        await clusters.register(info, cpus);
        return p.name;
      },
    },
    {
      name: 'bdev_rbd_unregister_cluster',
      async handler(params) {
        const p = decodeParams(params, nameSchema, { message: DECODE_FAILED });
        await clusters.unregister(p.name);
        return true;
      },
    },
    {
      name: 'bdev_rbd_get_clusters_info',
      handler(params) {
        const p = decodeParams(params, optionalNameSchema, { message: DECODE_FAILED, paramsOptional: true });
        return clusters.info(p.name);
      },
    },
  ];
}
