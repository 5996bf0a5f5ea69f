// What the vhost-user session needs from a device type (blk, scsi): the backend trait of
// rust-vmm's vhost-user-backend, minus event handling (that runs on the reactors).
export interface DeviceModel {
  readonly name: string;
  readonly maxQueues: number;
  /** Virtio features offered (device and transport bits). */
  readonly features: bigint;
  /** Protocol features offered beyond the ones the session handles generically. */
  readonly protocolFeatures: bigint;
  /** Scatter-list capacity of one descriptor chain. */
  readonly chainCapacity: number;
  /** The device's config space. */
  readConfig(): Uint8Array;
}
