#!/bin/sh
# blk-two-disks.sh - two disks at once: fio verify on both concurrently (one job per disk, each
# pinned to its own vCPU), plus a cross-talk check: a signature written to each disk must be
# found on that disk only.
# Env: DEVS (default "vda vdb") SIZE_MB (16) IODEPTH (16) BS (4k)
# RESULT keys: size_<dev> fio_rc fio_errors signature_<dev> (1 = own signature intact)
. /vhostd/lib.sh
DEVS=${DEVS:-vda vdb}
SIZE_MB=${SIZE_MB:-16}
IODEPTH=${IODEPTH:-16}
BS=${BS:-4k}
for d in $DEVS; do wait_dev "/dev/$d" || finish; result "size_$d" "$(size_bytes "$d")"; done

# signatures in the first 64 KiB (fio below only touches [1 MiB, 1 MiB + SIZE_MB))
for d in $DEVS; do
  pattern_chunk "signature-$d" 0 65536 >/tmp/sig-$d
  write_at "$d" 0 "/tmp/sig-$d" || die "writing the signature of $d failed"
done

jobs=""; cpu=0; n=0
for d in $DEVS; do
  jobs="$jobs --name=$d --filename=/dev/$d --cpus_allowed=$((cpu % $(nproc)))"
  cpu=$((cpu + 1)); n=$((n + 1))
done
mark fio-start
# shellcheck disable=SC2086
fio --ioengine=libaio --direct=1 --rw=randwrite --bs="$BS" --iodepth="$IODEPTH" \
  --offset=1M --size="${SIZE_MB}M" --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --exitall_on_error=1 --randrepeat=0 $jobs >/tmp/fio.out 2>&1
rc=$?
sed 's/^/# fio: /' /tmp/fio.out
result fio_rc "$rc"
[ "$rc" -eq 0 ] || fail "fio exited $rc"
errs=$(sed -n 's/.*: err= *\([0-9]*\).*/\1/p' /tmp/fio.out | awk '{s += $1} END {print s + 0}')
result fio_errors "$errs"
[ "$errs" -eq 0 ] || fail "fio reported errors"
[ "$(grep -c ': err= *[0-9]' /tmp/fio.out)" -eq "$n" ] || fail "expected $n fio job summaries"
mark fio-done

for d in $DEVS; do
  if [ "$(sha_at "$d" 0 65536)" = "$(sha256sum <"/tmp/sig-$d" | cut -d' ' -f1)" ]; then
    result "signature_$d" 1
  else
    result "signature_$d" 0; fail "the signature of $d changed: the disks' data got mixed up"
  fi
done
finish
