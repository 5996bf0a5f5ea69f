// SCSI numbers used by the target layer (SAM/SPC/SBC): status codes, sense keys, additional sense
// codes, operation codes and VPD page codes. Values match SPDK's include/spdk/scsi_spec.h.

/** SAM status byte. */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  TASK_ABORTED: 0x40,
} as const;
export type ScsiStatus = (typeof ScsiStatus)[keyof typeof ScsiStatus];

export const SenseKey = {
  NO_SENSE: 0x00,
  RECOVERED_ERROR: 0x01,
  NOT_READY: 0x02,
  MEDIUM_ERROR: 0x03,
  HARDWARE_ERROR: 0x04,
  ILLEGAL_REQUEST: 0x05,
  UNIT_ATTENTION: 0x06,
  DATA_PROTECT: 0x07,
  ABORTED_COMMAND: 0x0b,
  MISCOMPARE: 0x0e,
} as const;
export type SenseKey = (typeof SenseKey)[keyof typeof SenseKey];

/** Additional sense codes (ASCQ is 0x00 for every one used here unless noted). */
export const Asc = {
  NO_ADDITIONAL_SENSE: 0x00,
  LOGICAL_UNIT_NOT_READY: 0x04,
  WRITE_ERROR: 0x0c,
  UNRECOVERED_READ_ERROR: 0x11,
  PARAMETER_LIST_LENGTH_ERROR: 0x1a,
  INVALID_COMMAND_OPERATION_CODE: 0x20,
  LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE: 0x21,
  INVALID_FIELD_IN_CDB: 0x24,
  LOGICAL_UNIT_NOT_SUPPORTED: 0x25,
  INVALID_FIELD_IN_PARAMETER_LIST: 0x26,
  WRITE_PROTECTED: 0x27,
  SAVING_PARAMETERS_NOT_SUPPORTED: 0x39,
} as const;
export type Asc = (typeof Asc)[keyof typeof Asc];

export const Opcode = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  READ_6: 0x08,
  WRITE_6: 0x0a,
  INQUIRY: 0x12,
  MODE_SELECT_6: 0x15,
  MODE_SENSE_6: 0x1a,
  START_STOP_UNIT: 0x1b,
  READ_CAPACITY_10: 0x25,
  READ_10: 0x28,
  WRITE_10: 0x2a,
  VERIFY_10: 0x2f,
  SYNCHRONIZE_CACHE_10: 0x35,
  WRITE_SAME_10: 0x41,
  UNMAP: 0x42,
  MODE_SELECT_10: 0x55,
  MODE_SENSE_10: 0x5a,
  READ_16: 0x88,
  WRITE_16: 0x8a,
  VERIFY_16: 0x8f,
  SYNCHRONIZE_CACHE_16: 0x91,
  WRITE_SAME_16: 0x93,
  SERVICE_ACTION_IN_16: 0x9e,
  REPORT_LUNS: 0xa0,
  READ_12: 0xa8,
  WRITE_12: 0xaa,
  VERIFY_12: 0xaf,
} as const;

/** SERVICE ACTION IN (16) service actions. */
export const ServiceActionIn16 = {
  READ_CAPACITY_16: 0x10,
} as const;

export const VpdPage = {
  SUPPORTED_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  MANAGEMENT_NETWORK_ADDRESSES: 0x85,
  EXTENDED_INQUIRY_DATA: 0x86,
  MODE_PAGE_POLICY: 0x87,
  SCSI_PORTS: 0x88,
  BLOCK_LIMITS: 0xb0,
  BLOCK_DEVICE_CHARACTERISTICS: 0xb1,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
} as const;

/** Mode page codes reported by MODE SENSE (the set SPDK reports). */
export const ModePage = {
  READ_WRITE_ERROR_RECOVERY: 0x01,
  DISCONNECT_RECONNECT: 0x02,
  VERIFY_ERROR_RECOVERY: 0x07,
  CACHING: 0x08,
  CONTROL: 0x0a,
  XOR_CONTROL: 0x10,
  POWER_CONDITION: 0x1a,
  INFORMATIONAL_EXCEPTIONS_CONTROL: 0x1c,
  ALL: 0x3f,
} as const;

/** SPDK's DEFAULT_DISK_VENDOR / DEFAULT_DISK_REVISION. */
export const DISK_VENDOR = 'INTEL';
export const DISK_REVISION = '0001';
/** SPDK's SPDK_WORK_BLOCK_SIZE: maximum transfer / WRITE SAME length in bytes (4 MiB). */
export const MAX_TRANSFER_BYTES = 4 * 1024 * 1024;
/** SPDK's MAXIMUM UNMAP LBA COUNT (Block Limits VPD). */
export const MAX_UNMAP_LBA_COUNT = 4194304;
/** SPDK's DEFAULT_MAX_UNMAP_BLOCK_DESCRIPTOR_COUNT. */
export const MAX_UNMAP_BLOCK_DESCRIPTORS = 256;
/** SPDK's SPDK_VHOST_SCSI_CTRLR_MAX_DEVS: targets per virtio-scsi controller. */
export const MAX_TARGETS = 8;
/** SPC protocol identifier SPDK's vhost-scsi targets use in designators (SAS). */
export const PROTOCOL_ID_SAS = 0x06;
/** Peripheral device type direct-access block device. */
export const PERIPHERAL_DEVICE_TYPE_DISK = 0x00;
/** INQUIRY byte 0 for "no logical unit here": qualifier 011b, device type 1Fh. */
export const PERIPHERAL_NOT_CONNECTED = (0x03 << 5) | 0x1f;
