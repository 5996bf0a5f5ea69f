// The ring operations a QueueRunner needs, implemented by the split and the packed layout.
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Chain, ChainWalker } from './desc-chain.js';

export interface RingAddresses {
  /** Descriptor table (split) or descriptor ring (packed). */
  descGpa: number;
  /** Avail ring (split) or driver event suppression area (packed). */
  availGpa: number;
  /** Used ring (split) or device event suppression area (packed). */
  usedGpa: number;
}

export class QueueError extends Error {}

export interface Virtqueue {
  readonly size: number;
  /** (Re)binds ring views; throws QueueError when the rings are not inside guest memory. */
  bind(mem: GuestMemory, addrs: RingAddresses, resume: boolean): void;
  /** Walks the next available chain into `chain`; returns its id, or -1 when none. Throws QueueError. */
  pop(walker: ChainWalker, chain: Chain): number;
  /** Whether a chain is available (for the check before sleeping). */
  hasAvailable(): boolean;
  pushUsed(id: number, len: number): void;
  /** Makes every pushed used entry visible to the driver. */
  publishUsed(): void;
  /** Whether the driver wants an interrupt for the entries published since the last signal. */
  needsSignal(): boolean;
  enableNotifications(): void;
  disableNotifications(): void;
  /** Requests a previous process left in flight that this queue resubmits first. */
  readonly pendingResubmits: number;
  /** The vring base for GET_VRING_BASE (packed: index | avail wrap counter << 15). */
  vringBase(): number;
  /**
   * Walks the chain of an in-flight request again (split rings: its descriptors stay the
   * driver's until the request is used); returns a ChainError code, or -1 for a layout whose
   * descriptors may already be overwritten (packed).
   */
  walkAgain(walker: ChainWalker, chain: Chain, head: number): number;
}
