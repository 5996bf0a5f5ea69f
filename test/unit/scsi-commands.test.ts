// Non-I/O SCSI commands of ScsiLun against real malloc / null bdevs: INQUIRY and VPD pages,
// REPORT LUNS, READ CAPACITY, MODE SENSE / MODE SELECT, REQUEST SENSE, TEST UNIT READY,
// START STOP UNIT, and CDB-level errors (opcode, CDB length, NACA, allocation length).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MallocBdev, MallocChannel } from '../../src/bdev/modules/malloc/malloc.js';
import { NullBdev, NullChannel } from '../../src/bdev/modules/null/null.js';
import type { Bdev, BdevChannel } from '../../src/bdev/bdev.js';
import {
  Asc,
  DataDirection,
  decodeFixedSense,
  naaIeeeExtended,
  ScsiLun,
  type ScsiLunOptions,
  scsiLunInfoFromBdev,
  ScsiStatus,
  ScsiTask,
  ScsiTargetSet,
  SenseKey,
} from '../../src/scsi/index.js';

interface LunSetup {
  bdev?: Bdev;
  channel?: BdevChannel;
  readonly?: boolean;
  writeCache?: boolean;
  opts?: ScsiLunOptions;
}

function mallocLun(s: LunSetup = {}): ScsiLun {
  const bdev = s.bdev ?? new MallocBdev('Malloc0', 512, 64 * 512);
  const channel = s.channel ?? (bdev instanceof NullBdev ? new NullChannel() : new MallocChannel(bdev.channelSpec()));
  return new ScsiLun(scsiLunInfoFromBdev(bdev, { readonly: s.readonly, writeCache: s.writeCache }), channel, s.opts);
}

interface Run {
  task: ScsiTask;
  data: Uint8Array;
  calls: number;
}

/** Executes a CDB with a data-in buffer of inLen bytes (split in segments of `seg` bytes). */
function run(lun: ScsiLun, cdb: number[], inLen = 4096, opts: { out?: Uint8Array; seg?: number; cdbLength?: number } = {}): Run {
  const task = new ScsiTask();
  let calls = 0;
  task.onComplete = () => calls++;
  task.setCdb(cdb);
  if (opts.cdbLength !== undefined) task.cdbLength = opts.cdbLength;
  const data = new Uint8Array(inLen).fill(0xee);
  const seg = opts.seg ?? inLen;
  for (let off = 0; off < inLen; off += seg) task.dataIn.push(data, off, Math.min(seg, inLen - off));
  if (opts.out) task.dataOut.push(opts.out, 0, opts.out.length);
  lun.execute(task);
  assert.equal(calls, 1, 'completed exactly once, synchronously');
  return { task, data, calls };
}

function good(r: Run): Uint8Array {
  assert.equal(r.task.status, ScsiStatus.GOOD, `expected GOOD, sense ${Buffer.from(r.task.sense.subarray(0, r.task.senseLength)).toString('hex')}`);
  assert.equal(r.task.senseLength, 0);
  return r.data.subarray(0, r.task.dataTransferred);
}

function checkSense(r: Run, key: number, asc: number, ascq = 0): void {
  assert.equal(r.task.status, ScsiStatus.CHECK_CONDITION);
  assert.equal(r.task.senseLength, 18);
  const s = decodeFixedSense(r.task.sense, r.task.senseLength);
  assert.ok(s, 'fixed-format sense');
  assert.equal(r.task.sense[0], 0x70);
  assert.equal(s.additionalLength, 10);
  assert.deepEqual([s.senseKey, s.asc, s.ascq], [key, asc, ascq]);
  assert.equal(r.task.dataTransferred, 0);
}

const ascii = (b: Uint8Array) => Buffer.from(b).toString('latin1');
const be16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const be32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
const inquiry = (evpd: number, page: number, alloc: number, control = 0) => [0x12, evpd, page, alloc >> 8, alloc & 0xff, control];

