// Create-time geometry checks shared by the RAM-backed modules (malloc, null): SPDK's
// num_blocks/block_size/metadata params, of which vhostd supports the block sizes a vhost device
// can expose and no metadata or DIF.
import { VhostdError } from '../util/errors.js';
import { optional } from '../util/decode.js';

/** Block sizes the vhost devices can expose to a guest. */
export const SUPPORTED_BLOCK_SIZES: ReadonlySet<number> = new Set([512, 4096]);

/** The optional SPDK create params we accept but whose only supported value is the default. */
export const METADATA_FIELDS = {
  physical_block_size: optional('uint32'),
  md_size: optional('uint32'),
  dif_type: optional('int32'),
  dif_is_head_of_md: optional('bool'),
} as const;

export interface GeometryParams {
  numBlocks: number;
  blockSize: number;
  physicalBlockSize?: number;
  mdSize?: number;
  difType?: number;
}

/** The geometry of decoded SPDK create params (num_blocks, block_size and the metadata fields). */
export function geometryOf(p: { num_blocks: number; block_size: number; physical_block_size?: number; md_size?: number; dif_type?: number }): GeometryParams {
  return { numBlocks: p.num_blocks, blockSize: p.block_size, physicalBlockSize: p.physical_block_size, mdSize: p.md_size, difType: p.dif_type };
}

/** Checks the geometry and metadata options (EINVAL, ENOMEM for a size beyond 2^53, ENOTSUP). */
export function validateGeometry(p: GeometryParams): void {
  const einval = (detail: string) => VhostdError.errno('EINVAL', detail);
  if (p.numBlocks === 0) throw einval('num_blocks must be greater than 0');
  if (!SUPPORTED_BLOCK_SIZES.has(p.blockSize)) throw einval(`block_size ${p.blockSize} is not 512 or 4096`);
  if (p.physicalBlockSize !== undefined && p.physicalBlockSize % 512 !== 0) {
    throw einval(`physical_block_size ${p.physicalBlockSize} is not a multiple of 512`);
  }
  if (!Number.isSafeInteger(p.numBlocks * p.blockSize)) throw VhostdError.errno('ENOMEM', 'bdev size too large');
  if ((p.mdSize ?? 0) !== 0 || (p.difType ?? 0) !== 0) {
    throw VhostdError.errno('ENOTSUP', 'metadata and DIF are not supported');
  }
}
