// Per-bdev I/O statistics (SPDK's bdev_get_iostat), counted on the reactors without messages.
//
// Every registered bdev gets one SharedArrayBuffer (BdevIostat, control thread) that travels in
// its layer share (layer-share.ts); each layer channel counts its completed I/O into it through an
// IostatCounter. The buffer holds IOSTAT_SLOTS slots of Float64 counters:
// each channel claims one slot (Atomics.compareExchange on the slot's owner word) and is its only
// writer, so updates are plain stores with no contention and no lost updates; the control thread
// sums the slots when asked. A closed channel's slot keeps its counts (marked
// dirty); the control thread folds dirty slots into its own totals and frees them, and a channel
// that finds no clean slot takes over a dirty one (its counts stay in the totals either way).
//
// Latencies are nanoseconds from submit to completion at this layer, so the reply's tick_rate is
// 1e9. On a reactor both ends read the poll pass's clock (native/clock.ts): an I/O completed in
// the pass that submitted it (null, malloc) counts 0 ns, others are exact to one pass. The
// counting allocates nothing: a CountedIo (devices' requests) carries its own submission time and
// reports its completion itself; any other BdevIo goes down as a pooled child I/O. Times stay in
// typed arrays (a double stored in an object field, or passed to or returned from a call that is
// not inlined, is a new heap number). Like SPDK, only successful I/O counts in bytes/ops/latency;
// failures count in io_error.failed. SPDK does not count FLUSH or WRITE_ZEROES; vhostd adds them
// as extra keys after SPDK's (num_flush_ops, flush_latency_ticks, bytes_zeroed,
// num_write_zeroes_ops, write_zeroes_latency_ticks).
import { IoStatus, IoType } from './io.js';
import { Ctl } from './layer-share.js';
import { threadSlot } from './thread-slot.js';

/** Slots per bdev; the last one is shared by channels that found none free (racy but rare). */
export const IOSTAT_SLOTS = 64;
/** Float64 words per slot (256 bytes: slots never share a cache line). */
const SLOT_WORDS = 32;
const OWNERS_BYTES = IOSTAT_SLOTS * 4;
/** Ticks per second of the latency counters (nanoseconds). */
export const IOSTAT_TICK_RATE = 1_000_000_000;

// Owner word of a slot.
const FREE = 0;
/** Closed channel's slot: its counts are not yet folded into the control thread's totals. */
const DIRTY = -1;
/** The control thread is folding it. */
const MERGING = -2;
const OVERFLOW_SLOT = IOSTAT_SLOTS - 1;

// A class of I/O: [bytes, ops, latency sum, max latency, min latency (0 = none yet)].
const BYTES = 0;
const OPS = 1;
const LAT = 2;
const MAX = 3;
const MIN = 4;
const READ_AT = 0;
const WRITE_AT = 5;
const UNMAP_AT = 10;
const FLUSH_AT = 15;
const ZEROES_AT = 20;
const FAILED_AT = 25;
/** I/O held by QoS at least once (vhostd's qos_held_ops). */
const HELD_AT = 26;
/** Submission time (ms) of the oldest I/O the slot's channel holds for QoS; 0 when none. */
const WAITING_SINCE = 27;
/** The reset generations (Ctl.RESET_ALL_GEN, RESET_MAXMIN_GEN) the slot's counts belong to. */
const SEEN_ALL = 29;
const SEEN_MM = 30;
/** IoType → offset of its class in a slot. */
const CLASS_AT = new Int8Array(8).fill(-1);
CLASS_AT[IoType.READ] = READ_AT;
CLASS_AT[IoType.WRITE] = WRITE_AT;
CLASS_AT[IoType.UNMAP] = UNMAP_AT;
CLASS_AT[IoType.FLUSH] = FLUSH_AT;
CLASS_AT[IoType.WRITE_ZEROES] = ZEROES_AT;

