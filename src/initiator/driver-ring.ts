// Driver side of a split virtqueue in initiator memory: descriptor table, avail and used rings.
// Raw accessors stay public so tests can build hostile rings on purpose.
import type { DriverMemory } from './driver-memory.js';

export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;

export interface DriverBuffer {
  gpa: number;
  len: number;
  write: boolean;
}

export class DriverRing {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  private readonly free: number[] = [];
  private availIdx = 0;
  private lastUsed = 0;
  /** Descriptor ids of each in-flight chain, by head (to free them on completion). */
  private readonly chainIds = new Map<number, number[]>();
  constructor(
    readonly mem: DriverMemory,
    readonly size: number,
  ) {
    this.descGpa = mem.alloc(16 * size, 16);
    this.availGpa = mem.alloc(6 + 2 * size, 2);
    this.usedGpa = mem.alloc(6 + 8 * size, 4096);
    for (let i = 0; i < size; i++) this.free.push(i);
  }

  get freeCount(): number {
    return this.free.length;
  }

  writeDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const v = this.mem.view;
    const o = this.mem.off(this.descGpa) + 16 * i;
    v.setBigUint64(o, BigInt(addr), true);
    v.setUint32(o + 8, len, true);
    v.setUint16(o + 12, flags, true);
    v.setUint16(o + 14, next, true);
  }

  /** Puts `head` into the next avail slot without publishing it. */
  pushAvail(head: number): void {
    this.mem.view.setUint16(this.mem.off(this.availGpa) + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  /** Publishes the avail index (or a raw value, for hostile tests). */
  publish(raw?: number): void {
    const idx = raw ?? this.availIdx;
    Atomics.store(new Uint16Array(this.mem.u8.buffer, this.mem.off(this.availGpa), 2), 1, idx);
  }

  /** Builds a chain from buffers; returns its head or -1 when descriptors are short. */
  addChain(bufs: DriverBuffer[]): number {
    if (this.free.length < bufs.length) return -1;
    const ids = this.free.splice(0, bufs.length);
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      this.writeDesc(ids[k], b.gpa, b.len, (b.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT), last ? 0 : ids[k + 1]);
    });
    this.chainIds.set(ids[0], ids);
    this.pushAvail(ids[0]);
    return ids[0];
  }

  /** Collects completed heads (and frees their descriptors). */
  reapUsed(out: Array<{ id: number; len: number }>): number {
    const u16 = new Uint16Array(this.mem.u8.buffer, this.mem.off(this.usedGpa), 2);
    const usedIdx = Atomics.load(u16, 1);
    let n = 0;
    while (this.lastUsed !== usedIdx) {
      const o = this.mem.off(this.usedGpa) + 4 + 8 * (this.lastUsed % this.size);
      const id = this.mem.view.getUint32(o, true);
      const len = this.mem.view.getUint32(o + 4, true);
      out.push({ id, len });
      const ids = this.chainIds.get(id);
      if (ids) {
        this.free.push(...ids);
        this.chainIds.delete(id);
      }
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      n++;
    }
    return n;
  }
}
