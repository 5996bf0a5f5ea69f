// The qcow2 tests' ImageFile: the control thread's node:fs one, without fsync by default (faster).
import { FsImageFile as ControlFile } from '../../../src/bdev/modules/qcow2/fs-file.js';

export type FsImageFile = ControlFile;

export const FsImageFile = {
  open: (path: string, opts: { readonly?: boolean; create?: boolean; sync?: boolean } = {}): Promise<ControlFile> =>
    ControlFile.open(path, { create: opts.create, writable: !opts.readonly, sync: opts.sync ?? false }),
};