/** Adds the counters of src's slot at sOff into dst at dOff; max/min too unless `sumsOnly`. */
function addInto(dst: Float64Array, dOff: number, src: Float64Array, sOff: number, sumsOnly = false): void {
  for (let c = 0; c <= ZEROES_AT; c += 5) {
    dst[dOff + c + BYTES] += src[sOff + c + BYTES];
    dst[dOff + c + OPS] += src[sOff + c + OPS];
    dst[dOff + c + LAT] += src[sOff + c + LAT];
    if (sumsOnly) continue;
    dst[dOff + c + MAX] = Math.max(dst[dOff + c + MAX], src[sOff + c + MAX]);
    const m = src[sOff + c + MIN];
    if (m > 0 && (dst[dOff + c + MIN] === 0 || m < dst[dOff + c + MIN])) dst[dOff + c + MIN] = m;
  }
  dst[dOff + FAILED_AT] += src[sOff + FAILED_AT];
  dst[dOff + HELD_AT] += src[sOff + HELD_AT];
}

/** Zeroes the max and min of every class of the slot at `at`. */
function clearMaxMin(s: Float64Array, at: number): void {
  for (let c = 0; c <= ZEROES_AT; c += 5) {
    s[at + c + MAX] = 0;
    s[at + c + MIN] = 0;
  }
}

/** The statistics object of one bdev (or one channel), in SPDK's key order plus vhostd's. */
export interface IoStatJson {
  bytes_read: number;
  num_read_ops: number;
  bytes_written: number;
  num_write_ops: number;
  bytes_unmapped: number;
  num_unmap_ops: number;
  bytes_copied: number;
  num_copy_ops: number;
  read_latency_ticks: number;
  max_read_latency_ticks: number;
  min_read_latency_ticks: number;
  write_latency_ticks: number;
  max_write_latency_ticks: number;
  min_write_latency_ticks: number;
  unmap_latency_ticks: number;
  max_unmap_latency_ticks: number;
  min_unmap_latency_ticks: number;
  copy_latency_ticks: number;
  max_copy_latency_ticks: number;
  min_copy_latency_ticks: number;
  io_error?: Record<string, number>;
  num_flush_ops: number;
  flush_latency_ticks: number;
  bytes_zeroed: number;
  num_write_zeroes_ops: number;
  write_zeroes_latency_ticks: number;
  qos_held_ops: number;
}

function toJson(s: Float64Array, o: number, withErrors: boolean): IoStatJson {
  const r = Math.round;
  const out: Record<string, unknown> = {
    bytes_read: s[o + READ_AT + BYTES],
    num_read_ops: s[o + READ_AT + OPS],
    bytes_written: s[o + WRITE_AT + BYTES],
    num_write_ops: s[o + WRITE_AT + OPS],
    bytes_unmapped: s[o + UNMAP_AT + BYTES],
    num_unmap_ops: s[o + UNMAP_AT + OPS],
    bytes_copied: 0,
    num_copy_ops: 0,
    read_latency_ticks: r(s[o + READ_AT + LAT]),
    max_read_latency_ticks: r(s[o + READ_AT + MAX]),
    min_read_latency_ticks: r(s[o + READ_AT + MIN]),
    write_latency_ticks: r(s[o + WRITE_AT + LAT]),
    max_write_latency_ticks: r(s[o + WRITE_AT + MAX]),
    min_write_latency_ticks: r(s[o + WRITE_AT + MIN]),
    unmap_latency_ticks: r(s[o + UNMAP_AT + LAT]),
    max_unmap_latency_ticks: r(s[o + UNMAP_AT + MAX]),
    min_unmap_latency_ticks: r(s[o + UNMAP_AT + MIN]),
    copy_latency_ticks: 0,
    max_copy_latency_ticks: 0,
    min_copy_latency_ticks: 0,
  };
  // SPDK prints io_error (the statuses that occurred) for device stats, not per channel.
  if (withErrors) {
    const failed = s[o + FAILED_AT];
    out.io_error = failed > 0 ? { failed } : {};
  }
  // vhostd's extension keys, after SPDK's.
  out.num_flush_ops = s[o + FLUSH_AT + OPS];
  out.flush_latency_ticks = r(s[o + FLUSH_AT + LAT]);
  out.bytes_zeroed = s[o + ZEROES_AT + BYTES];
  out.num_write_zeroes_ops = s[o + ZEROES_AT + OPS];
  out.write_zeroes_latency_ticks = r(s[o + ZEROES_AT + LAT]);
  out.qos_held_ops = s[o + HELD_AT];
  return out as unknown as IoStatJson;
}

