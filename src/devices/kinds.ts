// The device kinds reactors can run, by DeviceSpec.kind. A new kind is one folder plus one line here.
import { blkKind } from './blk/blk-device.js';
import type { DeviceKind } from './device.js';
import { scsiKind } from './scsi/scsi-device.js';

export const deviceKinds: ReadonlyMap<string, DeviceKind> = new Map([blkKind, scsiKind].map((k) => [k.kind, k]));
