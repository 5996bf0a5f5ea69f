// The control words a bdev's layer channels on every reactor share with the control thread
// (LayerShare.control in bdev.ts). The control thread changes QoS limits and histogram switches
// by storing into them; channels read them per I/O, so a change needs no message and reaches every
// reactor at once.
/** Int32 word indexes of LayerShare.control. */
export const Ctl = {
  /** Nonzero while any QoS limit is set. */
  QOS_ACTIVE: 0,
  /** The last QoS time slice (ms, wrapping int32) whose budget was granted. */
  QOS_SLICE: 1,
  /** Budget per time slice for each limit (QosLimit order); 0 = no limit. */
  QOS_QUOTA: 2,
  /** Budget left in the current slice for each limit (may go negative: an overrun carried). */
  QOS_REMAINING: 6,
  /** Bit per IoType whose latencies the histogram records; 0 = histogram off. */
  HIST_TYPES: 10,
  /** Bumped by bdev_reset_iostat mode all (every counter) and mode maxmin (max/min only). */
  RESET_ALL_GEN: 11,
  RESET_MAXMIN_GEN: 12,
  /** Channels that hold I/O for QoS right now (the oldest held I/O goes first, whichever channel). */
  QOS_WAITING: 13,
  /**
   * 1 while the bdev's backend was opened unclean (a process died with acknowledged writes not
   * yet durable: Bdev.uncleanOpen) and no front-end has started fresh since.
   */
  UNCLEAN_OPEN: 14,
  WORDS: 16,
} as const;
