// Views over memory whose pages the kernel may pin for I/O (io_uring fixed buffers), per thread.
// The memory layer says which guest memory qualifies (hugepages: resident anyway, as SPDK needs
// them for the same reason) and when a view goes away; a bdev backend that registered a view
// sees the epoch move and lets go of it. Kept here, below both, so neither imports the other.

const pinnable = new WeakSet<Uint8Array>();

/** [0] moves whenever a view is retired: holders of registrations check it and sweep. */
export const pinEpoch = new Int32Array(1);

/** `view` may be pinned until retire(view). */
export function allowPinning(view: Uint8Array): void {
  pinnable.add(view);
}

/** `view` is going away (its memory region was removed or replaced): registrations must be dropped. */
export function retire(view: Uint8Array): void {
  pinnable.delete(view);
  pinEpoch[0]++;
}

export function mayPin(view: Uint8Array): boolean {
  return pinnable.has(view);
}
