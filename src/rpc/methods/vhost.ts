// vhost controller RPCs (SPDK v24.01 lib/vhost/vhost_rpc.c). SPDK answers every failure of these
// methods with code -32602 and strerror() of the cause ("No such device", "File exists", ...),
// except vhost_get_controllers which uses -32603; the service's -errno errors are re-coded to match.
import type { RpcContext } from '../../services/types.js';
import { RpcCode, VhostdError } from '../../util/errors.js';
import { decodeParams, optional, required } from '../decode.js';
import type { RpcMethodDef } from './types.js';

/** What SPDK sends when decoding fails: rc = -EINVAL reported as spdk_strerror(EINVAL). */
const DECODE_FAILED = 'Invalid argument';

/** The only virtio-blk transport there is (SPDK's VIRTIO_BLK_DEFAULT_TRANSPORT). */
const VHOST_USER_BLK_TRANSPORT = 'vhost_user_blk';

const createBlkSchema = {
  ctrlr: required('string'),
  dev_name: required('string'),
  cpumask: optional('string'),
  transport: optional('string'),
  readonly: optional('bool'),
  packed_ring: optional('bool'),
};
const createScsiSchema = { ctrlr: required('string'), cpumask: optional('string'), delay: optional('bool') };
const ctrlrSchema = { ctrlr: required('string') };
const addTargetSchema = { ctrlr: required('string'), scsi_target_num: required('int32'), bdev_name: required('string') };
const removeTargetSchema = { ctrlr: required('string'), scsi_target_num: required('uint32') };
/** SPDK 17.07's remove_vhost_scsi_dev named the target scsi_dev_num. */
const removeDevSchema = { ctrlr: required('string'), scsi_dev_num: required('uint32') };
const getControllersSchema = { name: optional('string') };
const coalescingSchema = {
  ctrlr: required('string'),
  delay_base_us: required('uint32'),
  iops_threshold: required('uint32'),
};

/** errno-style codes (-1..-4095) from the service, as opposed to JSON-RPC codes. */
function isErrnoCode(code: number): boolean {
  return code < 0 && code > -4096;
}

/** Runs `fn`, re-coding errno failures the way vhost_rpc.c reports them. */
async function withVhostErrorCode<T>(code: number, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof VhostdError && isErrnoCode(err.code)) {
      const recoded = new VhostdError(code, err.message);
      recoded.detail = err.detail;
      throw recoded;
    }
    throw err;
  }
}

export function vhostMethods(ctx: RpcContext): RpcMethodDef[] {
  const vhost = ctx.vhost;
  const decode = <S extends Parameters<typeof decodeParams>[1]>(params: unknown, schema: S) =>
    decodeParams(params, schema, { message: DECODE_FAILED });
  const invalidParamsOnFailure = <T>(fn: () => T | Promise<T>) => withVhostErrorCode(RpcCode.INVALID_PARAMS, fn);

  return [
    {
      name: 'vhost_create_blk_controller',
      aliases: ['construct_vhost_blk_controller'],
      handler: (params) =>
        invalidParamsOnFailure(async () => {
          const p = decode(params, createBlkSchema);
          if (p.transport !== undefined && p.transport !== VHOST_USER_BLK_TRANSPORT) {
            throw VhostdError.errno('EINVAL', `transport type '${p.transport}' unavailable`);
          }
          await vhost.createBlkController({
            ctrlr: p.ctrlr,
            devName: p.dev_name,
            cpumask: p.cpumask,
            readonly: p.readonly ?? false,
            packedRing: p.packed_ring ?? false,
          });
          return true;
        }),
    },
    {
      name: 'vhost_create_scsi_controller',
      aliases: ['construct_vhost_scsi_controller'],
      handler: (params) =>
        invalidParamsOnFailure(async () => {
          // `delay` (create without starting) is accepted; controllers here always start at once,
          // and vhost_start_scsi_controller is then a no-op.
          const p = decode(params, createScsiSchema);
          await vhost.createScsiController({ ctrlr: p.ctrlr, cpumask: p.cpumask });
          return true;
        }),
    },
    {
      name: 'vhost_start_scsi_controller',
      handler: (params) =>
        invalidParamsOnFailure(() => {
          const p = decode(params, ctrlrSchema);
          vhost.getControllers(p.ctrlr); // ENODEV for an unknown controller
          return true;
        }),
    },
    {
      name: 'vhost_scsi_controller_add_target',
      aliases: ['add_vhost_scsi_lun'],
      handler: (params) =>
        invalidParamsOnFailure(async () => {
          const p = decode(params, addTargetSchema);
          return vhost.scsiAddTarget(p.ctrlr, p.scsi_target_num, p.bdev_name);
        }),
    },
    {
      name: 'vhost_scsi_controller_remove_target',
      aliases: ['remove_vhost_scsi_target'],
      handler: (params) =>
        invalidParamsOnFailure(async () => {
          const p = decode(params, removeTargetSchema);
          await vhost.scsiRemoveTarget(p.ctrlr, p.scsi_target_num);
          return true;
        }),
    },
    {
      name: 'remove_vhost_scsi_dev',
      legacy: true,
      handler: (params) =>
        invalidParamsOnFailure(async () => {
          const p = decode(params, removeDevSchema);
          await vhost.scsiRemoveTarget(p.ctrlr, p.scsi_dev_num);
          return true;
        }),
    },
    {
      name: 'vhost_get_controllers',
      aliases: ['get_vhost_controllers'],
      handler: (params) =>
        withVhostErrorCode(RpcCode.INTERNAL_ERROR, () => {
          const p = decodeParams(params, getControllersSchema, { message: DECODE_FAILED, paramsOptional: true });
          return vhost.getControllers(p.name);
        }),
    },
    {
      name: 'vhost_delete_controller',
      aliases: ['remove_vhost_controller'],
      handler: (params) =>
        invalidParamsOnFailure(async () => {
          const p = decode(params, ctrlrSchema);
          await vhost.deleteController(p.ctrlr);
          return true;
        }),
    },
    {
      name: 'vhost_controller_set_coalescing',
      aliases: ['set_vhost_controller_coalescing'],
      handler: (params) =>
        invalidParamsOnFailure(() => {
          const p = decode(params, coalescingSchema);
          vhost.setCoalescing(p.ctrlr, p.delay_base_us, p.iops_threshold);
          return true;
        }),
    },
  ];
}
