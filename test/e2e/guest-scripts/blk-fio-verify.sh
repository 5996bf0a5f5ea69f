#!/bin/sh
# blk-fio-verify.sh - data integrity over all request queues, then a filesystem round trip.
#  1. fio: NUMJOBS jobs (one per vCPU, pinned, so every blk-mq hardware queue is used), each
#     random BS writes over its own SIZE_MB region with libaio/O_DIRECT at IODEPTH, then reads
#     everything back verifying crc32c. Any I/O or verify error fails.
#  2. every request virtqueue must have completed requests (interrupt counts per queue).
#  3. mkfs.ext4, mount, write a file, umount, drop caches, mount again, same sha256, fsck clean.
# Env: DEV (vda) SIZE_MB (16, per job) NUMJOBS (number of CPUs) IODEPTH (16) BS (4k)
#      FS_CHECK (1) FILE_MB (8) REQUIRE_ALL_QUEUES (1)
# RESULT keys: fio_jobs fio_rc fio_errors fio_write_ios fio_verify_ios irqs_before irqs_after
#      queues_used fs_mkfs fs_mount sha_written sha_reread fs_sha_match fs_fsck
. /vhostd/lib.sh
DEV=${DEV:-vda}
SIZE_MB=${SIZE_MB:-16}
NUMJOBS=${NUMJOBS:-$(nproc)}
IODEPTH=${IODEPTH:-16}
BS=${BS:-4k}
wait_dev "/dev/$DEV" || finish

need=$((SIZE_MB * NUMJOBS * 1024 * 1024))
size=$(size_bytes "$DEV")
[ "$size" -ge "$need" ] || die "/dev/$DEV has $size bytes, need $need for $NUMJOBS x ${SIZE_MB} MiB"

irq0=$(queue_irqs "$DEV") || die "no request virtqueue interrupts found for $DEV"
result irqs_before "$(echo "$irq0" | tr ' ' ,)"

mark fio-start
result fio_jobs "$NUMJOBS"
fio --name=verify --filename="/dev/$DEV" --ioengine=libaio --direct=1 \
  --rw=randwrite --bs="$BS" --iodepth="$IODEPTH" --numjobs="$NUMJOBS" \
  --size="${SIZE_MB}M" --offset_increment="${SIZE_MB}M" \
  --cpus_allowed="0-$(($(nproc) - 1))" --cpus_allowed_policy=split \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=1 --exitall_on_error=1 \
  --randrepeat=0 >/tmp/fio.out 2>&1
check_fio_verify /tmp/fio.out $? "$NUMJOBS"
mark fio-done

irq1=$(queue_irqs "$DEV")
result irqs_after "$(echo "$irq1" | tr ' ' ,)"
used=0; nq=0; i=1
for a in $irq1; do
  b=$(echo "$irq0" | cut -d' ' -f$i)
  nq=$((nq + 1)); [ "$a" -gt "$b" ] && used=$((used + 1))
  i=$((i + 1))
done
result queues_used "$used/$nq"
if [ "${REQUIRE_ALL_QUEUES:-1}" = 1 ] && [ "$NUMJOBS" -ge "$nq" ] && [ "$(nproc)" -ge "$nq" ] && [ "$used" -ne "$nq" ]; then
  fail "only $used of $nq request queues completed I/O"
fi

if [ "${FS_CHECK:-1}" = 1 ]; then
  mark fs-start
  run fs_mkfs mkfs.ext4 -F -q -E nodiscard "/dev/$DEV" || finish
  mkdir -p /mnt/t
  run fs_mount mount -t ext4 "/dev/$DEV" /mnt/t || finish
  head -c $((${FILE_MB:-8} * 1024 * 1024)) /dev/urandom >/tmp/src
  w=$(sha256sum </tmp/src | cut -d' ' -f1)
  result sha_written "$w"
  cp /tmp/src /mnt/t/file && sync
  run fs_umount umount /mnt/t
  echo 3 >/proc/sys/vm/drop_caches
  run fs_remount mount -t ext4 -o ro "/dev/$DEV" /mnt/t || finish
  r=$(sha256sum </mnt/t/file | cut -d' ' -f1)
  result sha_reread "$r"
  if [ "$w" = "$r" ]; then result fs_sha_match 1; else result fs_sha_match 0; fail "file checksum changed across umount/mount"; fi
  umount /mnt/t
  run fs_fsck e2fsck -f -n "/dev/$DEV"
  mark fs-done
fi
finish
