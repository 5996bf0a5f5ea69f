// Vital product data pages (INQUIRY with EVPD=1): the page set and contents SPDK's
// bdev_scsi_inquiry reports for a bdev-backed logical unit.
import { MAX_TRANSFER_BYTES, MAX_UNMAP_BLOCK_DESCRIPTORS, MAX_UNMAP_LBA_COUNT, PERIPHERAL_DEVICE_TYPE_DISK, PROTOCOL_ID_SAS, VpdPage, DISK_VENDOR } from './constants.js';
import { putBe16, putBe32, putBe64 } from './cdb.js';
import { putPaddedAscii } from './inquiry.js';
import type { ScsiLunInfo } from './lun-info.js';

/** SPDK's MAX_SERIAL_STRING. */
const MAX_SERIAL = 32;
/** Longest SCSI name string payload kept (one byte below the 255 limit, before NUL padding). */
const MAX_SCSI_NAME = 251;

/** Identification data of a logical unit that does not change per command (bytes precomputed). */
export interface VpdIdentity {
  /** NAA IEEE Extended designator (8 bytes). */
  naa: Uint8Array;
  /** bdev name, UTF-8. */
  name: Uint8Array;
  /** SCSI target device name ("Target N"), UTF-8, NUL padded to a multiple of 4. */
  deviceName: Uint8Array;
  /** Target port name ("vhost"), UTF-8, NUL padded to a multiple of 4. */
  portName: Uint8Array;
  relativePortId: number;
  /** SPDK's dev->id, reported in the logical unit group designator. */
  deviceId: number;
  protocolId: number;
}

export interface VpdIdentityParams {
  deviceName: string;
  deviceId: number;
  portName: string;
  relativePortId: number;
  protocolId?: number;
}

/** NUL-terminated and NUL-padded to a multiple of 4, as SCSI name strings must be. */
function scsiNameString(text: string): Uint8Array {
  let raw = Buffer.from(text, 'utf8');
  if (raw.length > MAX_SCSI_NAME) raw = raw.subarray(0, MAX_SCSI_NAME);
  const padded = new Uint8Array((raw.length + 4) & ~3);
  padded.set(raw);
  return padded;
}

/**
 * SPDK's bdev_scsi_set_naa_ieee_extended: a 64-bit hash of the bdev name (seed 131, C `char`
 * arithmetic, signed on x86) folded into an NAA 2 identifier with Intel's IEEE company id.
 */
export function naaIeeeExtended(name: string): Uint8Array {
  const mask = (1n << 64n) - 1n;
  let v = 0n;
  for (const byte of Buffer.from(name, 'utf8')) {
    const c = byte >= 0x80 ? byte - 0x100 : byte;
    v = (v * 131n + BigInt(c)) & mask;
  }
  const idA = (v & 0x0000000fff000000n) << 24n;
  v &= 0x0000000000ffffffn;
  v |= 0x2000000347000000n;
  v |= idA;
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v & mask);
  return out;
}

export function makeVpdIdentity(info: Pick<ScsiLunInfo, 'name'>, p: VpdIdentityParams): VpdIdentity {
  return {
    naa: naaIeeeExtended(info.name),
    name: Buffer.from(info.name, 'utf8'),
    deviceName: scsiNameString(p.deviceName),
    portName: scsiNameString(p.portName),
    relativePortId: p.relativePortId,
    deviceId: p.deviceId,
    protocolId: p.protocolId ?? PROTOCOL_ID_SAS,
  };
}

/** Upper bound of any page's length (scratch buffers must hold this many bytes). */
export const VPD_MAX_LENGTH = 1024;

// designator fields (SPC-4 7.8.6)
const CODE_SET_BINARY = 1;
const CODE_SET_ASCII = 2;
const CODE_SET_UTF8 = 3;
const ASSOC_LOGICAL_UNIT = 0;
const ASSOC_TARGET_PORT = 1;
const ASSOC_TARGET_DEVICE = 2;
const TYPE_T10_VENDOR_ID = 1;
const TYPE_NAA = 3;
const TYPE_RELATIVE_TARGET_PORT = 4;
const TYPE_TARGET_PORT_GROUP = 5;
const TYPE_LOGICAL_UNIT_GROUP = 6;
const TYPE_SCSI_NAME = 8;
const PIV = 0x80;

