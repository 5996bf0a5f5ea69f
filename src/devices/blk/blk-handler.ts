// virtio-blk request semantics on one queue (the transport-neutral part of QEMU's
// virtio-blk-handler): header decode, range and alignment checks, and the bdev call.
import type { BdevChannel } from '../../bdev/bdev.js';
import { IoType, copyBytes, readBytes, sliceInto } from '../../bdev/io.js';
import type { Chain } from '../../virtio/desc-chain.js';
import type { QueueRunner, RequestHandler } from '../../virtio/queue-runner.js';
import { BLK_ID_BYTES, BlkReqType, type BlkDeviceSpec, BlkStatus, SECTOR_SIZE, WRITE_ZEROES_FLAG_UNMAP } from './blk-spec.js';
import { BlkRequest } from './blk-request.js';

const HEADER_BYTES = 16;
const SEGMENT_BYTES = 16;

export class BlkHandler implements RequestHandler {
  private readonly requests: BlkRequest[];
  private readonly scratch = new Uint8Array(HEADER_BYTES);
  private readonly scratchView = new DataView(this.scratch.buffer);
  private readonly scratchWords = new Uint32Array(this.scratch.buffer);
  private readonly serial: Uint8Array;
  private flushesRefused = 0;

  /** `channel`: the device's bdev layer channel (it queues what the backend cannot take yet). */
  constructor(
    runner: QueueRunner,
    private readonly channel: BdevChannel,
    private readonly spec: BlkDeviceSpec,
    private readonly warn: (msg: string) => void,
    /** Every FLUSH fails: a resumed session over writes the killed process lost (unclean-resume.ts). */
    private readonly flushesLost = false,
  ) {
    // checkRange relies on a power-of-two block size (every bdev module guarantees one).
    if (spec.blockSize < SECTOR_SIZE || (spec.blockSize & (spec.blockSize - 1)) !== 0) throw new Error(`block size ${spec.blockSize} is not a power of two >= 512`);
    this.requests = [];
    for (let i = 0; i < runner.queue.size; i++) this.requests.push(new BlkRequest(i, runner, spec.segMax + 2));
    this.serial = new Uint8Array(BLK_ID_BYTES);
    this.serial.set(new TextEncoder().encode(spec.serial).subarray(0, BLK_ID_BYTES));
  }

  handle(head: number, chain: Chain): void {
    const req = this.requests[head];
    if (chain.writableLen < 1 || chain.lastWin === undefined) {
      // Nowhere to put a status byte: the guest broke the protocol (QEMU stops the device too).
      throw new Error(`request at head ${head} has no device-writable status byte`);
    }
    req.statusWin = chain.lastWin;
    req.statusOff = chain.lastOff;
    req.dataIn = 0;
    if (chain.readableLen < HEADER_BYTES) {
      this.warn(`request at head ${head}: header is ${chain.readableLen} bytes, need ${HEADER_BYTES}`);
      return req.finish(BlkStatus.IOERR);
    }
    if (chain.overflow) {
      this.warn(`request at head ${head}: more than ${chain.iov.capacity} buffers`);
      return req.finish(BlkStatus.IOERR);
    }
    const iov = chain.iov;
    // The header is read in place when its first buffer holds it at a 4-byte boundary (always,
    // with Linux drivers); otherwise from a copy.
    let words = chain.firstWords as Uint32Array;
    let at = chain.firstOff >>> 2;
    if (iov.lens[0] < HEADER_BYTES || (chain.firstOff & 3) !== 0) {
      readBytes(iov, 0, chain.firstWritable, 0, this.scratch, HEADER_BYTES);
      words = this.scratchWords;
      at = 0;
    }
    const type = words[at];
    const sectorLo = words[at + 2];
    const sector = sectorLo + words[at + 3] * 0x100000000;
    const outLen = chain.readableLen - HEADER_BYTES;
    const inLen = chain.writableLen - 1;
    const spec = this.spec;
    switch (type) {
      case BlkReqType.IN:
      case BlkReqType.OUT: {
        const isRead = type === BlkReqType.IN;
        const len = isRead ? inLen : outLen;
        if (!isRead && spec.readonly) return req.finish(BlkStatus.IOERR);
        if (!this.checkRange(sector, sectorLo, len)) return req.finish(BlkStatus.IOERR);
        const ok = isRead
          ? sliceInto(iov, chain.firstWritable, iov.count, 0, len, req.iov)
          : sliceInto(iov, 0, chain.firstWritable, HEADER_BYTES, len, req.iov);
        if (!ok) return req.finish(BlkStatus.IOERR);
        req.type = isRead ? IoType.READ : IoType.WRITE;
        req.offset = sector * SECTOR_SIZE;
        req.length = len;
        req.dataIn = isRead ? len : 0;
        this.submit(req);
        return;
      }
      case BlkReqType.FLUSH:
        if (this.flushesLost) {
          if (this.flushesRefused++ === 0) {
            this.warn(
              `queue ${req.runner.qid}: failing every FLUSH of the reconnected front-end: its bdev was opened from an image the killed vhostd left unclean, so writes acknowledged before the kill are lost (a new front-end starts clean)`,
            );
          }
          return req.finish(BlkStatus.IOERR);
        }
        req.type = IoType.FLUSH;
        req.offset = 0;
        req.length = 0;
        req.iov.reset();
        this.submit(req);
        return;
      case BlkReqType.GET_ID: {
        const n = Math.min(inLen, BLK_ID_BYTES);
        if (!sliceInto(iov, chain.firstWritable, iov.count, 0, n, req.iov)) return req.finish(BlkStatus.IOERR);
        let off = 0;
        for (let i = 0; i < req.iov.count; i++) {
          copyBytes(this.serial, off, req.iov.bufs[i], req.iov.offs[i], req.iov.lens[i]);
          off += req.iov.lens[i];
        }
        req.dataIn = n;
        return req.finish(BlkStatus.OK);
      }
      case BlkReqType.DISCARD:
      case BlkReqType.WRITE_ZEROES:
        return this.handleRange(req, type, chain);
      default:
        return req.finish(BlkStatus.UNSUPP);
    }
  }

