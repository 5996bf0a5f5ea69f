#!/bin/sh
# blk-fio-rounds.sh - several rounds of fio write+verify on both queues, for tests that disturb the
# back-end (restarts) while the guest keeps doing I/O.
# Env: DEV (vda) ROUNDS (3) SIZE_MB (16 per job)
# RESULT keys: rounds fio_errors
. /vhostd/lib.sh
DEV=${DEV:-vda}
wait_dev "/dev/$DEV" || finish
mark running
errors=0
for r in $(seq 1 "${ROUNDS:-3}"); do
  fio --name=r$r --filename="/dev/$DEV" --rw=randwrite --bs=4k --size="${SIZE_MB:-16}m" --offset_increment="${SIZE_MB:-16}m" \
    --numjobs=2 --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --output=/tmp/f$r.txt >/dev/null 2>&1
  rc=$?
  bad=$(grep -c 'err= *[1-9]\|verify:' /tmp/f$r.txt)
  note "round $r: fio rc=$rc, error lines $bad"
  [ "$rc" -eq 0 ] && [ "$bad" -eq 0 ] || { errors=$((errors + 1)); grep -E 'err=|verify' /tmp/f$r.txt | head -5; }
  mark "round$r"
done
result rounds "${ROUNDS:-3}"
expect fio_errors "$errors" 0
finish