function designatorHeader(out: Uint8Array, off: number, protocolId: number, codeSet: number, assoc: number, type: number, len: number): number {
  out[off] = (protocolId << 4) | codeSet;
  out[off + 1] = PIV | (assoc << 4) | type;
  out[off + 2] = 0;
  out[off + 3] = len;
  return off + 4;
}

function putBytes(out: Uint8Array, off: number, src: Uint8Array, len: number, pad: number): void {
  const n = Math.min(len, src.length);
  out.set(src.subarray(0, n), off);
  out.fill(pad, off + n, off + len);
}

function deviceIdentification(info: ScsiLunInfo, id: VpdIdentity, out: Uint8Array): number {
  const proto = id.protocolId;
  let p = 4;
  // NAA IEEE Extended, logical unit
  p = designatorHeader(out, p, proto, CODE_SET_BINARY, ASSOC_LOGICAL_UNIT, TYPE_NAA, 8);
  out.set(id.naa, p);
  p += 8;
  // T10 vendor id: vendor(8) product(16) bdev name(32), space padded
  p = designatorHeader(out, p, proto, CODE_SET_ASCII, ASSOC_LOGICAL_UNIT, TYPE_T10_VENDOR_ID, 8 + 16 + MAX_SERIAL);
  putPaddedAscii(out, p, DISK_VENDOR, 8);
  putPaddedAscii(out, p + 8, info.productName, 16);
  putBytes(out, p + 24, id.name, MAX_SERIAL, 0x20);
  p += 8 + 16 + MAX_SERIAL;
  // SCSI name of the target device
  p = designatorHeader(out, p, proto, CODE_SET_UTF8, ASSOC_TARGET_DEVICE, TYPE_SCSI_NAME, id.deviceName.length);
  out.set(id.deviceName, p);
  p += id.deviceName.length;
  // SCSI name of the target port
  p = designatorHeader(out, p, proto, CODE_SET_UTF8, ASSOC_TARGET_PORT, TYPE_SCSI_NAME, id.portName.length);
  out.set(id.portName, p);
  p += id.portName.length;
  // relative target port
  p = designatorHeader(out, p, proto, CODE_SET_BINARY, ASSOC_TARGET_PORT, TYPE_RELATIVE_TARGET_PORT, 4);
  putBe16(out, p, 0);
  putBe16(out, p + 2, id.relativePortId);
  p += 4;
  // target port group 0
  p = designatorHeader(out, p, proto, CODE_SET_BINARY, ASSOC_TARGET_PORT, TYPE_TARGET_PORT_GROUP, 4);
  putBe32(out, p, 0);
  p += 4;
  // logical unit group = device id
  p = designatorHeader(out, p, proto, CODE_SET_BINARY, ASSOC_LOGICAL_UNIT, TYPE_LOGICAL_UNIT_GROUP, 4);
  putBe16(out, p, 0);
  putBe16(out, p + 2, id.deviceId);
  p += 4;
  return p;
}

function scsiPorts(id: VpdIdentity, out: Uint8Array): number {
  let p = 4;
  putBe16(out, p, 0);
  putBe16(out, p + 2, id.relativePortId);
  putBe16(out, p + 4, 0);
  putBe16(out, p + 6, 0); // INITIATOR PORT TRANSPORTID LENGTH
  putBe16(out, p + 8, 0);
  const tpdLen = 4 + id.portName.length;
  putBe16(out, p + 10, tpdLen); // TARGET PORT DESCRIPTORS LENGTH
  p += 12;
  p = designatorHeader(out, p, id.protocolId, CODE_SET_UTF8, ASSOC_TARGET_PORT, TYPE_SCSI_NAME, id.portName.length);
  out.set(id.portName, p);
  return p + id.portName.length;
}

/**
 * Builds VPD page `page` into out (at least VPD_MAX_LENGTH bytes); returns its length, or -1 when
 * the page is not supported (the caller answers INVALID FIELD IN CDB).
 */
