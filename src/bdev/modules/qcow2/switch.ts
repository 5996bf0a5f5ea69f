// The live switch of a writable qcow2 bdev to a new top image (bdev_qcow2_snapshot): the shared
// words the control thread and the reactors coordinate through, and the control thread's side.
//
// Every qcow2 ChannelSpec carries two SharedArrayBuffers: `ctl` (Int32 words, CTL below) and
// `desc` (two description slots and an error text). A description is the chain the engines open:
// the top image and its backing files (Qcow2FileShare: path, fd, format, ...), as JSON. Word GEN
// is the generation of the description in effect; the spec itself holds generation `spec.gen`
// (channelSpec() made after a switch holds the new chain), any later one is in slot GEN % 2. A
// reactor opening an engine reads the description of GEN (channel.ts currentDescription).
//
// A switch to generation GEN + 1: the control thread writes the new description into slot
// (GEN + 1) % 2 — nobody reads that slot — and sets STATE to REQUESTED. The reactor whose engine
// owns the image (OWNER) waits on STATE with Atomics.waitAsync, so it sees the request at once
// even when it sleeps; it takes the request (compareExchange REQUESTED -> TAKEN), holds new I/O,
// drains what is in flight, flushes the old image, opens the new chain (the old image read-only
// as the first backing file), sets GEN + 1 and STATE DONE (or FAILED with the reason in `desc`,
// serving the old image on), then resumes the held I/O. When no engine owns the image (no
// channel, or none has I/O yet), the control thread takes OWNER itself (SWITCHER_OWNER) for the
// moment it sets GEN; a reactor that tries to open an engine meanwhile waits and retries. Nobody
// having taken the request by the deadline, the control thread withdraws it (compareExchange
// REQUESTED -> IDLE): the switch fails and the old image is served on. Once taken, the reactor
// bounds its part (drain timeout) and always ends in DONE or FAILED.
import { VhostdError } from '../../../util/errors.js';
import type { ImageFormat } from './chain.js';

/** Int32 words of the spec's `ctl` SharedArrayBuffer. */
export const CTL = { OWNER: 0, ENGINES: 1, GEN: 2, STATE: 3, WORDS: 4 } as const;

/** Values of CTL.STATE. */
export const SWITCH = { IDLE: 0, REQUESTED: 1, TAKEN: 2, DONE: 3, FAILED: 4 } as const;

/** OWNER while the control thread switches an image no engine has open (never a thread's id). */
export const SWITCHER_OWNER = -1;

/** One file of the image or its chain as a reactor opens it (on the fd the bdev holds). */
export interface Qcow2FileShare {
  filename: string;
  fd: number;
  format: ImageFormat;
  direct: boolean;
  /** O_DIRECT alignment; 0 when buffered. */
  dioAlign: number;
  /** On a memory file system: read and written inline (the uring module's inline engine). */
  inline: boolean;
  /** Bytes the file provides to the guest (qcow2 virtual size, raw file size). */
  virtualSize: number;
}

/** The chain engines open: the top image and its backing files, nearest first. */
export interface ChainDescription {
  image: Qcow2FileShare;
  chain: Qcow2FileShare[];
}

/** Bytes of one description slot (JSON): a few hundred chain files. */
export const SLOT_BYTES = 64 * 1024;
const ERROR_BYTES = 1024;
const SLOT_STRIDE = 4 + SLOT_BYTES;
const ERROR_AT = 2 * SLOT_STRIDE;

export function newDescBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(ERROR_AT + 4 + ERROR_BYTES);
}

function putBytes(buf: SharedArrayBuffer, at: number, bytes: Uint8Array): void {
  new DataView(buf).setUint32(at, bytes.byteLength, true);
  new Uint8Array(buf, at + 4, bytes.byteLength).set(bytes);
}

function getText(buf: SharedArrayBuffer, at: number): string {
  const n = new DataView(buf).getUint32(at, true);
  // TextDecoder refuses views of shared memory: copy out first.
  return new TextDecoder().decode(new Uint8Array(buf, at + 4, n).slice());
}

/** The bytes description `d` takes in a slot (refused above SLOT_BYTES). */
export function encodeDescription(d: ChainDescription): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(d));
}

export function writeSlot(buf: SharedArrayBuffer, gen: number, bytes: Uint8Array): void {
  if (bytes.byteLength > SLOT_BYTES) throw new RangeError(`chain description of ${bytes.byteLength} bytes exceeds ${SLOT_BYTES}`);
  putBytes(buf, (gen % 2) * SLOT_STRIDE, bytes);
}

