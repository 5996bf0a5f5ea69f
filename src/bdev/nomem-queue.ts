// The I/O a backend refused with NOMEM, waiting to be submitted again (SPDK's bdev layer: the
// shared resource's nomem_io list). One queue per layer channel (layer-channel.ts). A NOMEM
// completion is not a completion: the layer parks the I/O here instead of completing it, and the
// queue hands it back, oldest first, once the backend has room again:
// * when another I/O of the channel completes and the number still at the bdev has dropped to the
//   threshold set at the last NOMEM (half of what was outstanding then, or 8 fewer, whichever is
//   more: SPDK's nomem_threshold), so each retry meets a bdev that has made room;
// * on the next turn of the event loop (the `schedule` callback, setImmediate) when nothing was
//   outstanding at the NOMEM, since then no completion will come (SPDK's nomem poller);
// * when the channel's poll() calls kick() (the reactor polls it every pass while busy), under
//   the same threshold.
// While I/O waits, new I/O queues behind it (admit), so the bdev sees requests in
// the order they came as far as the refusals allow; a retried I/O refused again goes back to the
// head and the retry pass stops there.
//
// The queue is intrusive: the links live in the waiting objects themselves (the devices'
// preallocated requests), so queueing and retrying allocate nothing; the only allocation is the
// Immediate of the event-loop fallback, once per NOMEM with nothing outstanding.
import { IoStatus } from './io.js';

/** The fields an object needs to wait in a NomemQueue (owned by the queue while it waits). */
export interface NomemWaiter<T> {
  nextRetry: T | null;
  retryQueued: boolean;
}

/** SPDK's NOMEM_THRESHOLD_COUNT: retry once this many fewer I/O are outstanding than at the NOMEM. */
export const NOMEM_THRESHOLD_COUNT = 8;

export class NomemQueue<T extends NomemWaiter<T>> {
  private head: T | null = null;
  private tail: T | null = null;
  private count = 0;
  /** I/O admitted and not yet finished: at the bdev. */
  private outstanding = 0;
  /** Retry once outstanding is at most this (set at each NOMEM). */
  private threshold = 0;
  /** The waiter run() is resubmitting right now. */
  private current: T | null = null;
  /** The current waiter was refused again during its resubmission. */
  private refused = false;
  private running = false;
  private scheduled = false;
  private readonly onSchedule = (): void => {
    this.scheduled = false;
    this.run();
  };

  /**
   * `resubmit` starts a waiter again (it calls admit() and submits, or completes it otherwise);
   * `schedule` defers a call to the next event-loop turn.
   */
  constructor(
    private readonly resubmit: (w: T) => void,
    private readonly schedule: (fn: () => void) => void = setImmediate,
  ) {}

  /** I/O waiting for a retry. */
  get length(): number {
    return this.count;
  }

  /** I/O admitted to the bdev and not yet finished. */
  get inFlight(): number {
    return this.outstanding;
  }

  /**
   * Call before submitting `w` to the bdev: true when it may go (it is then outstanding until
   * finished() is called for it); false when it was queued behind the I/O already waiting.
   */
  admit(w: T): boolean {
    if (this.head === null || this.current === w) {
      this.outstanding++;
      return true;
    }
    this.append(w);
    if (this.outstanding === 0) this.arm();
    return false;
  }

  /**
   * Call on every completion of an admitted I/O. NOMEM: `w` now waits here and true is returned
   * (the device must not complete it); else false. Completions other than NOMEM should be
   * followed by kick(), once the device is done with the completed I/O.
   */
  finished(w: T, status: IoStatus): boolean {
    const n = --this.outstanding;
    if (status !== IoStatus.NOMEM) return false;
    this.threshold = n - NOMEM_THRESHOLD_COUNT > n >> 1 ? n - NOMEM_THRESHOLD_COUNT : n >> 1;
    if (w === this.current) {
      // Refused again while run() resubmitted it: it keeps its place at the head.
      this.current = null;
      this.refused = true;
      w.retryQueued = true;
      w.nextRetry = this.head;
      this.head = w;
      if (this.tail === null) this.tail = w;
      this.count++;
    } else {
      this.append(w);
    }
    if (n === 0) this.arm();
    return true;
  }

  /** Retries waiting I/O if the bdev has made enough room since the last NOMEM; returns how many went. */
  kick(): number {
    if (this.head === null || this.outstanding > this.threshold) return 0;
    return this.run();
  }

  /**
   * Resubmits waiting I/O in order until the queue is empty or one is refused again; returns how
   * many were resubmitted and not refused. Not re-entered from the completions it causes.
   */
  run(): number {
    if (this.running || this.head === null) return 0;
    this.running = true;
    let n = 0;
    try {
      for (let w: T | null = this.head; w !== null; w = this.head) {
        this.head = w.nextRetry;
        if (this.head === null) this.tail = null;
        w.nextRetry = null;
        w.retryQueued = false;
        this.count--;
        this.current = w;
        this.refused = false;
        this.resubmit(w);
        if (this.refused) break;
        n++;
      }
    } finally {
      this.current = null;
      this.running = false;
    }
    return n;
  }

  /** Takes `w` out of the queue (an abort); false when it was not waiting. */
  remove(w: T): boolean {
    if (!w.retryQueued) return false;
    let prev: T | null = null;
    for (let t = this.head; t !== null; prev = t, t = t.nextRetry) {
      if (t !== w) continue;
      if (prev === null) this.head = t.nextRetry;
      else prev.nextRetry = t.nextRetry;
      if (this.tail === t) this.tail = prev;
      this.count--;
      break;
    }
    w.nextRetry = null;
    w.retryQueued = false;
    return true;
  }

  /** The first waiting I/O `pred` accepts (an abort looking for its I/O), or null. */
  find(pred: (w: T) => boolean): T | null {
    for (let t = this.head; t !== null; t = t.nextRetry) if (pred(t)) return t;
    return null;
  }

  /** Forgets every waiting I/O (the device is closing); returns them in order, for the caller to finish. */
  clear(): T[] {
    const out: T[] = [];
    let t = this.head;
    this.head = this.tail = null;
    this.count = 0;
    while (t !== null) {
      const next = t.nextRetry;
      t.nextRetry = null;
      t.retryQueued = false;
      out.push(t);
      t = next;
    }
    return out;
  }

  private append(w: T): void {
    w.retryQueued = true;
    w.nextRetry = null;
    if (this.tail === null) this.head = w;
    else this.tail.nextRetry = w;
    this.tail = w;
    this.count++;
  }

  private arm(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(this.onSchedule);
  }
}
