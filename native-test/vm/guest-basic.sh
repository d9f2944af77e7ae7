#!/bin/sh
# Guest test (runs INSIDE the VM under busybox sh, started by /init with `sh -e`).
# One kernel NBD device: raw pattern write/read-back, then ext4 mkfs/mount/files/fsck/verify.
# Variables (from /ftvm.env, set with run-vm.sh --env KEY=VALUE):
#   NBD_HOST (default: HOST_IP), NBD_PORT (default 10809), EXPORT (default vol0),
#   NBD_DEV (default /dev/nbd0), BLOCK_SIZE (default 4096), NBD_TIMEOUT (default 30)
set -eu
set -o pipefail
. /ftvm-lib.sh

NBD_HOST=${NBD_HOST:-$HOST_IP}
NBD_PORT=${NBD_PORT:-10809}
EXPORT=${EXPORT:-vol0}
NBD_DEV=${NBD_DEV:-/dev/nbd0}
BLOCK_SIZE=${BLOCK_SIZE:-4096}
NBD_TIMEOUT=${NBD_TIMEOUT:-30}
NAME=${NBD_DEV#/dev/}
MNT=/mnt/basic

cleanup() {
    umount "$MNT" 2>/dev/null || true
    /sbin/nbd-client -d "$NBD_DEV" >/dev/null 2>&1 || true
}
trap cleanup EXIT

drop_caches() { sync; blockdev --flushbufs "$NBD_DEV"; echo 3 > /proc/sys/vm/drop_caches; }

step "attach $NBD_DEV to $NBD_HOST:$NBD_PORT export $EXPORT"
/sbin/nbd-client "$NBD_HOST" "$NBD_PORT" "$NBD_DEV" -N "$EXPORT" -b "$BLOCK_SIZE" -timeout "$NBD_TIMEOUT"
SECTORS=$(cat /sys/block/$NAME/size)
[ "$SECTORS" -gt 0 ] || fail "$NBD_DEV has size 0"
echo "FTVM-INFO: $NBD_DEV size $((SECTORS * 512)) bytes, logical block $(cat /sys/block/$NAME/queue/logical_block_size)"

step "raw pattern write and read-back"
MB=$((SECTORS / 2048))
[ "$MB" -ge 16 ] || fail "device too small ($MB MiB) for the test"
dd if=/dev/urandom of=/tmp/pattern bs=4k count=1024 2>/dev/null      # 4 MiB
# offsets in 4 KiB blocks: start of device, 10 MiB + 4 KiB (not MiB-aligned), last 4 MiB
OFFSETS="0 2561 $(( (MB - 4) * 256 ))"
for off in $OFFSETS; do
    dd if=/tmp/pattern of="$NBD_DEV" bs=4k seek="$off" conv=fsync 2>/dev/null
done
drop_caches
for off in $OFFSETS; do
    dd if="$NBD_DEV" of=/tmp/readback bs=4k skip="$off" count=1024 2>/dev/null
    cmp /tmp/pattern /tmp/readback || fail "pattern mismatch at 4k block $off"
done
rm -f /tmp/readback

step "mkfs ext4"
/sbin/mke2fs -q -F -t ext4 "$NBD_DEV"

step "mount and write files"
mkdir -p "$MNT"
mount -t ext4 "$NBD_DEV" "$MNT"
mkdir -p "$MNT/dir/sub"
dd if=/dev/urandom of="$MNT/small" bs=1k count=3 2>/dev/null
dd if=/dev/urandom of="$MNT/medium" bs=64k count=16 2>/dev/null
dd if=/dev/urandom of="$MNT/dir/large" bs=1M count=16 2>/dev/null
for i in 1 2 3 4 5 6 7 8; do
    dd if=/dev/urandom of="$MNT/dir/sub/f$i" bs=4k count=$i 2>/dev/null
done
cp /tmp/pattern "$MNT/pattern"
(cd "$MNT" && find . -type f | sort | xargs md5sum) > /tmp/sums
sync
umount "$MNT"

step "e2fsck -fn"
drop_caches
/sbin/e2fsck -fn "$NBD_DEV"

step "remount and verify md5sums"
mount -t ext4 "$NBD_DEV" "$MNT"
(cd "$MNT" && md5sum -c /tmp/sums) >/dev/null || fail "md5sum mismatch after remount"
[ "$(cd "$MNT" && find . -type f | wc -l)" -eq "$(wc -l < /tmp/sums)" ] || fail "file count changed"
umount "$MNT"

step "disconnect"
/sbin/nbd-client -d "$NBD_DEV"
trap - EXIT
echo "FTVM-INFO: guest-basic done ($(wc -l < /tmp/sums) files verified)"
