// One preallocated virtio-blk request per ring slot, reused for the life of the queue. It is the
// BdevIo handed to the bdev, so submitting allocates nothing. A request the bdev refuses with
// NOMEM (queue full) is not answered: it waits in the device's NomemQueue, linked through its own
// fields, and goes to the bdev again once the channel has room.
import { CountedIo, IoStatus, IoVecs } from '../../bdev/io.js';
import type { NomemQueue, NomemWaiter } from '../../bdev/nomem-queue.js';
import type { QueueRunner } from '../../virtio/queue-runner.js';
import { BlkStatus } from './blk-spec.js';

export class BlkRequest extends CountedIo implements NomemWaiter<BlkRequest> {
  readonly iov: IoVecs;
  /** Bytes written into guest buffers besides the status byte. */
  dataIn = 0;
  statusWin: Uint8Array = new Uint8Array(0);
  statusOff = 0;
  /** NomemQueue links. */
  nextRetry: BlkRequest | null = null;
  retryQueued = false;

  constructor(
    readonly head: number,
    readonly runner: QueueRunner,
    capacity: number,
    private readonly nomem: NomemQueue<BlkRequest>,
  ) {
    super();
    this.iov = new IoVecs(capacity);
  }

  /** Writes the virtio status byte and hands the slot back to the ring. */
  finish(status: number): void {
    this.statusWin[this.statusOff] = status;
    this.runner.complete(this.head, status === BlkStatus.OK ? this.dataIn + 1 : 1);
  }

  protected completed(status: IoStatus): void {
    const nomem = this.nomem;
    if (nomem.finished(this, status)) return; // NOMEM: waits for a retry, the guest sees nothing
    this.finish(status === IoStatus.SUCCESS ? BlkStatus.OK : BlkStatus.IOERR);
    nomem.kick();
  }
}
