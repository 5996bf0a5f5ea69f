// The descriptor-chain walker as it was before the hot path was rewritten (object-per-step
// translation, DataView reads): the fuzz test's oracle. The production walker must return the same
// code and, on success, the same scatter list and chain facts for every input.
import { IoVecs } from '../../../src/bdev/io.js';
import type { GuestMemory } from '../../../src/memory/guest-memory.js';

const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const MAX_INDIRECT = 4096;
const ChainError = { OK: 0, BAD_INDEX: 1, LOOP: 2, BAD_ADDRESS: 3, BAD_INDIRECT: 4, ORDER: 5 } as const;

/** The buffers of one chain. Segments past capacity are counted but not kept (overflow). */
export class RefChain {
  readonly iov: IoVecs;
  /** Index in iov of the first writable segment (== iov.count when none). */
  firstWritable = 0;
  readableLen = 0;
  writableLen = 0;
  overflow = false;
  descCount = 0;
  /** Packed rings: ring slots the chain occupies, and its buffer id. */
  ringDescs = 0;
  id = 0;
  seenWritable = false;
  // The last writable byte, found even on overflow so a status can still be reported.
  lastWin: Uint8Array | undefined;
  lastOff = 0;
  /** The first segment as a DataView window and offset, so a device reads its header in place. */
  firstView: DataView | undefined;
  firstOff = 0;

  constructor(capacity: number) {
    this.iov = new IoVecs(capacity);
  }

  reset(): void {
    this.iov.reset();
    this.firstWritable = 0;
    this.readableLen = 0;
    this.writableLen = 0;
    this.overflow = false;
    this.descCount = 0;
    this.ringDescs = 0;
    this.seenWritable = false;
    this.lastWin = undefined;
    this.firstView = undefined;
  }
}

export class ReferenceWalker {
  constructor(
    private readonly mem: GuestMemory,
    private readonly indirectAllowed: boolean,
  ) {}

  /** Split ring: fills `out` with the chain starting at `head` of a table of `size` entries. */
  walk(view: DataView, tableOff: number, size: number, head: number, out: RefChain): number {
    out.reset();
    let idx = head;
    let tView = view;
    let tOff = tableOff;
    let tSize = size;
    let inIndirect = false;
    let budget = size;
    for (;;) {
      if (idx >= tSize) return ChainError.BAD_INDEX;
      if (budget-- === 0) return ChainError.LOOP;
      const d = tOff + idx * 16;
      const addr = tView.getUint32(d + 4, true) * 0x100000000 + tView.getUint32(d, true);
      const len = tView.getUint32(d + 8, true);
      const flags = tView.getUint16(d + 12, true);
      const next = tView.getUint16(d + 14, true);
      out.descCount++;
      if (flags & F_INDIRECT) {
        if (!this.indirectAllowed || inIndirect || flags & F_NEXT) return ChainError.BAD_INDIRECT;
        if (len === 0 || len % 16 !== 0 || len / 16 > MAX_INDIRECT) return ChainError.BAD_INDIRECT;
        if (!this.mem.translateWhole(addr, len)) return ChainError.BAD_INDIRECT;
        tView = this.mem.view;
        tOff = this.mem.off;
        tSize = len / 16;
        budget = tSize;
        inIndirect = true;
        idx = 0;
        continue;
      }
      const rc = this.segment(addr, len, flags, out);
      if (rc !== ChainError.OK) return rc;
      if (!(flags & F_NEXT)) break;
      idx = next;
    }
    return this.finish(out);
  }

  /**
   * Packed ring: fills `out` with the chain whose first descriptor is ring slot `start`; sets
   * out.ringDescs (slots consumed) and out.id (the buffer id, from the chain's last descriptor).
   */
  walkPacked(view: DataView, tableOff: number, size: number, start: number, out: RefChain): number {
    out.reset();
    let slot = start;
    for (;;) {
      if (out.ringDescs === size) return ChainError.LOOP;
      const d = tableOff + slot * 16;
      const addr = view.getUint32(d + 4, true) * 0x100000000 + view.getUint32(d, true);
      const len = view.getUint32(d + 8, true);
      const id = view.getUint16(d + 12, true);
      const flags = view.getUint16(d + 14, true);
      out.ringDescs++;
      out.descCount++;
      if (flags & F_INDIRECT) {
        // An indirect table is the whole buffer: walked in order, NEXT ignored, no nesting.
        if (!this.indirectAllowed || flags & F_NEXT) return ChainError.BAD_INDIRECT;
        if (len === 0 || len % 16 !== 0 || len / 16 > MAX_INDIRECT) return ChainError.BAD_INDIRECT;
        if (!this.mem.translateWhole(addr, len)) return ChainError.BAD_INDIRECT;
        const iv = this.mem.view;
        const io = this.mem.off;
        for (let i = 0; i < len / 16; i++) {
          const e = io + i * 16;
          const f = iv.getUint16(e + 14, true);
          if (f & F_INDIRECT) return ChainError.BAD_INDIRECT;
          out.descCount++;
          const rc = this.segment(iv.getUint32(e + 4, true) * 0x100000000 + iv.getUint32(e, true), iv.getUint32(e + 8, true), f, out);
          if (rc !== ChainError.OK) return rc;
        }
        out.id = id;
        break;
      }
      const rc = this.segment(addr, len, flags, out);
      if (rc !== ChainError.OK) return rc;
      if (!(flags & F_NEXT)) {
        out.id = id;
        break;
      }
      slot = slot + 1 === size ? 0 : slot + 1;
    }
    return this.finish(out);
  }

  /** Adds one descriptor's buffer, enforcing readable-before-writable. */
  private segment(addr: number, len: number, flags: number, out: RefChain): number {
    const writable = (flags & F_WRITE) !== 0;
    if (writable) {
      if (!out.seenWritable) {
        out.seenWritable = true;
        out.firstWritable = out.iov.count;
      }
    } else if (out.seenWritable) {
      return ChainError.ORDER;
    }
    return this.addBuffer(addr, len, writable, out) ? ChainError.OK : ChainError.BAD_ADDRESS;
  }

  private finish(out: RefChain): number {
    if (!out.seenWritable) out.firstWritable = out.iov.count;
    return ChainError.OK;
  }

  private addBuffer(addr: number, len: number, writable: boolean, out: RefChain): boolean {
    const mem = this.mem;
    while (len > 0) {
      if (!mem.translate(addr, len)) return false;
      const n = mem.len;
      if (out.iov.count === 0) {
        out.firstView = mem.view;
        out.firstOff = mem.off;
      }
      if (!out.overflow && !out.iov.push(mem.win, mem.off, n)) out.overflow = true;
      if (writable) {
        out.writableLen += n;
        out.lastWin = mem.win;
        out.lastOff = mem.off + n - 1;
      } else {
        out.readableLen += n;
      }
      addr += n;
      len -= n;
    }
    return true;
  }
}