  private submit(req: BlkRequest): void {
    this.channel.submit(req);
  }

  /**
   * Sector range inside the disk and aligned to the logical block size (a power of two). Bit
   * tests on the sector's low word and the length keep to integer arithmetic: `%` on a double
   * is a call to fmod.
   */
  private checkRange(sector: number, sectorLo: number, len: number): boolean {
    const bs = this.spec.blockSize;
    return (sectorLo & (bs / SECTOR_SIZE - 1)) === 0 && (len & (bs - 1)) === 0 && sector * SECTOR_SIZE + len <= this.spec.capacityBytes;
  }

  private handleRange(req: BlkRequest, type: number, chain: Chain): void {
    const spec = this.spec;
    const isDiscard = type === BlkReqType.DISCARD;
    if (isDiscard ? !spec.unmap : !spec.writeZeroes) return req.finish(BlkStatus.UNSUPP);
    if (spec.readonly) return req.finish(BlkStatus.IOERR);
    const payload = chain.readableLen - HEADER_BYTES;
    // One segment per request, as advertised in max_discard_seg / max_write_zeroes_seg.
    if (payload !== SEGMENT_BYTES) return req.finish(BlkStatus.IOERR);
    readBytes(chain.iov, 0, chain.firstWritable, HEADER_BYTES, this.scratch, SEGMENT_BYTES);
    const v = this.scratchView;
    const sectorLo = v.getUint32(0, true);
    const sector = sectorLo + v.getUint32(4, true) * 0x100000000;
    const numSectors = v.getUint32(8, true);
    const flags = v.getUint32(12, true);
    if (flags & ~WRITE_ZEROES_FLAG_UNMAP) return req.finish(BlkStatus.UNSUPP);
    if (isDiscard && flags !== 0) return req.finish(BlkStatus.UNSUPP);
    const max = isDiscard ? spec.maxDiscardSectors : spec.maxWriteZeroesSectors;
    if (numSectors > max || !this.checkRange(sector, sectorLo, numSectors * SECTOR_SIZE)) return req.finish(BlkStatus.IOERR);
    // WRITE_ZEROES with the unmap flag still has to read back zeros: the bdev decides whether it
    // can deallocate while doing so.
    req.type = isDiscard ? IoType.UNMAP : IoType.WRITE_ZEROES;
    req.offset = sector * SECTOR_SIZE;
    req.length = numSectors * SECTOR_SIZE;
    req.iov.reset();
    this.submit(req);
  }
}
