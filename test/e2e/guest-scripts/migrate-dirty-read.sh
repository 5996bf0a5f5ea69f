#!/bin/sh
# migrate-dirty-read.sh - catches a back-end that writes guest memory during live migration without
# marking it dirty (vhost-user VHOST_F_LOG_ALL / SET_LOG_BASE): the destination would then hold
# stale data in a page only the device wrote.
#
# Why it works. QEMU sends every page once in its first pass over RAM, and afterwards only pages
# found dirty: written by a vCPU (QEMU tracks those itself) or logged by the back-end in the shared
# dirty log. So the buffer under test must be a page that, after the first pass, ONLY the device
# writes, and the guest must look at it again on the destination without having refreshed it.
#   * The buffer: fio's I/O buffer, mapped MAP_SHARED from a tmpfs file (--iomem=mmapshared:FILE,
#     pre-created so fio keeps it on exit). fio reads one 4 KiB block at OFFSET with O_DIRECT,
#     QD 1, over and over, into that one page: the device DMAs into it, no CPU ever writes it
#     (fio fills buffers for writes only; tmpfs zeroed the page once, long before the migration).
#     Page-cache pages would not do: this kernel zeroes pages on allocation (init_on_alloc), a CPU
#     write that would re-dirty the page next to each device write and hide a missing log entry.
#   * The host rewrites that block with a new generation ("gen=NNNNNNNN" + filler) every few ms,
#     from before the migration until after QEMU's first RAM pass (dirty-sync-count >= 2), and
#     then a last time (gen N). fio keeps reading, so the page's last device write (gen N)
#     happens after the page was sent in the first pass.
#   * On `freeze` (the migration is still iterating) the guest stops fio (the page keeps gen N,
#     it is a file), and records the buffer's generation and sha256: RESULT pre_gen / pre_sha.
#     Reading it is a CPU read, so it still is not dirty in QEMU's own bitmap.
#   * The host lets the migration finish, then sends `check` to the guest, now on the destination:
#     it reads the buffer file again (post_gen / post_sha). With correct dirty logging the page
#     was re-sent after the device wrote gen N: same data. Without, the destination holds the
#     first pass's copy, an older generation: buffer_intact=0, FAIL.
# While it waits for `freeze`, the guest also rewrites DIRTY_MB of its own memory in a loop, so the
# migration cannot converge meanwhile (QEMU completes as soon as what is left to send after a
# dirty-bitmap sync is below bandwidth x downtime-limit; the host holds the migration at 1 ms and
# 1 MiB/s until the guest is frozen: lib/migration.ts, `hold`).
#
# Env: DISK (vda) OFFSET (bytes, default 1048576) MAX_S (180) DIRTY_MB (16)
# Host protocol: MARK reading (fio's buffer holds a generation) -> host sends `freeze` ->
#   RESULT pre_gen pre_sha reads, MARK frozen -> host migrates, sends `check` -> RESULT post_gen,
#   buffer_intact (computed with shell builtins first: a destination that missed device writes
#   may crash soon after; the host takes the verdict from this line), post_sha.
# RESULT keys: first_gen pre_gen pre_sha reads post_gen post_sha buffer_intact
. /vhostd/lib.sh
DISK=${DISK:-vda}
OFFSET=${OFFSET:-1048576}
MAX_S=${MAX_S:-180}
DIRTY_MB=${DIRTY_MB:-16}
wait_dev "/dev/$DISK" || finish

buf=/dev/shm/dirty-read.buf
# pre-created: fio maps an existing file MAP_SHARED and leaves it in place when it exits
dd if=/dev/zero of=$buf bs=65536 count=1 status=none || die "cannot create $buf"
gen_of() { head -c 13 "$buf" | sed -n 's/^gen=\([0-9]\{8\}\) $/\1/p'; }
sha_of() { head -c 4096 "$buf" | sha256sum | cut -d' ' -f1; }

fio --name=dirty-read --filename="/dev/$DISK" --rw=read --bs=4k --size=4k --offset="$OFFSET" --direct=1 \
  --ioengine=psync --iodepth=1 --iomem=mmapshared:$buf --time_based --runtime="$MAX_S" --eta=never --output=/tmp/fio.txt &
fio_pid=$!
i=0
while [ -z "$(gen_of)" ]; do
  i=$((i + 1))
  [ $i -le 300 ] || die "fio's buffer never held a generation block (is the host writing gen=... at $OFFSET?)"
  sleep 0.1
done
result first_gen "$(gen_of)"

# keep the migration iterating until we are frozen (see above)
pattern_chunk dirt 0 $((DIRTY_MB * 1048576)) >/tmp/dirt.src
( while :; do dd if=/tmp/dirt.src of=/dev/shm/dirt bs=1M conv=notrunc status=none; done ) &
dirt_pid=$!

mark reading
wait_host freeze "$MAX_S" || { kill $dirt_pid $fio_pid; finish; }
kill -INT $fio_pid
wait $fio_pid
pre_gen=$(gen_of) pre_sha=$(sha_of)
IFS= read -r -N 13 pre_hdr <"$buf"
head -c 4096 "$buf" >/tmp/pre.blk
result pre_gen "$pre_gen"
result pre_sha "$pre_sha"
result reads "$(sed -n 's/.*issued rwts: total=\([0-9]*\),.*/\1/p' /tmp/fio.txt)"
# printed before the memory writer stops: until then the migration cannot finish, so the host
# reads this line from the source QEMU, while it still holds the migration
mark frozen
kill $dirt_pid
wait $dirt_pid 2>/dev/null

# wait_host without its `date` forks: the guest waits here across the switch
echo "WAIT check"
exec 3<"$VHOSTD_CHAN"
got=
while IFS= read -r -t "$MAX_S" line <&3; do [ "$line" = check ] && { got=1; break; }; done
exec 3<&-
[ -n "$got" ] || { fail "the host did not send check"; finish; }
# The verdict first, with shell builtins only (no fork): a destination that missed device writes
# may have more stale memory than this buffer, and such a guest does not always live long.
IFS= read -r -N 13 post_hdr <"$buf"
post_gen=${post_hdr#gen=}
result post_gen "${post_gen% }"
if [ "$post_hdr" != "$pre_hdr" ]; then
  result buffer_intact 0
  fail "the buffer the device last wrote before the migration (gen $pre_gen) holds '$post_hdr' on the destination: a device write into guest memory was not logged as dirty"
  finish
fi
if cmp -s -n 4096 "$buf" /tmp/pre.blk; then
  result buffer_intact 1
else
  result buffer_intact 0
  fail "the buffer's generation header survived the migration but its other bytes did not"
fi
result post_sha "$(sha_of)"
finish
