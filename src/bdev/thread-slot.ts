// Which per-thread block of a shared counter buffer this thread writes: 0 on the control thread,
// reactor index + 1 on a reactor (the id thread_get_stats shows).
import { isMainThread, workerData } from 'node:worker_threads';

let slot: number | undefined;

export function threadSlot(): number {
  if (slot !== undefined) return slot;
  const index = isMainThread ? undefined : (workerData as { index?: unknown } | null)?.index;
  slot = typeof index === 'number' && Number.isInteger(index) && index >= 0 ? index + 1 : 0;
  return slot;
}
