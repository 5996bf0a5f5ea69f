#!/bin/sh
# scsi-basic.sh - a vhost-user-scsi controller with two targets: both disks with the right sizes,
# vendor/model as SPDK reports them, sg3_utils commands answered consistently, fio verify and an
# ext4 round trip on the first disk, UNMAP zeroing a range on the second.
# Env: EXPECT_SIZE_0 EXPECT_SIZE_1 (bytes) EXPECT_MODEL (default "Malloc disk")
# RESULT keys: size_t0 size_t1 vendor_t0 model_t0 readcap_t0 luns vpd_* fio_errors fs_sha_match unmap_zeroed
. /vhostd/lib.sh
wait_dev /dev/sda || finish
wait_dev /dev/sdb || finish
lsblk -o NAME,HCTL,SIZE,MODEL,VENDOR | sed 's/^/# /'
# Disk names follow probe order; address the disks by SCSI target instead.
t0=$(ls /sys/bus/scsi/devices/*:0:0:0/block/) t1=$(ls /sys/bus/scsi/devices/*:0:1:0/block/)
[ -n "$t0" ] && [ -n "$t1" ] || die "targets 0 and 1 are not both present"
expect size_t0 "$(size_bytes $t0)" "${EXPECT_SIZE_0:-}"
expect size_t1 "$(size_bytes $t1)" "${EXPECT_SIZE_1:-}"
expect vendor_t0 "$(tr -d ' ' </sys/block/$t0/device/vendor)" INTEL
expect model_t0 "$(sed 's/ *$//' </sys/block/$t0/device/model)" "${EXPECT_MODEL:-Malloc disk}"
run sg_inq sg_inq /dev/$t0
for p in 0x00 0x80 0x83 0xb0 0xb2; do
  if sg_vpd -p "$p" /dev/$t0 >/tmp/vpd 2>&1; then result "vpd_$p" ok; sed 's/^/# /' /tmp/vpd | head -8; else result "vpd_$p" fail; fail "sg_vpd -p $p"; fi
done
cap=$(sg_readcap -l /dev/$t0 | awk '/Device size:/{print $3}')
expect readcap_t0 "$cap" "$(size_bytes $t0)"
expect luns "$(sg_luns /dev/$t0 | grep -c '^    0000000000000000')" 1
fio --name=v --filename=/dev/$t0 --rw=randwrite --bs=4k --size=16m --ioengine=libaio --iodepth=16 \
  --direct=1 --verify=crc32c --numjobs=1 --output=/tmp/fio.txt >/dev/null 2>&1
result fio_rc $?
expect fio_errors "$(grep -c 'err= *[1-9]\|verify:' /tmp/fio.txt)" 0
mkfs.ext4 -F -q /dev/$t0 && mount /dev/$t0 /mnt && head -c 1048576 /dev/urandom >/mnt/f && a=$(sha256sum </mnt/f) &&
  umount /mnt && mount /dev/$t0 /mnt && b=$(sha256sum </mnt/f) && umount /mnt
if [ -n "$a" ] && [ "$a" = "$b" ]; then result fs_sha_match 1; else result fs_sha_match 0; fail "ext4 round trip"; fi
pattern_chunk scsi 0 1048576 >/tmp/p
write_at $t1 1048576 /tmp/p
bs=$(blockdev --getss /dev/$t1)
if sg_unmap --lba=$((1048576 / bs)) --num=$((1048576 / bs)) /dev/$t1; then result unmap_rc 0; else result unmap_rc 1; fail "sg_unmap"; fi
if is_zero_at $t1 1048576 1048576; then result unmap_zeroed 1; else result unmap_zeroed 0; fail "unmapped range is not zero"; fi
finish
