#!/bin/sh
# scsi-hotplug.sh - while fio verify runs on target 0, the host adds target 2 (it must appear) and
# then removes it (it must disappear); fio must see no error throughout.
# Host protocol: MARK ready → host adds target 2, sends "added"; MARK seen → host removes it,
# sends "removed".
# RESULT keys: added removed fio_runs fio_errors
. /vhostd/lib.sh
wait_dev /dev/sda || finish
t0=$(ls /sys/bus/scsi/devices/*:0:0:0/block/)
rm -f /tmp/stop /tmp/fio.err
( n=0; while [ ! -f /tmp/stop ]; do
    fio --name=h --filename=/dev/$t0 --rw=randwrite --bs=4k --size=8m --ioengine=libaio --iodepth=8 \
      --direct=1 --verify=crc32c --output=/tmp/fio.out >/dev/null 2>&1 || { echo x >>/tmp/fio.err; cat /tmp/fio.out; }
    n=$((n + 1)); echo $n >/tmp/fio.runs
  done ) &
fio_pid=$!
target_dev() { ls /sys/bus/scsi/devices/*:0:$1:0/block/ 2>/dev/null; }
mark ready
wait_host added 120 || finish
i=0; while [ -z "$(target_dev 2)" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
d2=$(target_dev 2)
if [ -n "$d2" ]; then result added 1; note "target 2 appeared as $d2: $(size_bytes "$d2") bytes"; else result added 0; fail "target 2 did not appear"; fi
[ -n "$d2" ] && dd if=/dev/$d2 of=/dev/null bs=64k count=16 iflag=direct status=none
mark seen
wait_host removed 120 || finish
i=0; while [ -n "$(target_dev 2)" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ -z "$(target_dev 2)" ]; then result removed 1; else result removed 0; fail "target 2 did not disappear"; fi
touch /tmp/stop; wait $fio_pid
result fio_runs "$(cat /tmp/fio.runs 2>/dev/null)"
expect fio_errors "$(cat /tmp/fio.err 2>/dev/null | wc -l)" 0
finish
