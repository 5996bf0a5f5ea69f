#!/bin/sh
# qcow2-verify.sh - a guest on qcow2 bdevs: known writes, fio verify, then what the guest sees of
# each whole disk, for the host to compare with what QEMU's tools read from the image files.
#  1. KNOWN: "dev:offset:len:seed ..." written with pattern_chunk, O_DIRECT (+ FLUSH).
#  2. FIO: "dev:offset_mb:size_mb ..." one fio job per entry, all at once: random writes of mixed
#     sizes (512 B to 68 KiB, 512-byte aligned: across sectors, pages and clusters) over the
#     region with libaio/O_DIRECT at IODEPTH, then every block read back and verified (crc32c).
#  3. SHA: "dev ..." sha256 of the whole disk (read with O_DIRECT) -> RESULT sha_<dev>, and of
#     each FIO region -> RESULT fio_sha_<dev>.
# Env: KNOWN FIO SHA IODEPTH (16)
# RESULT keys: known_<dev>_<n> fio_rc fio_errors fio_jobs fio_write_ios fio_verify_ios
#      sha_<dev> fio_sha_<dev>
. /vhostd/lib.sh
IODEPTH=${IODEPTH:-16}

for d in $SHA; do wait_dev "/dev/$d" || finish; done

n=0
for k in $KNOWN; do
  IFS=: read -r dev off len seed <<EOF
$k
EOF
  pattern_chunk "$seed" "$off" "$len" >/tmp/known
  if write_at "$dev" "$off" /tmp/known; then result "known_${dev}_$n" ok; else result "known_${dev}_$n" fail; fail "known write $k"; fi
  n=$((n + 1))
done

if [ -n "$FIO" ]; then
  mark fio-start
  jobs=0
  args=""
  for f in $FIO; do
    IFS=: read -r dev off size <<EOF
$f
EOF
    args="$args --name=$dev --filename=/dev/$dev --offset=${off}M --size=${size}M"
    jobs=$((jobs + 1))
  done
  # Global options first, then one job section per region (each --name starts a new job).
  # shellcheck disable=SC2086
  fio --ioengine=libaio --direct=1 --rw=randwrite --iodepth="$IODEPTH" \
    --bssplit=512/10:4k/40:12k/25:68k/25 --blockalign=512 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=1 --exitall_on_error=1 \
    --randrepeat=0 $args >/tmp/fio.out 2>&1
  rc=$?
  result fio_jobs "$jobs"
  check_fio_verify /tmp/fio.out "$rc" "$jobs"
  mark fio-done
fi

for f in $FIO; do
  IFS=: read -r dev off size <<EOF
$f
EOF
  result "fio_sha_$dev" "$(sha_at "$dev" $((off * 1048576)) $((size * 1048576)))"
done
for d in $SHA; do
  s=$(dd if="/dev/$d" bs=1M iflag=direct status=none | sha256sum | cut -d' ' -f1)
  result "sha_$d" "$s"
  result "size_$d" "$(size_bytes "$d")"
done
finish
