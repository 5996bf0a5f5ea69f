#!/bin/sh
# blk-geometry.sh - report what the guest sees of a virtio-blk disk.
# Env: DEV (default vda); optional expectations, each a failure when it differs:
#   EXPECT_SIZE (bytes) EXPECT_LBS (logical block size) EXPECT_RO (0|1) EXPECT_QUEUES
# RESULT keys: size_bytes logical_block_size physical_block_size ro num_queues
#   discard_max_bytes discard_granularity write_zeroes_max_bytes write_cache rotational serial
. /vhostd/lib.sh
DEV=${DEV:-vda}
wait_dev "/dev/$DEV" || finish
q=/sys/block/$DEV/queue

expect size_bytes "$(blockdev --getsize64 "/dev/$DEV")" "${EXPECT_SIZE:-}"
expect logical_block_size "$(blockdev --getss "/dev/$DEV")" "${EXPECT_LBS:-}"
result physical_block_size "$(blockdev --getpbsz "/dev/$DEV")"
expect ro "$(blockdev --getro "/dev/$DEV")" "${EXPECT_RO:-}"
expect num_queues "$(ls "/sys/block/$DEV/mq" | wc -l)" "${EXPECT_QUEUES:-}"
# cross-check: the sysfs size (512-byte sectors) agrees with the ioctl
[ "$(($(cat "/sys/block/$DEV/size") * 512))" = "$(blockdev --getsize64 "/dev/$DEV")" ] ||
  fail "sysfs size and BLKGETSIZE64 disagree"
result discard_max_bytes "$(cat $q/discard_max_bytes)"
result discard_granularity "$(cat $q/discard_granularity)"
result write_zeroes_max_bytes "$(cat $q/write_zeroes_max_bytes)"
result write_cache "$(tr ' ' _ <$q/write_cache)"
result rotational "$(cat $q/rotational)"
result serial "$(cat "/sys/block/$DEV/serial" 2>/dev/null)"
result virtio_device "$(virtio_name "$DEV")"
lsblk -o NAME,SIZE,LOG-SEC,PHY-SEC,RO,DISC-GRAN,DISC-MAX "/dev/$DEV" | sed 's/^/# /'
finish
