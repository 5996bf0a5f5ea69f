// One preallocated virtio-blk request per ring slot, reused for the life of the queue. It is the
// LayerIo handed to the bdev layer, so submitting allocates nothing; the layer holds it (QoS) or
// resubmits it (a full backend queue) in place and completes it only with success or failure.
import { IoStatus, IoVecs, LayerIo } from '../../bdev/io.js';
import type { QueueRunner } from '../../virtio/queue-runner.js';
import { BlkStatus } from './blk-spec.js';

export class BlkRequest extends LayerIo {
  readonly iov: IoVecs;
  /** Bytes written into guest buffers besides the status byte. */
  dataIn = 0;
  statusWin: Uint8Array = new Uint8Array(0);
  statusOff = 0;

  constructor(
    readonly head: number,
    readonly runner: QueueRunner,
    capacity: number,
  ) {
    super();
    this.iov = new IoVecs(capacity);
  }

  /** Writes the virtio status byte and hands the slot back to the ring. */
  finish(status: number): void {
    this.statusWin[this.statusOff] = status;
    this.runner.complete(this.head, status === BlkStatus.OK ? this.dataIn + 1 : 1);
  }

  completed(status: IoStatus): void {
    this.finish(status === IoStatus.SUCCESS ? BlkStatus.OK : BlkStatus.IOERR);
  }
}