export function buildVpdPage(page: number, info: ScsiLunInfo, id: VpdIdentity, out: Uint8Array): number {
  out.fill(0, 0, 64);
  out[0] = PERIPHERAL_DEVICE_TYPE_DISK;
  out[1] = page;
  let end: number;
  switch (page) {
    case VpdPage.SUPPORTED_PAGES: {
      const pages: number[] = [
        VpdPage.SUPPORTED_PAGES,
        VpdPage.UNIT_SERIAL_NUMBER,
        VpdPage.DEVICE_IDENTIFICATION,
        VpdPage.MANAGEMENT_NETWORK_ADDRESSES,
        VpdPage.EXTENDED_INQUIRY_DATA,
        VpdPage.MODE_PAGE_POLICY,
        VpdPage.SCSI_PORTS,
        VpdPage.BLOCK_LIMITS,
        VpdPage.BLOCK_DEVICE_CHARACTERISTICS,
      ];
      if (info.supportsUnmap) pages.push(VpdPage.LOGICAL_BLOCK_PROVISIONING);
      out.set(pages, 4);
      end = 4 + pages.length;
      break;
    }
    case VpdPage.UNIT_SERIAL_NUMBER: {
      // bdev name, at most 31 bytes, NUL terminated (the NUL counts in the page length)
      const n = Math.min(id.name.length, MAX_SERIAL - 1);
      out.set(id.name.subarray(0, n), 4);
      out[4 + n] = 0;
      end = 4 + n + 1;
      break;
    }
    case VpdPage.DEVICE_IDENTIFICATION:
      end = deviceIdentification(info, id, out);
      break;
    case VpdPage.MANAGEMENT_NETWORK_ADDRESSES:
      end = 4;
      break;
    case VpdPage.EXTENDED_INQUIRY_DATA:
      out[5] = 0x05; // HEADSUP | SIMPSUP
      end = 64;
      break;
    case VpdPage.MODE_PAGE_POLICY:
      out[4] = 0x3f; // all pages
      out[5] = 0xff; // all subpages
      out[6] = 0; // shared policy
      out[7] = 0;
      end = 8;
      break;
    case VpdPage.SCSI_PORTS:
      end = scsiPorts(id, out);
      break;
    case VpdPage.BLOCK_LIMITS: {
      const bs = info.blockSize;
      const maxBlocks = Math.floor(MAX_TRANSFER_BYTES / bs);
      out[4] = 0x01; // WSNZ: a zero NUMBER OF LOGICAL BLOCKS in WRITE SAME is refused
      out[5] = 0; // MAXIMUM COMPARE AND WRITE LENGTH: not supported
      putBe16(out, 6, bs < 4096 ? Math.floor(4096 / bs) : 1); // OPTIMAL TRANSFER LENGTH GRANULARITY
      putBe32(out, 8, maxBlocks); // MAXIMUM TRANSFER LENGTH
      putBe32(out, 12, maxBlocks); // OPTIMAL TRANSFER LENGTH
      if (info.supportsUnmap) {
        putBe32(out, 20, MAX_UNMAP_LBA_COUNT);
        putBe32(out, 24, MAX_UNMAP_BLOCK_DESCRIPTORS);
      }
      putBe64(out, 36, maxBlocks); // MAXIMUM WRITE SAME LENGTH
      end = 64;
      break;
    }
    case VpdPage.BLOCK_DEVICE_CHARACTERISTICS:
      putBe16(out, 4, 1); // MEDIUM ROTATION RATE: non-rotating
      out[7] = 0x02; // NOMINAL FORM FACTOR: 3.5 inch (SPDK's DEFAULT_DISK_FORM_FACTOR)
      end = 64;
      break;
    case VpdPage.LOGICAL_BLOCK_PROVISIONING:
      if (!info.supportsUnmap) return -1;
      out[4] = 0; // THRESHOLD EXPONENT
      out[5] = 0x80 | 0x40 | 0x20; // LBPU | LBPWS | LBPWS10
      out[6] = 0x02; // PROVISIONING TYPE: thin
      out[7] = 0;
      end = 8;
      break;
    default:
      return -1;
  }
  putBe16(out, 2, end - 4); // PAGE LENGTH
  return end;
}
