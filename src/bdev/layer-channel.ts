// The bdev layer between a device and a backend (SPDK's generic bdev layer, lib/bdev/bdev.c):
// every device I/O, and every I/O a vbdev sends to its base, goes through one LayerChannel per
// open channel, which owns what is common to all backends:
// * QoS: an I/O over the bdev's rate limit is held and released in a later 1 ms slice (qos.ts),
//   never failed. Held I/O is released by the reactor's poll while it polls and by a 1 ms timer
//   while it sleeps; new I/O queues behind it (order is kept). Across the channels of a bdev
//   (several controllers, several reactors) the oldest held I/O goes first: a channel yields the
//   budget while another one holds older I/O, so no controller starves another;
// * NOMEM: an I/O the backend refuses because its queue is full waits in the channel's
//   NomemQueue and goes again once the backend has made room: no device sees NOMEM;
// * statistics (iostat.ts) and latency histograms (histogram.ts), timed from submission here
//   (QoS waits included, as SPDK) to the backend's completion.
// Devices' requests extend LayerIo and are handled in place; any other BdevIo is wrapped in a
// pooled child LayerIo. Nothing here allocates per I/O.
import type { BdevChannel } from './bdev.js';
import { type BdevIo, type IoLayer, IoStatus, type IoVecs, LayerIo } from './io.js';
import { IostatCounter } from './iostat.js';
import { HistogramRecorder } from './histogram.js';
import type { LayerShare } from './bdev.js';
import { Ctl } from './layer-share.js';
import { NomemQueue } from './nomem-queue.js';
import { QOS_TIMESLICE_MS, QosGate } from './qos.js';
import { clock, refreshClock } from '../native/clock.js';

/** A plain BdevIo's stand-in inside the layer, reused from the channel's free list. */
class ChildLayerIo extends LayerIo {
  iov!: IoVecs;
  parent: BdevIo | undefined = undefined;
  nextFree: ChildLayerIo | null = null;

  constructor(private readonly owner: LayerChannel) {
    super();
  }

  completed(status: IoStatus): void {
    const parent = this.parent as BdevIo;
    this.parent = undefined;
    this.owner.releaseChild(this);
    parent.complete(status);
  }
}

/**
 * Requests QoS holds in all of this thread's channels. A reactor reads it once per pass: they wait
 * for the limit's timer, not for a backend (module state is per thread: each reactor is a worker).
 */
let qosHeld = 0;

export function qosHeldOnThread(): number {
  return qosHeld;
}

export class LayerChannel implements BdevChannel, IoLayer {
  readonly poll: () => number;
  private readonly stats: IostatCounter;
  private readonly qos: QosGate;
  private readonly histogram: HistogramRecorder;
  private readonly ctl: Int32Array;
  private readonly nomem: NomemQueue<LayerIo>;
  /** I/O held by QoS, oldest first (linked through nextRetry). */
  private heldHead: LayerIo | null = null;
  private heldTail: LayerIo | null = null;
  private heldCount = 0;
  private timer: NodeJS.Timeout | undefined = undefined;
  private timerArmed = false;
  private freeChildren: ChildLayerIo | null = null;
  private closed = false;
  private readonly onTimer = (): void => {
    this.timerArmed = false;
    this.releaseHeld();
  };

  constructor(
    private readonly inner: BdevChannel,
    share: LayerShare,
  ) {
    this.stats = new IostatCounter(share.iostat, share.control);
    this.qos = new QosGate(share.control);
    this.histogram = new HistogramRecorder(share.histogram);
    this.ctl = new Int32Array(share.control);
    this.nomem = new NomemQueue<LayerIo>((io) => this.send(io));
    const innerPoll = inner.poll?.bind(inner);
    this.poll =
      innerPoll === undefined
        ? () => (this.heldHead === null && this.nomem.length === 0 ? 0 : this.retry())
        : () => {
            const n = innerPoll();
            return this.heldHead === null && this.nomem.length === 0 ? n : n + this.retry();
          };
  }

  /** I/O waiting in this channel: held by QoS or for a NOMEM retry. */
  get waiting(): number {
    return this.heldCount + this.nomem.length;
  }

  submit(io: BdevIo): void {
    const lio = io instanceof LayerIo && io.layer === undefined ? io : this.child(io);
    lio.layer = this;
    refreshClock();
    lio.submittedAt[0] = clock[0];
    if (this.qos.active && (this.heldHead !== null || this.ctl[Ctl.QOS_WAITING] !== 0 || !this.qos.admit(lio.type, lio.length, clock[0]))) {
      this.hold(lio);
      return;
    }
    this.send(lio);
  }

  /** To the backend, unless I/O refused with NOMEM waits (then behind it). */
  private send(io: LayerIo): void {
    if (!this.nomem.admit(io)) return;
    try {
      this.inner.submit(io);
    } catch {
      // A backend that throws instead of completing: the I/O fails, the channel goes on.
      if (io.layer === this && !io.retryQueued) this.ioDone(io, IoStatus.FAILED);
    }
  }

