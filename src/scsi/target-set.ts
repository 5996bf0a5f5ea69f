// The SCSI targets of one virtio-scsi controller (session): up to 8 target slots, each holding one
// logical unit (LUN 0), addressed by the 8-byte virtio-scsi LUN field. Mirrors the slot states of
// SPDK's vhost_scsi.c: an empty slot answers BAD TARGET; a slot whose target is being or has been
// hot-removed still resolves (commands get LOGICAL UNIT NOT SUPPORTED, so the guest notices the
// removal through sense data too) until release() empties it.
import { VhostdError } from '../util/errors.js';
import { MAX_TARGETS } from './constants.js';
import { lunAddressLun, lunAddressTarget } from './lun-address.js';
import type { ScsiLun } from './lun.js';
import { executeNullLun } from './null-lun.js';
import { type ScsiTask, TaskResponse } from './task.js';
import { TmfFunction, TmfResponse } from './tmf.js';

export const TargetState = {
  /** No target: commands and TMFs get BAD TARGET. */
  EMPTY: 0,
  PRESENT: 1,
  /** detach() in progress: waiting for the LUN's tasks to drain. */
  REMOVING: 2,
  /** Detached; commands get LOGICAL UNIT NOT SUPPORTED, TMFs BAD TARGET, until release(). */
  REMOVED: 3,
} as const;
export type TargetState = (typeof TargetState)[keyof typeof TargetState];

const NO_LUNS: readonly number[] = Object.freeze([]);

export class ScsiTargetSet {
  private readonly luns: Array<ScsiLun | null> = new Array<ScsiLun | null>(MAX_TARGETS).fill(null);
  private readonly lunLists: Array<readonly number[]> = new Array<readonly number[]>(MAX_TARGETS).fill(NO_LUNS);
  private readonly states = new Uint8Array(MAX_TARGETS);
  private readonly removals: Array<Promise<void> | null> = new Array<Promise<void> | null>(MAX_TARGETS).fill(null);

  private static checkNum(targetNum: number): void {
    if (!Number.isInteger(targetNum) || targetNum < 0 || targetNum >= MAX_TARGETS) {
      throw VhostdError.errno('EINVAL', `SCSI target number ${targetNum} out of range 0..${MAX_TARGETS - 1}`);
    }
  }

  /** Puts `lun` at target `targetNum` (EINVAL out of range, EEXIST when occupied or being removed). */
  attach(targetNum: number, lun: ScsiLun): void {
    ScsiTargetSet.checkNum(targetNum);
    const st = this.states[targetNum];
    if (st === TargetState.PRESENT || st === TargetState.REMOVING) {
      throw VhostdError.errno('EEXIST', `SCSI target ${targetNum} already occupied`);
    }
    lun.setTargetIdentity(targetNum);
    this.luns[targetNum] = lun;
    this.lunLists[targetNum] = Object.freeze([lun.id]);
    this.states[targetNum] = TargetState.PRESENT;
  }

  /**
   * Hot-detaches the target: its LUN stops taking tasks, and once the tasks in flight completed
   * its channel is closed and the slot becomes REMOVED. Calling it again while removal runs
   * returns the same promise. ENODEV when there is no target.
   */
  detach(targetNum: number): Promise<void> {
    ScsiTargetSet.checkNum(targetNum);
    const st = this.states[targetNum];
    if (st === TargetState.REMOVING) return this.removals[targetNum] as Promise<void>;
    const lun = this.luns[targetNum];
    if (st !== TargetState.PRESENT || lun === null) {
      return Promise.reject(VhostdError.errno('ENODEV', `SCSI target ${targetNum} does not exist`));
    }
    this.states[targetNum] = TargetState.REMOVING;
    this.lunLists[targetNum] = NO_LUNS;
    lun.remove();
    const removal = lun.drain().then(() => {
      lun.close();
      this.luns[targetNum] = null;
      this.removals[targetNum] = null;
      this.states[targetNum] = TargetState.REMOVED;
    });
    this.removals[targetNum] = removal;
    return removal;
  }

