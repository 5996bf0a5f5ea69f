// The Ceph RBD module (SPDK v24.01 module/bdev/rbd/bdev_rbd{,_rpc}.c, plus read_only from later
// SPDK): create (connecting and opening run off the control thread; a failed create leaves
// nothing behind: no rados handle, no pool context, no image, no name), delete, the registered
// clusters and the Ceph<n> counter (module state, one per vhostd), and its RPC methods:
// bdev_rbd_create, bdev_rbd_delete, bdev_rbd_register_cluster, bdev_rbd_unregister_cluster,
// bdev_rbd_get_clusters_info.
import type { Logger } from 'pino';
import type { BdevModule, BdevModuleContext, BdevRpcMethod } from '../../module.js';
import { DECODE_FAILED } from '../../module.js';
import type { BdevRegistry } from '../../registry.js';
import { parseCpumask } from '../../../util/cpumask.js';
import { decodeParams, optional, required } from '../../../util/decode.js';
import { invalidParams } from '../../../util/errors.js';
import { type ClusterInfo, type RadosCluster, RbdClusterRegistry, connectCluster } from './cluster.js';
import { rbdErrno } from './errors.js';
import { RBD_BLOCK_SIZES, RbdBdev, RbdChannel, RbdImage, type RbdSettings, checkGeometry } from './rbd.js';

/** Module state of one vhostd (registry). */
interface RbdState {
  clusters: RbdClusterRegistry;
  /** SPDK's bdev_rbd_count: every created rbd bdev counts, named or not; auto-names are Ceph<count>. */
  count: number;
}

const state = (bdevs: BdevRegistry): RbdState =>
  bdevs.moduleState('rbd', () => ({ clusters: new RbdClusterRegistry(), count: 0 }));

/** The registered clusters (bdev_rbd_register_cluster) of this vhostd. */
export function rbdClusters(bdevs: BdevRegistry): RbdClusterRegistry {
  return state(bdevs).clusters;
}

export interface RbdCreateParams {
  /** Without a name: Ceph<n>. */
  name?: string;
  uuid?: string;
  poolName: string;
  rbdName: string;
  blockSize: number;
  userId?: string;
  /** Ceph options replacing the config file (SPDK's `config` map). */
  config?: Record<string, string>;
  clusterName?: string;
  readOnly?: boolean;
}

/** Connects, opens the image and registers the bdev; returns its name. */
export async function createRbd(bdevs: BdevRegistry, p: RbdCreateParams, log: Logger): Promise<string> {
  const st = state(bdevs);
  if (!RBD_BLOCK_SIZES.includes(p.blockSize)) {
    throw rbdErrno('EINVAL', `block_size ${p.blockSize} is not one of ${RBD_BLOCK_SIZES.join(', ')}`);
  }
  // The name is held while connecting, so a concurrent create cannot take it.
  const unreserve = bdevs.reserveName(p.name, p.uuid, rbdErrno);
  const settings: RbdSettings = {
    poolName: p.poolName,
    rbdName: p.rbdName,
    userId: p.userId,
    config: p.config,
    clusterName: p.clusterName,
    readOnly: p.readOnly ?? false,
  };
  let cluster: RadosCluster | undefined;
  let releaseCluster: () => Promise<void> = async () => undefined;
  let clusterInfo: ClusterInfo | undefined;
  let image: RbdImage | undefined;
  try {
    if (p.clusterName !== undefined) {
      // SPDK: a registered cluster's own user and config apply; user_id/config are not used.
      const shared = st.clusters.acquire(p.clusterName);
      cluster = shared.cluster;
      clusterInfo = shared.info;
      releaseCluster = async () => shared.release();
    } else {
      // SPDK: `config` replaces the config file; without it librados reads $CEPH_CONF or
      // /etc/ceph/ceph.conf (and failing to is an error).
      const own = await connectCluster({
        userId: p.userId,
        configFile: p.config === undefined ? null : undefined,
        configFileRequired: true,
        config: p.config,
      });
      cluster = own;
      releaseCluster = () => own.close();
    }
    image = await RbdImage.open(cluster, p.poolName, p.rbdName, settings.readOnly);
    const numBlocks = checkGeometry(settings, p.blockSize, image.sizeBytes);

    unreserve();
    // Another module may have taken the uuid while we were connecting.
    bdevs.checkNameFree(p.name, p.uuid, rbdErrno);
    let name = p.name;
    if (name === undefined) {
      while (bdevs.isNameTaken(`Ceph${st.count}`)) st.count++;
      name = `Ceph${st.count}`;
    }
    const bdev = new RbdBdev(name, p.blockSize, numBlocks, p.uuid ?? RbdBdev.newUuid(), settings, image, releaseCluster, clusterInfo);
    bdevs.add(bdev);
    st.count++;
    log.info({ bdev: name, pool: p.poolName, image: p.rbdName, blocks: numBlocks, blockSize: p.blockSize }, 'rbd bdev created');
    return name;
  } catch (e) {
    unreserve();
    await image?.close();
    await releaseCluster();
    throw e;
  }
}

export function deleteRbd(bdevs: BdevRegistry, name: string): Promise<void> {
  return bdevs.delete(name, 'rbd');
}

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

function rpcMethods(ctx: BdevModuleContext): BdevRpcMethod[] {
  const clusters = rbdClusters(ctx.bdevs);
  return [
    {
      name: 'bdev_rbd_create',
      aliases: ['construct_rbd_bdev'],
      handler(params) {
        const { rest, map: config } = takeConfigMap(params, 'config');
        const p = decodeParams(rest, createSchema, { message: DECODE_FAILED });
        return createRbd(
          ctx.bdevs,
          {
            name: p.name,
            uuid: p.uuid,
            poolName: p.pool_name,
            rbdName: p.rbd_name,
            blockSize: p.block_size,
            userId: p.user_id,
            config,
            clusterName: p.cluster_name,
            readOnly: p.read_only,
          },
          ctx.logger,
        );
      },
    },
    {
      name: 'bdev_rbd_delete',
      aliases: ['delete_rbd_bdev'],
      async handler(params) {
        const p = decodeParams(params, nameSchema, { message: DECODE_FAILED });
        await deleteRbd(ctx.bdevs, p.name);
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

export const rbdModule: BdevModule = {
  name: 'rbd',
  bdevModules: ['rbd'],
  channels: { rbd: (spec) => new RbdChannel(spec) },
  rpcMethods,
};
