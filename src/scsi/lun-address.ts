// The 8-byte LUN field of virtio-scsi requests: byte 0 is 1, byte 1 the target, bytes 2-3 the LUN
// in SAM single-level format (Linux sets 40h, flat addressing, in byte 2; SPDK masks the address
// method off with 3FFFh), bytes 4-7 unused. Same decoding as SPDK's vhost_scsi_task_init_target.
import { MAX_TARGETS } from './constants.js';

/** Target number addressed by the LUN field, or -1 when byte 0 is not 1 or the target is >= 8. */
export function lunAddressTarget(addr: Uint8Array, off = 0): number {
  if (addr[off] !== 1) return -1;
  const target = addr[off + 1];
  return target < MAX_TARGETS ? target : -1;
}

/** LUN number (0..16383) addressed by the LUN field. */
export function lunAddressLun(addr: Uint8Array, off = 0): number {
  return ((addr[off + 2] << 8) | addr[off + 3]) & 0x3fff;
}

/** Writes a LUN field the way SPDK's eventq does (flat addressing bit set for LUN >= 256). */
export function encodeLunAddress(target: number, lun: number, out: Uint8Array, off = 0): void {
  out.fill(0, off, off + 8);
  out[off] = 1;
  out[off + 1] = target;
  out[off + 2] = (lun >>> 8) | (lun >= 256 ? 0x40 : 0);
  out[off + 3] = lun & 0xff;
}
