// What a reactor needs from a device kind (virtio-blk, virtio-scsi, ...): build the device from a
// structured-cloneable spec, hand each queue a request handler, reap backend completions, take
// device-specific control requests. The reactor names no kind; src/devices/kinds.ts lists them.
import type { QueueRunner, RequestHandler } from '../virtio/queue-runner.js';

/** The description a reactor builds a device from; `kind` selects the DeviceKind. */
export interface DeviceSpec {
  readonly kind: string;
  /** Controller name, for logs and statistics. */
  readonly name: string;
  /** Serve every queue on one reactor, the same for every device with this key (Bdev.threadAffinity). */
  readonly affinity?: string;
}

/** A device as one reactor runs it. */
export interface Device {
  /** The request handler of one of the device's queues. */
  handlerFor(runner: QueueRunner): RequestHandler;
  /** Reaps completions of backends that poll (io_uring, rbd); returns how many completed. */
  poll(): number;
  /** A device-specific control request (SCSI hot-plug); throws for actions the kind lacks. */
  control(action: string, arg: unknown): void | Promise<void>;
  /** Lets go of the device's backends once its queues stopped. */
  close(): Promise<void>;
}

export interface DeviceKind {
  readonly kind: string;
  create(spec: DeviceSpec, warn: (msg: string) => void): Device;
}

/** The error for a control action a device kind does not have. */
export function unknownControl(kind: string, action: string): Error {
  return new Error(`${kind} devices have no control action ${JSON.stringify(action)}`);
}
