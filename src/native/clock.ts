// A monotonic clock (milliseconds, CLOCK_MONOTONIC) that allocates nothing to read. Node 20's
// clocks allocate on every read (performance.now() returns a boxed double, hrtime() an array)
// and the data path reads the clock per poll pass and per I/O (iostat, coalescing), so the addon
// writes the time into this thread's `clock` cell and callers read it from there.
//
// Inside a reactor poll pass the cell holds the pass's start time (SPDK's
// spdk_thread_get_last_tsc): everything in the pass shares one clock read.
import { native } from './index.js';

/** [0]: time (ms) of the last tick; [1]: 1 while a poll pass runs, so [0] is current enough. */
export const clock = new Float64Array(new SharedArrayBuffer(16));
if (native.clockRegister(clock) !== 0) throw new Error('clockRegister failed');

/** Reads CLOCK_MONOTONIC into clock[0]. */
export const tick: () => void = native.clockTick;

/**
 * Brings clock[0] up to date unless a poll pass already did. Hot paths call this and then read
 * clock[0] themselves: returning the double from a function that is not inlined would box it.
 */
export function refreshClock(): void {
  if (clock[1] === 0) tick();
}

/** The current time in ms (the pass's time inside a poll pass). For code off the hot path. */
export function clockMs(): number {
  refreshClock();
  return clock[0];
}

/** Starts a poll pass at the time in clock[0] (the caller ticked): everything in the pass uses it. */
export function beginPass(): void {
  clock[1] = 1;
}

export function endPass(): void {
  clock[1] = 0;
}
