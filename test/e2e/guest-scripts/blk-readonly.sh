#!/bin/sh
# blk-readonly.sh - a read-only disk: reported ro, reads work, a direct write fails and changes
# nothing. Env: DEV (default vda).
# RESULT keys: ro read_ok write_rejected data_unchanged
. /vhostd/lib.sh
DEV=${DEV:-vda}
wait_dev "/dev/$DEV" || finish

expect ro "$(blockdev --getro "/dev/$DEV")" 1
if before=$(dd if="/dev/$DEV" bs=64K count=1 iflag=direct status=none | sha256sum | cut -d' ' -f1); then
  result read_ok 1
else
  result read_ok 0; fail "reading a read-only disk failed"
fi
head -c 65536 /dev/urandom >/tmp/junk
if dd if=/tmp/junk of="/dev/$DEV" bs=64K count=1 oflag=direct conv=notrunc,fsync status=none 2>/tmp/dd.err; then
  result write_rejected 0; fail "a write to a read-only disk succeeded"
else
  result write_rejected 1; note "dd said: $(cat /tmp/dd.err)"
fi
# Try to get around the guest kernel's check (BLKROSET). Linux 6.1 keeps refusing because the
# driver marked the disk ro; if a kernel ever lets it through, the backend must fail the write
# (data_unchanged below catches a backend that does not).
blockdev --setrw "/dev/$DEV" 2>/dev/null
if dd if=/tmp/junk of="/dev/$DEV" bs=64K count=1 oflag=direct conv=notrunc,fsync status=none 2>/dev/null; then
  result setrw_write accepted
else
  result setrw_write rejected
fi
after=$(dd if="/dev/$DEV" bs=64K count=1 iflag=direct status=none | sha256sum | cut -d' ' -f1)
if [ "$before" = "$after" ]; then result data_unchanged 1; else result data_unchanged 0; fail "first 64 KiB changed"; fi
finish
