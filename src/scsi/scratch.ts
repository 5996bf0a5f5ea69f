// One buffer per thread for building response data (INQUIRY, MODE SENSE, ...) before it is copied
// to a task's data-in scatter list. Building and copying happen synchronously, so sharing is safe.
import { MODE_SENSE_MAX_LENGTH } from './mode-pages.js';
import { VPD_MAX_LENGTH } from './vpd.js';

export const scratch = new Uint8Array(Math.max(VPD_MAX_LENGTH, MODE_SENSE_MAX_LENGTH, 4096));