/** bdev_reset_iostat's modes (SPDK's spdk_bdev_reset_stat_mode). */
export type IostatResetMode = 'all' | 'maxmin';

/** Control-thread side: owns the buffer and the totals of channels that have gone. */
export class BdevIostat {
  readonly buffer = new SharedArrayBuffer(OWNERS_BYTES + IOSTAT_SLOTS * SLOT_WORDS * 8);
  private readonly owners = new Int32Array(this.buffer, 0, IOSTAT_SLOTS);
  private readonly counters = new Float64Array(this.buffer, OWNERS_BYTES);
  private readonly retired = new Float64Array(SLOT_WORDS);
  private readonly ctl: Int32Array;

  /** `control`: the layer's control words (reset generations). */
  constructor(control: SharedArrayBuffer = new SharedArrayBuffer(Ctl.WORDS * 4)) {
    this.ctl = new Int32Array(control);
  }

  /** Adds slot i's counts that belong to the current generations into dst. */
  private addSlot(dst: Float64Array, dOff: number, i: number): void {
    const at = i * SLOT_WORDS;
    const c = this.counters;
    if (c[at + SEEN_ALL] !== this.ctl[Ctl.RESET_ALL_GEN]) return; // reset since; the channel clears it
    addInto(dst, dOff, c, at, c[at + SEEN_MM] !== this.ctl[Ctl.RESET_MAXMIN_GEN]);
  }

  /** Folds the slots of closed channels into `retired` and frees them. */
  private foldClosed(): void {
    for (let i = 0; i < OVERFLOW_SLOT; i++) {
      if (Atomics.load(this.owners, i) !== DIRTY) continue;
      if (Atomics.compareExchange(this.owners, i, DIRTY, MERGING) !== DIRTY) continue; // a channel took it over
      this.addSlot(this.retired, 0, i);
      this.counters.fill(0, i * SLOT_WORDS, (i + 1) * SLOT_WORDS);
      Atomics.store(this.owners, i, FREE);
    }
  }

  /** The device statistics: everything counted since the bdev was registered (or last reset). */
  device(): IoStatJson {
    this.foldClosed();
    const total = Float64Array.from(this.retired);
    for (let i = 0; i < IOSTAT_SLOTS; i++) this.addSlot(total, 0, i);
    return toJson(total, 0, true);
  }

  /** One entry per open channel, with the id of the thread it runs on (thread_get_stats ids). */
  channels(): Array<{ thread_id: number } & IoStatJson> {
    this.foldClosed();
    const out: Array<{ thread_id: number } & IoStatJson> = [];
    for (let i = 0; i < IOSTAT_SLOTS; i++) {
      const owner = Atomics.load(this.owners, i);
      if (owner <= 0) continue;
      const one = new Float64Array(SLOT_WORDS);
      this.addSlot(one, 0, i);
      out.push({ thread_id: owner - 1, ...toJson(one, 0, false) });
    }
    return out;
  }