export function readSlot(buf: SharedArrayBuffer, gen: number): ChainDescription {
  return JSON.parse(getText(buf, (gen % 2) * SLOT_STRIDE)) as ChainDescription;
}

export function writeSwitchError(buf: SharedArrayBuffer, msg: string): void {
  let bytes = new TextEncoder().encode(msg);
  if (bytes.byteLength > ERROR_BYTES) bytes = bytes.subarray(0, ERROR_BYTES);
  putBytes(buf, ERROR_AT, bytes);
}

export function readSwitchError(buf: SharedArrayBuffer): string {
  return getText(buf, ERROR_AT);
}

/** The description in effect now: the spec's own (generation specGen), or the slot of GEN. */
export function currentDescription(ctl: SharedArrayBuffer, desc: SharedArrayBuffer, specGen: number, own: ChainDescription): { gen: number; d: ChainDescription } {
  const words = new Int32Array(ctl);
  for (;;) {
    const gen = Atomics.load(words, CTL.GEN);
    if (gen === specGen) return { gen, d: own };
    const d = readSlot(desc, gen);
    // The slot of `gen` is only rewritten for gen + 2, after GEN moved on: unchanged GEN, intact slot.
    if (Atomics.load(words, CTL.GEN) === gen) return { gen, d };
  }
}

export interface SwitchOptions {
  /** How long the request may wait to be taken before it is withdrawn. */
  takeTimeoutMs: number;
  /** Called every `warnEveryMs` while a reactor that took the request has not finished. */
  onSlow?: (ms: number) => void;
  warnEveryMs?: number;
}

/** A switch in progress on this buffer (another snapshot of the same bdev): EBUSY. */
export function switchBusy(ctl: SharedArrayBuffer): boolean {
  const s = Atomics.load(new Int32Array(ctl), CTL.STATE);
  return s === SWITCH.REQUESTED || s === SWITCH.TAKEN;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Control thread: switches the engines of the bdev whose buffers these are to description `d`.
 * Resolves once generation GEN + 1 is in effect; rejects with an RPC error (the old chain still in
 * effect) when the reactor could not switch or nobody took the request in time.
 */
export async function requestSwitch(ctl: SharedArrayBuffer, desc: SharedArrayBuffer, d: ChainDescription, opts: SwitchOptions): Promise<void> {
  const w = new Int32Array(ctl);
  if (switchBusy(ctl)) throw VhostdError.errnoWithDetail('EBUSY', 'another switch of this bdev is under way');
  const target = Atomics.load(w, CTL.GEN) + 1;
  const bytes = encodeDescription(d);
  if (bytes.byteLength > SLOT_BYTES) throw VhostdError.errnoWithDetail('E2BIG', `the backing chain is too long to switch live (${bytes.byteLength} bytes described, at most ${SLOT_BYTES})`);
  writeSlot(desc, target, bytes);
  Atomics.store(w, CTL.STATE, SWITCH.REQUESTED);
  Atomics.notify(w, CTL.STATE);
  const t0 = Date.now();
  let warned = t0;
  for (;;) {
    const s = Atomics.load(w, CTL.STATE);
    if (s === SWITCH.DONE) return;
    if (s === SWITCH.FAILED) throw VhostdError.errnoWithDetail('EIO', `the reactor could not switch to the new image: ${readSwitchError(desc)}`);
    if (s === SWITCH.REQUESTED) {
      if (Atomics.compareExchange(w, CTL.OWNER, 0, SWITCHER_OWNER) === 0) {
        // No engine has the image open: the new description is in effect once GEN says so.
        if (Atomics.compareExchange(w, CTL.STATE, SWITCH.REQUESTED, SWITCH.TAKEN) === SWITCH.REQUESTED) {
          Atomics.store(w, CTL.GEN, target);
          Atomics.store(w, CTL.STATE, SWITCH.DONE);
        }
        Atomics.compareExchange(w, CTL.OWNER, SWITCHER_OWNER, 0);
        Atomics.notify(w, CTL.STATE);
        continue;
      }
      if (Date.now() - t0 >= opts.takeTimeoutMs && Atomics.compareExchange(w, CTL.STATE, SWITCH.REQUESTED, SWITCH.IDLE) === SWITCH.REQUESTED) {
        Atomics.notify(w, CTL.STATE);
        throw VhostdError.errnoWithDetail('ETIMEDOUT', `the reactor serving the image did not take the switch within ${opts.takeTimeoutMs} ms`);
      }
    } else if (s === SWITCH.TAKEN && opts.onSlow !== undefined && Date.now() - warned >= (opts.warnEveryMs ?? 10_000)) {
      warned = Date.now();
      opts.onSlow(warned - t0);
    }
    await sleep(1);
  }
}