describe('INQUIRY standard data', () => {
  it('reports a connected disk, INTEL / product name / 0001, 96 bytes', () => {
    const r = run(mallocLun(), inquiry(0, 0, 255), 255);
    const d = good(r);
    assert.equal(d.length, 96);
    assert.equal(d[0], 0x00, 'qualifier 0, type disk');
    assert.equal(d[2], 0x05, 'SPC-3');
    assert.equal(d[3], 0x12, 'HISUP, format 2');
    assert.equal(d[4], 91, 'additional length');
    assert.equal(d[6], 0x10, 'MULTIP');
    assert.equal(d[7], 0x02, 'CMDQUE');
    assert.equal(ascii(d.subarray(8, 16)), 'INTEL   ');
    assert.equal(ascii(d.subarray(16, 32)), 'Malloc disk     ');
    assert.equal(ascii(d.subarray(32, 36)), '0001');
    assert.deepEqual([be16(d, 58), be16(d, 60), be16(d, 62), be16(d, 64)], [0x0960, 0x0300, 0x0320, 0x0040]);
    assert.equal(r.task.direction, DataDirection.FROM_DEV);
    assert.equal(r.task.residual, 255 - 96);
    assert.equal(r.data[96], 0xee, 'nothing written past the data');
  });

  it('uses the bdev product name (null bdev)', () => {
    const d = good(run(mallocLun({ bdev: new NullBdev('Null0', 512, 1024) }), inquiry(0, 0, 96), 96));
    assert.equal(ascii(d.subarray(16, 32)), 'Null disk       ');
  });

  it('truncates to the allocation length and reports the residual', () => {
    const r = run(mallocLun(), inquiry(0, 0, 36), 255);
    assert.equal(good(r).length, 36);
    assert.equal(r.task.residual, 219);
    assert.equal(r.data[36], 0xee);
    const r5 = run(mallocLun(), inquiry(0, 0, 5), 64);
    assert.equal(good(r5).length, 5);
    assert.equal(r5.data[4], 91, 'additional length is not shrunk by the allocation length');
  });

  it('truncates to the data-in buffer (scattered over segments)', () => {
    const r = run(mallocLun(), inquiry(0, 0, 255), 20, { seg: 7 });
    const d = good(r);
    assert.equal(d.length, 20);
    assert.equal(ascii(d.subarray(8, 16)), 'INTEL   ');
    assert.equal(r.task.residual, 0);
  });

  it('allocation length 0 transfers nothing', () => {
    const r = run(mallocLun(), inquiry(0, 0, 0), 64);
    assert.equal(good(r).length, 0);
    assert.equal(r.task.residual, 64);
    assert.equal(r.data[0], 0xee);
  });

  it('page code without EVPD, or CMDDT, is an invalid field in the CDB', () => {
    checkSense(run(mallocLun(), inquiry(0, 0x80, 255)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    checkSense(run(mallocLun(), inquiry(0x02, 0, 255)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  it('NACA in the control byte is refused', () => {
    checkSense(run(mallocLun(), inquiry(0, 0, 255, 0x04)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });
});

describe('INQUIRY VPD pages', () => {
  const vpd = (lun: ScsiLun, page: number, alloc = 1024) => good(run(lun, inquiry(1, page, alloc), 1024));

  it('00h lists the supported pages, B2h only with unmap support', () => {
    const d = vpd(mallocLun(), 0x00);
    assert.deepEqual([d[0], d[1]], [0x00, 0x00]);
    assert.equal(be16(d, 2), d.length - 4);
    assert.deepEqual([...d.subarray(4)], [0x00, 0x80, 0x83, 0x85, 0x86, 0x87, 0x88, 0xb0, 0xb1, 0xb2]);
    const n = vpd(mallocLun({ bdev: new NullBdev('Null0', 512, 1024) }), 0x00);
    assert.deepEqual([...n.subarray(4)], [0x00, 0x80, 0x83, 0x85, 0x86, 0x87, 0x88, 0xb0, 0xb1]);
  });

  it('80h: unit serial number is the bdev name, NUL terminated, at most 31 characters', () => {
    const d = vpd(mallocLun(), 0x80);
    assert.equal(d[1], 0x80);
    assert.equal(be16(d, 2), 8);
    assert.equal(ascii(d.subarray(4, 11)), 'Malloc0');
    assert.equal(d[11], 0);
    const long = 'x'.repeat(40);
    const l = vpd(mallocLun({ bdev: new MallocBdev(long, 512, 4096) }), 0x80);
    assert.equal(be16(l, 2), 32);
    assert.equal(ascii(l.subarray(4, 35)), 'x'.repeat(31));
    assert.equal(l[35], 0);
  });

  it('83h: NAA, T10 vendor id, SCSI names, relative port, port group, LU group', () => {
    const lun = mallocLun();
    const set = new ScsiTargetSet();
    set.attach(3, lun); // identity "Target 3" / id 3
    const d = vpd(lun, 0x83);
    assert.equal(be16(d, 2), d.length - 4);
    const descs: Array<{ b0: number; b1: number; body: Uint8Array }> = [];
    for (let p = 4; p < d.length; ) {
      const len = d[p + 3];
      descs.push({ b0: d[p], b1: d[p + 1], body: d.subarray(p + 4, p + 4 + len) });
      p += 4 + len;
    }
    assert.equal(descs.length, 7);
    const [naa, t10, devName, portName, relPort, tpg, lug] = descs;
    // protocol id SAS (6) in every descriptor, PIV set
    for (const x of descs) {
      assert.equal(x.b0 >> 4, 6);
      assert.equal(x.b1 & 0x80, 0x80);
    }
    assert.deepEqual([naa.b0 & 0x0f, naa.b1 & 0x3f], [1, 0x03]); // binary, LU, NAA
    // known answer from SPDK's bdev_scsi_set_naa_ieee_extended compiled in C
    assert.equal(Buffer.from(naa.body).toString('hex'), '2d1d000347386228');
    assert.deepEqual([t10.b0 & 0x0f, t10.b1 & 0x3f], [2, 0x01]); // ASCII, LU, T10 vendor id
    assert.equal(ascii(t10.body), `INTEL   Malloc disk     Malloc0${' '.repeat(25)}`);
    assert.deepEqual([devName.b0 & 0x0f, devName.b1 & 0x3f], [3, 0x28]); // UTF-8, target device, SCSI name
    assert.equal(ascii(devName.body), 'Target 3\0\0\0\0');
    assert.deepEqual([portName.b0 & 0x0f, portName.b1 & 0x3f], [3, 0x18]); // target port
    assert.equal(ascii(portName.body), 'vhost\0\0\0');
    assert.equal(relPort.b1 & 0x3f, 0x14);
    assert.equal(be16(relPort.body, 2), 1);
    assert.equal(tpg.b1 & 0x3f, 0x15);
    assert.deepEqual([...tpg.body], [0, 0, 0, 0]);
    assert.equal(lug.b1 & 0x3f, 0x06);
    assert.equal(be16(lug.body, 2), 3);
  });

  it('NAA hash matches SPDK for other names (incl. non-ASCII bytes as signed char)', () => {
    assert.equal(Buffer.from(naaIeeeExtended('Nvme0n1')).toString('hex'), '2284000347524bef');
    assert.equal(Buffer.from(naaIeeeExtended('a-much-longer-bdev-name-for-hashing')).toString('hex'), '2b94000347710d74');
    assert.equal(Buffer.from(naaIeeeExtended('été')).toString('hex'), '2bc5000347b16f8c');
  });

  it('83h is truncated to a small allocation length instead of failing', () => {
    const r = run(mallocLun(), inquiry(1, 0x83, 16), 1024);
    const d = good(r);
    assert.equal(d.length, 16);
    assert.equal(d[1], 0x83);
    assert.ok(be16(d, 2) > 12, 'page length still the full length');
  });

  it('B0h block limits', () => {
    const d = vpd(mallocLun(), 0xb0);
    assert.equal(be16(d, 2), 0x3c);
    assert.equal(d[4] & 1, 1, 'WSNZ');
    assert.equal(be16(d, 6), 8, 'optimal granularity 4 KiB in 512-byte blocks');
    assert.equal(be32(d, 8), 8192, 'max transfer 4 MiB');
    assert.equal(be32(d, 12), 8192);
    assert.equal(be32(d, 20), 4194304, 'max unmap LBA count');
    assert.equal(be32(d, 24), 256, 'max unmap descriptors');
    assert.equal(be32(d, 36) * 2 ** 32 + be32(d, 40), 8192, 'max write same length');
    const big = vpd(mallocLun({ bdev: new NullBdev('n', 4096, 1024) }), 0xb0);
    assert.equal(be16(big, 6), 1);
    assert.equal(be32(big, 8), 1024);
    assert.equal(be32(big, 20), 0, 'no unmap limits without unmap');
    assert.equal(be32(big, 24), 0);
  });

  it('B1h: non-rotating medium', () => {
    const d = vpd(mallocLun(), 0xb1);
    assert.equal(be16(d, 2), 0x3c);
    assert.equal(be16(d, 4), 1);
  });

  it('B2h: LBPU, LBPWS, LBPWS10, thin provisioning; refused without unmap', () => {
    const d = vpd(mallocLun(), 0xb2);
    assert.equal(d.length, 8);
    assert.equal(be16(d, 2), 4);
    assert.equal(d[5] & 0xe0, 0xe0);
    assert.equal(d[6] & 0x07, 0x02);
    checkSense(run(mallocLun({ bdev: new NullBdev('n', 512, 8) }), inquiry(1, 0xb2, 255)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  it('86h / 87h / 88h / 85h', () => {
    const lun = mallocLun();
    const ext = vpd(lun, 0x86);
    assert.equal(be16(ext, 2), 60);
    assert.equal(ext[5], 0x05);
    const pol = vpd(lun, 0x87);
    assert.deepEqual([...pol.subarray(2)], [0, 4, 0x3f, 0xff, 0, 0]);
    const ports = vpd(lun, 0x88);
    assert.equal(be16(ports, 6), 1, 'relative port id');
    assert.equal(be16(ports, 14), 4 + 8, 'target port descriptors length');
    assert.equal(ascii(ports.subarray(20, 28)), 'vhost\0\0\0');
    assert.deepEqual([...vpd(lun, 0x85)], [0, 0x85, 0, 0]);
  });

  it('unsupported pages are an invalid field in the CDB', () => {
    for (const page of [0x01, 0x84, 0xb3, 0xc0, 0xff]) {
      checkSense(run(mallocLun(), inquiry(1, page, 255)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    }
  });
});

describe('REPORT LUNS', () => {
  const reportLuns = (select: number, alloc: number) => [0xa0, 0, select, 0, 0, 0, (alloc >>> 24) & 0xff, (alloc >>> 16) & 0xff, (alloc >>> 8) & 0xff, alloc & 0xff, 0, 0];

  it('lists LUN 0', () => {
    for (const sel of [0, 2]) {
      const r = run(mallocLun(), reportLuns(sel, 4096), 64);
      const d = good(r);
      assert.equal(d.length, 16);
      assert.equal(be32(d, 0), 8, 'LUN list length');
      assert.deepEqual([...d.subarray(8, 16)], [0, 0, 0, 0, 0, 0, 0, 0]);
      assert.equal(r.task.residual, 48);
    }
  });

  it('select 01h (well-known LUs) is an empty list', () => {
    const d = good(run(mallocLun(), reportLuns(1, 16), 64));
    assert.equal(d.length, 8);
    assert.equal(be32(d, 0), 0);
  });

  it('allocation length below 16 and unknown SELECT REPORT are refused', () => {
    checkSense(run(mallocLun(), reportLuns(0, 15)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    checkSense(run(mallocLun(), reportLuns(0x10, 4096)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  it('a short buffer truncates', () => {
    const d = good(run(mallocLun(), reportLuns(0, 4096), 10));
    assert.equal(d.length, 10);
    assert.equal(be32(d, 0), 8);
  });
});

describe('READ CAPACITY', () => {
  it('(10) reports last LBA and block size', () => {
    const d = good(run(mallocLun(), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));
    assert.deepEqual([be32(d, 0), be32(d, 4)], [63, 512]);
  });

  it('(10) saturates at FFFFFFFFh for large devices', () => {
    const d = good(run(mallocLun({ bdev: new NullBdev('n', 512, 2 ** 33) }), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));
    assert.equal(be32(d, 0), 0xffffffff);
  });

  it('(10) with an LBA but no PMI is refused', () => {
    checkSense(run(mallocLun(), [0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], 8), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  const rc16 = (alloc: number, sa = 0x10) => [0x9e, sa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, alloc, 0, 0];

  it('(16) reports 64-bit last LBA, block size and LBPME with unmap', () => {
    const d = good(run(mallocLun(), rc16(32), 64));
    assert.equal(d.length, 32);
    assert.equal(be32(d, 0) * 2 ** 32 + be32(d, 4), 63);
    assert.equal(be32(d, 8), 512);
    assert.equal(d[14] & 0x80, 0x80, 'LBPME');
    const n = good(run(mallocLun({ bdev: new NullBdev('n', 4096, 2 ** 33) }), rc16(32), 64));
    assert.equal(be32(n, 0) * 2 ** 32 + be32(n, 4), 2 ** 33 - 1);
    assert.equal(be32(n, 8), 4096);
    assert.equal(n[14] & 0x80, 0, 'no LBPME without unmap');
  });

  it('(16) honours the allocation length', () => {
    const r = run(mallocLun(), rc16(12), 64);
    assert.equal(good(r).length, 12);
    assert.equal(r.task.residual, 52);
  });

  it('other SERVICE ACTION IN (16) actions are refused', () => {
    checkSense(run(mallocLun(), rc16(32, 0x11)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });
});

describe('MODE SENSE', () => {
  const ms6 = (page: number, sub = 0, alloc = 255, dbd = false, pc = 0) => [0x1a, dbd ? 0x08 : 0, (pc << 6) | page, sub, alloc, 0];
  const ms10 = (page: number, sub = 0, alloc = 1024, llbaa = false, dbd = false) => [0x5a, (llbaa ? 0x10 : 0) | (dbd ? 0x08 : 0), page, sub, 0, 0, 0, alloc >> 8, alloc & 0xff, 0];

  it('(6) caching page with block descriptor', () => {
    const d = good(run(mallocLun(), ms6(0x08), 255));
    assert.equal(d.length, 4 + 8 + 20);
    assert.equal(d[0], d.length - 1, 'mode data length');
    assert.equal(d[2], 0, 'no WP');
    assert.equal(d[3], 8, 'block descriptor length');
    assert.deepEqual([be32(d, 4), be32(d, 8) & 0xffffff], [64, 512]);
    assert.deepEqual([d[12], d[13]], [0x08, 0x12]);
    assert.equal(d[14], 0x01, 'RCD=1, WCE=0');
  });

  it('WCE with a write cache, WP when read-only', () => {
    const d = good(run(mallocLun({ writeCache: true, readonly: true }), ms6(0x08, 0, 255, true), 255));
    assert.equal(d[2], 0x80, 'WP');
    assert.equal(d[3], 0, 'DBD: no block descriptor');
    assert.equal(d[4], 0x08);
    assert.equal(d[6], 0x05, 'WCE | RCD');
    const d10 = good(run(mallocLun({ readonly: true }), ms10(0x08), 1024));
    assert.equal(d10[3], 0x80, 'WP in MODE SENSE (10)');
  });

  it('changeable values are all zero', () => {
    const d = good(run(mallocLun({ writeCache: true }), ms6(0x08, 0, 255, true, 1), 255));
    assert.equal(d[6], 0);
  });

  it('control page 0Ah and its extension subpage', () => {
    const d = good(run(mallocLun(), ms6(0x0a, 0, 255, true), 255));
    assert.deepEqual([d[4], d[5]], [0x0a, 0x0a]);
    assert.equal(d.length, 4 + 12);
    const ext = good(run(mallocLun(), ms6(0x0a, 0x01, 255, true), 255));
    assert.deepEqual([ext[4], ext[5], be16(ext, 6)], [0x4a, 0x01, 0x1c]);
    const all = good(run(mallocLun(), ms6(0x0a, 0xff, 255, true), 255));
    assert.equal(all.length, 4 + 12 + 32);
  });

  it('3Fh returns every page in ascending order', () => {
    const d = good(run(mallocLun(), ms6(0x3f, 0, 255, true), 255));
    const pages: number[] = [];
    for (let p = 4; p < d.length; p += d[p + 1] + 2) pages.push(d[p]);
    assert.deepEqual(pages, [0x01, 0x02, 0x07, 0x08, 0x0a, 0x10, 0x1a, 0x1c]);
    assert.equal(d[0], d.length - 1);
    const withSub = good(run(mallocLun(), ms10(0x3f, 0xff, 1024, false, true), 1024));
    const seen: string[] = [];
    for (let p = 8; p < withSub.length; ) {
      if (withSub[p] & 0x40) {
        seen.push(`${(withSub[p] & 0x3f).toString(16)}/${withSub[p + 1]}`);
        p += be16(withSub, p + 2) + 4;
      } else {
        seen.push(`${withSub[p].toString(16)}`);
        p += withSub[p + 1] + 2;
      }
    }
    assert.deepEqual(seen, ['1', '2', '7', '8', 'a', 'a/1', '10', '1a', '1c']);
    assert.equal(be16(withSub, 0), withSub.length - 2);
  });

  it('(10) with LLBAA gives a 16-byte block descriptor', () => {
    const d = good(run(mallocLun(), ms10(0x08, 0, 1024, true), 1024));
    assert.equal(d[4] & 1, 1, 'LONGLBA');
    assert.equal(be16(d, 6), 16);
    assert.equal(be32(d, 8) * 2 ** 32 + be32(d, 12), 64);
    assert.equal(be32(d, 20), 512);
    assert.equal(d[24], 0x08);
  });

  it('honours the allocation length', () => {
    const r = run(mallocLun(), ms6(0x3f, 0, 10), 255);
    assert.equal(good(r).length, 10);
    assert.equal(r.data[0], 4 + 8 + 120 - 1, 'full mode data length');
  });

  it('saved values and unsupported pages are refused', () => {
    checkSense(run(mallocLun(), ms6(0x08, 0, 255, false, 3)), SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED);
    checkSense(run(mallocLun(), ms6(0x05)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    checkSense(run(mallocLun(), ms6(0x08, 0x01)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    checkSense(run(mallocLun(), ms6(0x3f, 0x05)), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });
});

describe('MODE SELECT', () => {
  const sel10 = (pllen: number) => [0x55, 0x10, 0, 0, 0, 0, 0, pllen >> 8, pllen & 0xff, 0];
  const sel6 = (pllen: number) => [0x15, 0x10, 0, 0, pllen, 0];
  const cachingPage = () => {
    const p = new Uint8Array(20);
    p[0] = 0x08;
    p[1] = 0x12;
    p[2] = 0x04;
    return p;
  };

  it('accepts a well-formed parameter list (and changes nothing)', () => {
    const out = new Uint8Array(8 + 20);
    out.set(cachingPage(), 8);
    const lun = mallocLun();
    const r = run(lun, sel10(out.length), 0, { out });
    good(r);
    assert.equal(r.task.dataTransferred, 28);
    assert.equal(r.task.residual, 0);
    const ms = good(run(lun, [0x1a, 0x08, 0x08, 0, 255, 0], 255));
    assert.equal(ms[6], 0x01, 'WCE still clear');
    const out6 = new Uint8Array(4 + 8 + 20 + 5);
    out6[3] = 8;
    out6.set(cachingPage(), 12);
    const r6 = run(lun, sel6(32), 0, { out: out6 });
    good(r6);
    assert.equal(r6.task.residual, 5);
  });

  it('parameter list length 0 is a no-op', () => {
    good(run(mallocLun(), sel6(0), 0));
  });

  it('length errors', () => {
    checkSense(run(mallocLun(), sel10(4), 0, { out: new Uint8Array(4) }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    checkSense(run(mallocLun(), sel10(28), 0, { out: new Uint8Array(20) }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    const trunc = new Uint8Array(8 + 10);
    trunc.set(cachingPage().subarray(0, 10), 8);
    checkSense(run(mallocLun(), sel10(18), 0, { out: trunc }), SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
  });

  it('unknown pages, wrong page lengths and block descriptor lengths are invalid fields in the parameter list', () => {
    const unknown = new Uint8Array(8 + 12);
    unknown[8] = 0x05;
    unknown[9] = 10;
    checkSense(run(mallocLun(), sel10(20), 0, { out: unknown }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    const wrongLen = new Uint8Array(8 + 12);
    wrongLen[8] = 0x08;
    wrongLen[9] = 10;
    checkSense(run(mallocLun(), sel10(20), 0, { out: wrongLen }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    const bdl = new Uint8Array(8 + 4);
    bdl[7] = 4;
    checkSense(run(mallocLun(), sel10(12), 0, { out: bdl }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
  });
});

describe('REQUEST SENSE, TEST UNIT READY, START STOP UNIT', () => {
  it('REQUEST SENSE returns NO SENSE fixed-format data', () => {
    const r = run(mallocLun(), [0x03, 0, 0, 0, 252, 0], 252);
    const d = good(r);
    assert.equal(d.length, 18);
    const s = decodeFixedSense(d);
    assert.ok(s);
    assert.deepEqual([s.senseKey, s.asc, s.ascq], [0, 0, 0]);
    assert.equal(r.task.residual, 252 - 18);
    assert.equal(good(run(mallocLun(), [0x03, 0, 0, 0, 8, 0], 252)).length, 8);
  });

  it('REQUEST SENSE with DESC is refused', () => {
    checkSense(run(mallocLun(), [0x03, 1, 0, 0, 252, 0], 252), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  it('TEST UNIT READY and START STOP UNIT succeed without data', () => {
    for (const cdb of [[0, 0, 0, 0, 0, 0], [0x1b, 0, 0, 0, 1, 0]]) {
      const r = run(mallocLun(), cdb, 0);
      good(r);
      assert.equal(r.task.dataTransferred, 0);
      assert.equal(r.task.residual, 0);
    }
  });
});

describe('CDB-level errors', () => {
  it('unsupported and reserved opcodes: INVALID COMMAND OPERATION CODE', () => {
    for (const op of [0x04, 0x1e, 0x4d, 0x5e, 0x7f, 0x89, 0xc0, 0xff]) {
      const r = run(mallocLun(), [op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 512);
      checkSense(r, SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
      assert.equal(r.task.residual, 512, 'nothing transferred');
    }
  });

  it('an empty CDB is an invalid opcode', () => {
    checkSense(run(mallocLun(), [], 0, { cdbLength: 0 }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
  });

  it('a CDB shorter than its opcode group needs is an invalid field', () => {
    checkSense(run(mallocLun(), [0x12, 0, 0, 0, 96], 96, { cdbLength: 5 }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    checkSense(run(mallocLun(), [0x28, 0, 0, 0, 0, 0, 0, 0, 1], 512, { cdbLength: 9 }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    checkSense(run(mallocLun(), [0x9e, 0x10], 32, { cdbLength: 2 }), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });

  it('a task is reusable and results do not leak between commands', () => {
    const lun = mallocLun();
    const task = new ScsiTask();
    let calls = 0;
    task.onComplete = () => calls++;
    const buf = new Uint8Array(96);
    task.setCdb([0xff]);
    lun.execute(task);
    assert.equal(task.status, ScsiStatus.CHECK_CONDITION);
    task.reset();
    task.setCdb(inquiry(0, 0, 96));
    task.dataIn.push(buf, 0, 96);
    lun.execute(task);
    assert.equal(calls, 2);
    assert.equal(task.status, ScsiStatus.GOOD);
    assert.equal(task.senseLength, 0);
    assert.equal(task.dataTransferred, 96);
  });
});
