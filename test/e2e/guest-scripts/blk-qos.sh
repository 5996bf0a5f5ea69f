#!/bin/sh
# blk-qos.sh - fio read rates on a disk whose QoS limits the host sets between phases.
# Each phase waits for the host (wait_host NAME), then runs fio randread for a fixed time.
#   base: 4k QD32 (the limit is off: how fast this guest can go at all)
#   iops: 4k QD32            bw: 64k QD16
#   live: 4k QD32 for LIVE_S seconds; the host raises the limit while it runs
# Env: DEV (vda) RUN_S (5) LIVE_S (6)
# RESULT keys: iops_<phase> bw_kib_<phase> fio_errors
. /vhostd/lib.sh
DEV=${DEV:-vda}
wait_dev "/dev/$DEV" || finish
errors=0
# rate NAME BS IODEPTH SECONDS: fio's terse output, v3: field 7 read KiB/s, field 8 read IO/s
rate() {
  fio --name="$1" --filename="/dev/$DEV" --rw=randread --bs="$2" --iodepth="$3" --ioengine=libaio --direct=1 \
    --time_based --runtime="$4" --ramp_time=1 --size=64m --minimal >"/tmp/$1.txt" 2>&1 || errors=$((errors + 1))
  result "iops_$1" "$(tail -1 "/tmp/$1.txt" | cut -d';' -f8)"
  result "bw_kib_$1" "$(tail -1 "/tmp/$1.txt" | cut -d';' -f7)"
  result "err_$1" "$(tail -1 "/tmp/$1.txt" | cut -d';' -f5)"
}
wait_host base && rate base 4k 32 "${RUN_S:-5}"
wait_host iops && rate iops 4k 32 "${RUN_S:-5}"
wait_host bw && rate bw 64k 16 "${RUN_S:-5}"
wait_host live && mark live-start && rate live 4k 32 "${LIVE_S:-6}"
expect fio_errors "$errors" 0
finish
