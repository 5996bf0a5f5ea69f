// The two locks of the engine. Metadata (L1, L2 and refcount changes, allocation, write-back)
// is changed by one operation at a time: `Mutex`. Guest clusters that a write is allocating,
// zeroing or discarding are held from the moment their mapping is looked up until the new
// mapping is committed, so two requests never allocate the same guest cluster twice and a
// discard never frees a cluster a write is still writing into: `ClusterRangeLock`. Requests
// on disjoint clusters proceed in parallel (their data I/O is outside the mutex).

export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

interface Range {
  start: number;
  end: number;
  /** Set while queued: grants the lock. */
  wake?: () => void;
}

/** Exclusive locks on ranges [start, end) of guest cluster indices, granted in FIFO order among overlapping ranges. */
export class ClusterRangeLock {
  private readonly held: Range[] = [];
  private readonly waiting: Range[] = [];

  /** Resolves with the release function once no held or earlier-queued range overlaps. */
  acquire(start: number, end: number): Promise<() => void> {
    const r: Range = { start, end };
    const release = () => this.release(r);
    if (!this.blocked(r, this.waiting.length)) {
      this.held.push(r);
      return Promise.resolve(release);
    }
    return new Promise((resolve) => {
      r.wake = () => resolve(release);
      this.waiting.push(r);
    });
  }

  /**
   * Takes [start, end) now if nothing holds or waits for an overlapping range (the write fast
   * path must not wait); returns its release function, or undefined.
   */
  tryAcquire(start: number, end: number): (() => void) | undefined {
    const r: Range = { start, end };
    if (this.blocked(r, this.waiting.length)) return undefined;
    this.held.push(r);
    return () => this.release(r);
  }

  private blocked(r: Range, waitersBefore: number): boolean {
    const overlaps = (o: Range) => o.start < r.end && r.start < o.end;
    if (this.held.some(overlaps)) return true;
    for (let i = 0; i < waitersBefore; i++) if (overlaps(this.waiting[i]!)) return true;
    return false;
  }

  private release(r: Range): void {
    const i = this.held.indexOf(r);
    if (i < 0) return; // released twice
    this.held.splice(i, 1);
    for (let w = 0; w < this.waiting.length; ) {
      const waiter = this.waiting[w]!;
      if (this.blocked(waiter, w)) {
        w++;
        continue;
      }
      this.waiting.splice(w, 1);
      this.held.push(waiter);
      const wake = waiter.wake!;
      delete waiter.wake;
      wake();
    }
  }
}