  /**
   * bdev_reset_iostat: `all` zeroes every counter, `maxmin` only the max and min latencies. Slots
   * of open channels are cleared by their channel before its next count (see the file comment).
   */
  reset(mode: IostatResetMode): void {
    this.foldClosed();
    if (mode === 'all') {
      this.retired.fill(0);
      Atomics.add(this.ctl, Ctl.RESET_ALL_GEN, 1);
    } else {
      clearMaxMin(this.retired, 0);
    }
    Atomics.add(this.ctl, Ctl.RESET_MAXMIN_GEN, 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Reactor side.

/**
 * Counts the I/O of one layer channel into the slot it claimed in the bdev's buffer. The caller
 * (the layer channel) times the I/O; nothing here allocates.
 */
export class IostatCounter {
  private readonly owners: Int32Array;
  private readonly s: Float64Array;
  private readonly ctl: Int32Array;
  private readonly slot: number;
  private readonly at: number;
  private closed = false;

  constructor(buffer: SharedArrayBuffer, control: SharedArrayBuffer) {
    this.owners = new Int32Array(buffer, 0, IOSTAT_SLOTS);
    this.s = new Float64Array(buffer, OWNERS_BYTES);
    this.ctl = new Int32Array(control);
    // Owner word: the thread_get_stats id + 1 (0 is FREE).
    this.slot = IostatCounter.claim(this.owners, threadSlot() + 1);
    this.at = this.slot * SLOT_WORDS;
  }

  /** A clean slot, else a closed channel's one (its counts stay), else the shared last slot. */
  private static claim(owners: Int32Array, tag: number): number {
    for (const from of [FREE, DIRTY]) {
      for (let i = 0; i < OVERFLOW_SLOT; i++) {
        if (Atomics.load(owners, i) === from && Atomics.compareExchange(owners, i, from, tag) === from) return i;
      }
    }
    return OVERFLOW_SLOT;
  }

  /** Clears what bdev_reset_iostat reset since this slot last counted. */
  private resync(): void {
    const s = this.s;
    const at = this.at;
    const all = this.ctl[Ctl.RESET_ALL_GEN];
    if (s[at + SEEN_ALL] !== all) s.fill(0, at, at + SEEN_ALL);
    else clearMaxMin(s, at);
    s[at + SEEN_ALL] = all;
    s[at + SEEN_MM] = this.ctl[Ctl.RESET_MAXMIN_GEN];
  }

  /** Counts one finished I/O of `length` bytes that took `ns` nanoseconds. */
  count(type: IoType, length: number, ns: number, status: IoStatus): void {
    const s = this.s;
    const at = this.at;
    if (s[at + SEEN_ALL] !== this.ctl[Ctl.RESET_ALL_GEN] || s[at + SEEN_MM] !== this.ctl[Ctl.RESET_MAXMIN_GEN]) this.resync();
    if (status === IoStatus.SUCCESS) {
      const k = CLASS_AT[type];
      if (k >= 0) {
        const o = at + k;
        // 0 ns (completed in the pass that submitted it) still marks the class as seen.
        const dt = ns || Number.MIN_VALUE;
        s[o + BYTES] += k === FLUSH_AT ? 0 : length;
        s[o + OPS] += 1;
        s[o + LAT] += dt;
        if (dt > s[o + MAX]) s[o + MAX] = dt;
        const m = s[o + MIN];
        if (m === 0 || dt < m) s[o + MIN] = dt;
      }
    } else if (status === IoStatus.FAILED) {
      s[at + FAILED_AT] += 1;
    }
  }

  /** Counts an I/O QoS held for a later time slice. */
  held(): void {
    this.s[this.at + HELD_AT] += 1;
  }

  /** Publishes when this channel's oldest held I/O was submitted (0: it holds none). */
  waitingSince(ms: number): void {
    this.s[this.at + WAITING_SINCE] = ms;
  }

  /** Whether another channel of the bdev holds an I/O submitted before `ms` (it goes first). */
  olderWaiter(ms: number): boolean {
    const s = this.s;
    for (let i = 0; i < IOSTAT_SLOTS; i++) {
      const t = s[i * SLOT_WORDS + WAITING_SINCE];
      if (t > 0 && t < ms && i !== this.slot) return true;
    }
    return false;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.s[this.at + WAITING_SINCE] = 0;
    if (this.slot !== OVERFLOW_SLOT) Atomics.store(this.owners, this.slot, DIRTY);
  }
}
