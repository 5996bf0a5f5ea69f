// vhost-user wire format (QEMU docs/interop/vhost-user.rst): message codes, feature bits, the
// 12-byte header and payload layouts. Decoders validate sizes and never trust the peer.
import type { MemoryRegionDesc } from '../memory/region.js';

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

export const reqName: Record<number, string> = Object.fromEntries(Object.entries(Req).map(([k, v]) => [v, k]));

/** Protocol feature bit numbers (VHOST_USER_PROTOCOL_F_*). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** vhost feature bit: the back-end logs the guest pages it writes (live migration). */
export const VHOST_F_LOG_ALL = 26;

/** SET_VRING_ADDR flag: log the used ring's writes at log_guest_addr. */
export const VHOST_VRING_F_LOG = 1;

/** Virtio feature bit that says the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

export const HEADER_SIZE = 12;
/** Largest payload accepted; every legitimate message is far smaller (rust-vmm uses the same cap). */
export const MAX_PAYLOAD = 4096;
export const FLAG_VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
export const MAX_FDS_PER_MESSAGE = 8;
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;
export const MEMORY_REGION_SIZE = 32;
export const MAX_CONFIG_SIZE = 256;

/** Requests that legitimately carry file descriptors, and how many. */
export function expectedFds(req: number, payload: DataView): { min: number; max: number } {
  switch (req) {
    case Req.SET_MEM_TABLE: {
      const n = payload.byteLength >= 4 ? payload.getUint32(0, true) : 0;
      return { min: n, max: n };
    }
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR: {
      const noFd = payload.byteLength >= 8 && (payload.getUint32(0, true) & VRING_NOFD_MASK) !== 0;
      return noFd ? { min: 0, max: 0 } : { min: 1, max: 1 };
    }
    case Req.ADD_MEM_REG:
    case Req.SET_INFLIGHT_FD:
    case Req.SET_BACKEND_REQ_FD:
    case Req.SET_LOG_FD:
      return { min: 1, max: 1 };
    case Req.SET_LOG_BASE:
    case Req.REM_MEM_REG:
      return { min: 0, max: 1 };
    default:
      return { min: 0, max: 0 };
  }
}

export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

export type { MemoryRegionDesc };

export class ProtocolError extends Error {}

/** Reads a u64 that must fit in a JS number exactly (addresses up to 2^53). */
export function getU64(view: DataView, off: number): number {
  const lo = view.getUint32(off, true);
  const hi = view.getUint32(off + 4, true);
  if (hi >= 0x200000) throw new ProtocolError(`64-bit value 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is beyond 2^53`);
  return hi * 0x100000000 + lo;
}

/** Reads a u64 feature mask as a bigint (bits above 53 are meaningful there). */
export function getU64Big(view: DataView, off: number): bigint {
  return view.getBigUint64(off, true);
}

export function expectSize(name: string, payload: DataView, size: number): void {
  if (payload.byteLength !== size) throw new ProtocolError(`${name}: payload is ${payload.byteLength} bytes, expected ${size}`);
}

export function decodeRegion(view: DataView, off: number): MemoryRegionDesc {
  return {
    guestPhysAddr: getU64(view, off),
    memorySize: getU64(view, off + 8),
    userspaceAddr: getU64(view, off + 16),
    mmapOffset: getU64(view, off + 24),
  };
}

export function decodeMemTable(payload: DataView, maxRegions: number): MemoryRegionDesc[] {
  if (payload.byteLength < 8) throw new ProtocolError('SET_MEM_TABLE: payload too short');
  const n = payload.getUint32(0, true);
  if (n === 0 || n > maxRegions) throw new ProtocolError(`SET_MEM_TABLE: ${n} regions (1..${maxRegions} allowed)`);
  if (payload.byteLength < 8 + n * MEMORY_REGION_SIZE) throw new ProtocolError(`SET_MEM_TABLE: payload too short for ${n} regions`);
  const regions: MemoryRegionDesc[] = [];
  for (let i = 0; i < n; i++) regions.push(decodeRegion(payload, 8 + i * MEMORY_REGION_SIZE));
  return regions;
}

export function decodeSingleRegion(name: string, payload: DataView): MemoryRegionDesc {
  expectSize(name, payload, 8 + MEMORY_REGION_SIZE);
  return decodeRegion(payload, 8);
}

export interface VringState {
  index: number;
  num: number;
}

export function decodeVringState(name: string, payload: DataView): VringState {
  expectSize(name, payload, 8);
  return { index: payload.getUint32(0, true), num: payload.getUint32(4, true) };
}

export interface VringAddr {
  index: number;
  flags: number;
  descUserAddr: number;
  usedUserAddr: number;
  availUserAddr: number;
  logGuestAddr: number;
}

export function decodeVringAddr(payload: DataView): VringAddr {
  expectSize('SET_VRING_ADDR', payload, 40);
  return {
    index: payload.getUint32(0, true),
    flags: payload.getUint32(4, true),
    descUserAddr: getU64(payload, 8),
    usedUserAddr: getU64(payload, 16),
    availUserAddr: getU64(payload, 24),
    logGuestAddr: Number(payload.getBigUint64(32, true) & 0x1fffffffffffffn),
  };
}

export interface LogBase {
  /** Size of the log in bytes. */
  mmapSize: number;
  /** Offset of the log in the fd. */
  mmapOffset: number;
}

export function decodeLogBase(name: string, payload: DataView): LogBase {
  expectSize(name, payload, 16);
  return { mmapSize: getU64(payload, 0), mmapOffset: getU64(payload, 8) };
}

export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}

export function decodeConfig(name: string, payload: DataView): ConfigAccess {
  if (payload.byteLength < 12) throw new ProtocolError(`${name}: payload too short`);
  const offset = payload.getUint32(0, true);
  const size = payload.getUint32(4, true);
  const flags = payload.getUint32(8, true);
  if (size > MAX_CONFIG_SIZE || offset > MAX_CONFIG_SIZE || offset + size > MAX_CONFIG_SIZE) {
    throw new ProtocolError(`${name}: offset ${offset} size ${size} beyond the ${MAX_CONFIG_SIZE}-byte config space`);
  }
  if (payload.byteLength !== 12 + size) throw new ProtocolError(`${name}: payload ${payload.byteLength} bytes for ${size} bytes of config`);
  return { offset, size, flags, data: new Uint8Array(payload.buffer, payload.byteOffset + 12, size) };
}

export function encodeU64(value: bigint | number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value), true);
  return out;
}

export function encodeHeader(request: number, flags: number, size: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return out;
}

export function encodeMessage(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  out.set(encodeHeader(request, flags, payload.byteLength), 0);
  out.set(payload, HEADER_SIZE);
  return out;
}
