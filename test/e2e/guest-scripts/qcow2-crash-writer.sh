#!/bin/sh
# qcow2-crash-writer.sh - a write-heavy workload that says which writes are durable, for the host
# to SIGKILL vhostd under it (test/e2e/qcow2-crash.test.ts). WRITERS loops each write numbered
# 64 KiB blocks (block n: the line "vhostd crash block n" repeated) at slot (n * 7919) mod SLOTS of
# the disk with O_DIRECT and O_SYNC (the kernel sends a FLUSH after the write: VIRTIO_BLK_F_FLUSH,
# write cache "write back"), and print "FLUSHED n slot" once dd returned. Meanwhile fio writes
# 4 KiB blocks at random above the slots without ever flushing, so that the image always has
# clusters allocated whose metadata is not yet written back. Runs until the host sends "stop".
# Env: DEV (vda) SLOTS (64 KiB slots used by the numbered blocks) WRITERS (3) FIRST (first block number)
# RESULT keys: flush_feature write_cache bg_errors (and the FLUSHED / WRITE-ERROR lines)
. /vhostd/lib.sh
DEV=${DEV:-vda}
SLOTS=${SLOTS:-4096}
WRITERS=${WRITERS:-3}
FIRST=${FIRST:-0}
BS=65536
wait_dev "/dev/$DEV" || finish
features=$(cat "/sys/block/$DEV/device/features")
expect flush_feature "$(echo "$features" | cut -c10)" 1
expect write_cache "$(cat "/sys/block/$DEV/queue/write_cache")" "write back"

fio --name=bg --filename="/dev/$DEV" --rw=randwrite --randrepeat=0 --bs=4k --direct=1 --ioengine=libaio --iodepth=8 \
  --offset=$((SLOTS * BS)) --time_based --runtime=900 --output=/tmp/bg.txt >/dev/null 2>&1 &
BG=$!
# fio starts slowly under TCG: the writers start (and the host arms its kill) only once fio has
# completed writes of its own, so that every round has unflushed allocations in flight.
writes() { awk '{print $5}' "/sys/block/$DEV/stat"; }
base=$(writes)
tries=0
while [ $(($(writes) - base)) -lt 64 ] && [ $tries -lt 600 ]; do
  sleep 0.05
  tries=$((tries + 1))
done
note "background fio: $(($(writes) - base)) writes completed before the writers start"

writer() {
  local w=$1 n=$((FIRST + $1)) slot
  while [ ! -e /tmp/stop ]; do
    slot=$(((n * 7919) % SLOTS))
    yes "vhostd crash block $n" | head -c $BS >/tmp/blk.$w
    if dd if=/tmp/blk.$w of="/dev/$DEV" bs=$BS seek=$slot count=1 oflag=direct,sync conv=notrunc status=none; then
      echo "FLUSHED $n $slot"
    else
      echo "WRITE-ERROR $n"
    fi
    n=$((n + WRITERS))
  done
}

PIDS=
for w in $(seq 0 $((WRITERS - 1))); do
  writer "$w" &
  PIDS="$PIDS $!"
done
mark running
wait_host stop 600
touch /tmp/stop
wait $PIDS
kill "$BG" 2>/dev/null
wait "$BG" 2>/dev/null
note "background fio: $(grep -E 'write:|err=' /tmp/bg.txt | head -3 | tr '\n' ' ')"
errors=$(grep -c 'err= *[1-9]' /tmp/bg.txt)
expect bg_errors "$errors" 0
finish