  /** Empties a REMOVED slot: from now on its address answers BAD TARGET (SPDK: session restart). */
  release(targetNum: number): void {
    ScsiTargetSet.checkNum(targetNum);
    if (this.states[targetNum] === TargetState.REMOVED) this.states[targetNum] = TargetState.EMPTY;
  }

  state(targetNum: number): TargetState {
    return (this.states[targetNum] ?? TargetState.EMPTY) as TargetState;
  }

  /** The LUN of a PRESENT or REMOVING target. */
  lun(targetNum: number): ScsiLun | null {
    return this.luns[targetNum] ?? null;
  }

  /** Whether any LUN of the target still has tasks executing. */
  hasPendingTasks(targetNum: number): boolean {
    const lun = this.luns[targetNum];
    return lun !== null && lun !== undefined && lun.inFlight > 0;
  }

  /**
   * Executes a command addressed by the 8-byte virtio-scsi LUN field at addr[off..off+8).
   * task.onComplete is called exactly once, possibly before this returns. With no target at the
   * address, task.response is BAD_TARGET (nothing else is meaningful); otherwise OK (or ABORTED)
   * with the SCSI status, sense and residual filled in.
   */
  submit(addr: Uint8Array, off: number, task: ScsiTask): void {
    const t = lunAddressTarget(addr, off);
    const st = t < 0 ? TargetState.EMPTY : this.states[t];
    if (st === TargetState.EMPTY) {
      task.clearResult();
      task.response = TaskResponse.BAD_TARGET;
      task.onComplete(task);
      return;
    }
    const lun = this.luns[t];
    if (lun !== null && st === TargetState.PRESENT && lunAddressLun(addr, off) === lun.id) {
      lun.execute(task);
      return;
    }
    executeNullLun(task, this.lunLists[t]);
    task.onComplete(task);
  }

  /**
   * Runs a task management function addressed by a virtio-scsi LUN field. BAD_TARGET without a
   * target (or once it is REMOVED); INCORRECT_LUN for a LUN that is absent or being removed;
   * otherwise the function's response, after the affected tasks completed.
   */
  async taskManagement(fn: number, addr: Uint8Array, off = 0, tagLo = 0, tagHi = 0): Promise<TmfResponse> {
    const t = lunAddressTarget(addr, off);
    if (t < 0) return TmfResponse.BAD_TARGET;
    const st = this.states[t];
    if (st === TargetState.EMPTY || st === TargetState.REMOVED) return TmfResponse.BAD_TARGET;
    const lun = this.luns[t];
    if (fn === TmfFunction.I_T_NEXUS_RESET) {
      // every LUN of the target, whatever LUN the request names
      if (lun !== null) await lun.abortTaskSet();
      return TmfResponse.FUNCTION_COMPLETE;
    }
    if (lun === null || st !== TargetState.PRESENT || lunAddressLun(addr, off) !== lun.id) return TmfResponse.INCORRECT_LUN;
    switch (fn) {
      case TmfFunction.ABORT_TASK:
        return lun.abortTask(tagLo, tagHi);
      case TmfFunction.ABORT_TASK_SET:
      case TmfFunction.CLEAR_TASK_SET:
        return lun.abortTaskSet();
      case TmfFunction.LOGICAL_UNIT_RESET:
        return lun.reset();
      case TmfFunction.QUERY_TASK:
        return lun.queryTask(tagLo, tagHi);
      case TmfFunction.QUERY_TASK_SET:
        return lun.queryTaskSet();
      default:
        // CLEAR ACA (NACA is not supported) and anything unknown
        return TmfResponse.FUNCTION_REJECTED;
    }
  }

  /** Resolves once every task executing on any target at the time of the call has completed. */
  async drain(): Promise<void> {
    await Promise.all(this.luns.map((lun) => (lun ? lun.drain() : undefined)));
  }
}