  ioDone(io: LayerIo, status: IoStatus): void {
    if (this.nomem.finished(io, status)) return; // waits for a retry
    io.layer = undefined;
    refreshClock();
    const ns = (clock[0] - io.submittedAt[0]) * 1e6;
    this.stats.count(io.type, io.length, ns, status);
    if ((this.ctl[Ctl.HIST_TYPES] & (1 << io.type)) !== 0 && status === IoStatus.SUCCESS) this.histogram.record(ns);
    io.completed(status);
    if (this.nomem.length !== 0) this.nomem.kick();
  }

  /** Releases held I/O the budget allows and retries NOMEM I/O; returns how many went. */
  private retry(): number {
    let n = this.heldHead === null ? 0 : this.releaseHeld();
    if (this.nomem.length !== 0) n += this.nomem.kick();
    return n;
  }

  private hold(io: LayerIo): void {
    io.retryQueued = true;
    io.nextRetry = null;
    if (this.heldTail === null) this.setHead(io);
    else this.heldTail.nextRetry = io;
    this.heldTail = io;
    this.heldCount++;
    qosHeld++;
    this.stats.held();
    this.armTimer();
  }

  /** Sends held I/O, oldest first, while the budget lasts (all of it once QoS is off). */
  private releaseHeld(): number {
    let n = 0;
    refreshClock();
    const now = clock[0];
    const contended = this.ctl[Ctl.QOS_WAITING] > 1;
    for (let io = this.heldHead; io !== null; io = this.heldHead) {
      if (this.qos.active) {
        if (contended && this.stats.olderWaiter(io.submittedAt[0])) break;
        if (!this.qos.admit(io.type, io.length, now)) break;
      }
      this.setHead(io.nextRetry);
      if (this.heldHead === null) this.heldTail = null;
      io.nextRetry = null;
      io.retryQueued = false;
      this.heldCount--;
      qosHeld--;
      this.send(io);
      n++;
    }
    if (this.heldHead !== null) this.armTimer();
    return n;
  }

  /** One timer per channel, re-armed (not re-created) while I/O is held: the reactor may sleep. */
  private armTimer(): void {
    if (this.timerArmed || this.closed) return;
    this.timerArmed = true;
    if (this.timer === undefined) this.timer = setTimeout(this.onTimer, QOS_TIMESLICE_MS);
    else this.timer.refresh();
  }

  /**
   * Takes `io` out of the channel if it has not reached the backend yet (held by QoS or waiting
   * for a NOMEM retry); true when it did: the I/O will not complete, its owner finishes it.
   */
  abort(io: BdevIo): boolean {
    let lio: LayerIo | null = io instanceof LayerIo ? io : null;
    if (lio === null) {
      // A plain BdevIo waits as a child: find it.
      for (let t = this.heldHead; t !== null; t = t.nextRetry) if (t instanceof ChildLayerIo && t.parent === io) lio = t;
      lio ??= this.nomem.find((t) => t instanceof ChildLayerIo && t.parent === io);
      if (lio === null) return false;
    }
    if (lio.layer !== this || !lio.retryQueued) return false;
    if (!this.unhold(lio) && !this.nomem.remove(lio)) return false;
    lio.layer = undefined;
    if (lio instanceof ChildLayerIo) {
      lio.parent = undefined;
      this.releaseChild(lio);
    }
    return true;
  }

  /**
   * Sets the first held I/O and publishes its age to the bdev's other channels; counts this
   * channel among the bdev's waiting ones while it holds any.
   */
  private setHead(io: LayerIo | null): void {
    const was = this.heldHead;
    this.heldHead = io;
    this.stats.waitingSince(io === null ? 0 : io.submittedAt[0] || Number.MIN_VALUE);
    if (was === null && io !== null) Atomics.add(this.ctl, Ctl.QOS_WAITING, 1);
    else if (was !== null && io === null) Atomics.sub(this.ctl, Ctl.QOS_WAITING, 1);
  }

  /** Takes `io` out of the QoS hold list; false when it is not there. */
  private unhold(io: LayerIo): boolean {
    let prev: LayerIo | null = null;
    for (let t = this.heldHead; t !== null; prev = t, t = t.nextRetry) {
      if (t !== io) continue;
      if (prev === null) this.setHead(t.nextRetry);
      else prev.nextRetry = t.nextRetry;
      if (this.heldTail === t) this.heldTail = prev;
      this.heldCount--;
      qosHeld--;
      io.nextRetry = null;
      io.retryQueued = false;
      return true;
    }
    return false;
  }

  private child(io: BdevIo): ChildLayerIo {
    const c = this.freeChildren ?? new ChildLayerIo(this);
    this.freeChildren = c.nextFree;
    c.nextFree = null;
    c.parent = io;
    c.type = io.type;
    c.offset = io.offset;
    c.length = io.length;
    c.iov = io.iov;
    return c;
  }

  /** @internal */
  releaseChild(c: ChildLayerIo): void {
    c.nextFree = this.freeChildren;
    this.freeChildren = c;
  }

  /**
   * Closes the channel below. I/O still waiting here belongs to queues given up on (their device
   * stopped without them): it is dropped.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.nomem.clear();
    this.setHead(null);
    this.heldTail = null;
    qosHeld -= this.heldCount;
    this.heldCount = 0;
    this.inner.close();
    this.stats.close();
  }
}
