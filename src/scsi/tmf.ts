// Task management functions and their service responses (SAM-5 7). Function numbers are the
// virtio-scsi TMF subtypes (VIRTIO_SCSI_T_TMF_*); responses are this layer's own and map onto
// virtio-scsi as noted.

export const TmfFunction = {
  ABORT_TASK: 0,
  ABORT_TASK_SET: 1,
  CLEAR_ACA: 2,
  CLEAR_TASK_SET: 3,
  I_T_NEXUS_RESET: 4,
  LOGICAL_UNIT_RESET: 5,
  QUERY_TASK: 6,
  QUERY_TASK_SET: 7,
} as const;
export type TmfFunction = (typeof TmfFunction)[keyof typeof TmfFunction];

export const TmfResponse = {
  /** VIRTIO_SCSI_S_FUNCTION_COMPLETE (0). */
  FUNCTION_COMPLETE: 0,
  /** VIRTIO_SCSI_S_FUNCTION_SUCCEEDED (10): QUERY TASK / QUERY TASK SET found a task. */
  FUNCTION_SUCCEEDED: 1,
  /** VIRTIO_SCSI_S_FUNCTION_REJECTED (11): function not supported (CLEAR ACA, unknown). */
  FUNCTION_REJECTED: 2,
  /** VIRTIO_SCSI_S_INCORRECT_LUN (12): target present, logical unit absent or being removed. */
  INCORRECT_LUN: 3,
  /** VIRTIO_SCSI_S_BAD_TARGET (3): no target at that address. */
  BAD_TARGET: 4,
} as const;
export type TmfResponse = (typeof TmfResponse)[keyof typeof TmfResponse];
