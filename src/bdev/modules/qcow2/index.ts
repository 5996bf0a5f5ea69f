// The qcow2 format engine's public surface (see image.ts for the engine itself).
export type { ImageFile } from './image-file.js';
export { Qcow2Error, type Qcow2ErrorKind } from './errors.js';
export { type Qcow2Header, readHeader, parseHeader } from './header.js';
export {
  Qcow2Image,
  type BackingInfo,
  type BackingRead,
  type Extent,
  type ExtentKind,
  type HostExtent,
  type OpenOptions,
  type WritePlan,
} from './image.js';
export { createImage, type CreateOptions } from './create.js';
