#!/bin/sh
# Guest test (runs INSIDE the VM under busybox sh, started by /init with `sh -e`).
# dm-multipath over two kernel NBD devices (one per server port) of the same export, ext4 on top.
# Variables (from /ftvm.env, set with run-vm.sh --env KEY=VALUE):
#   NBD_HOST (default: HOST_IP), PORT_A (default 10809), PORT_B (default PORT_A),
#   EXPORT (default vol0), BLOCK_SIZE (default 4096), NBD_TIMEOUT (default 30),
#   MP_POLICY  failover (default: two path groups, A preferred) | multibus (one group, both paths)
#   MODE       normal (default) | kill: after the first batch of files print
#              "FTVM-GUEST-READY-FOR-KILL", sleep PAUSE_SECONDS (default 10) while the host kills
#              a server, then keep writing and verify everything through the surviving path
#   EXPECT_FAILED_PATHS  if set, the number of paths dm-multipath must report failed at the end
set -eu
set -o pipefail
. /ftvm-lib.sh

NBD_HOST=${NBD_HOST:-$HOST_IP}
PORT_A=${PORT_A:-10809}
PORT_B=${PORT_B:-$PORT_A}
EXPORT=${EXPORT:-vol0}
BLOCK_SIZE=${BLOCK_SIZE:-4096}
NBD_TIMEOUT=${NBD_TIMEOUT:-30}
MP_POLICY=${MP_POLICY:-failover}
MODE=${MODE:-normal}
PAUSE_SECONDS=${PAUSE_SECONDS:-10}
MNT=/mnt/mp
MP=/dev/mapper/mp

cleanup() {
    umount "$MNT" 2>/dev/null || true
    dmsetup remove mp 2>/dev/null || true
    /sbin/nbd-client -d /dev/nbd0 >/dev/null 2>&1 || true
    /sbin/nbd-client -d /dev/nbd1 >/dev/null 2>&1 || true
}
trap cleanup EXIT

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
write_files() {  # $1 = batch name
    mkdir -p "$MNT/$1"
    for i in 1 2 3 4 5 6; do
        dd if=/dev/urandom of="$MNT/$1/f$i" bs=64k count=$((i * 4)) 2>/dev/null
    done
    dd if=/dev/urandom of="$MNT/$1/big" bs=1M count=8 2>/dev/null
    sync
    (cd "$MNT" && find "$1" -type f | sort | xargs md5sum) >> /tmp/sums
}
verify() {
    drop_caches
    (cd "$MNT" && md5sum -c /tmp/sums) >/dev/null || fail "md5sum mismatch ($1)"
}

step "attach nbd0 -> $NBD_HOST:$PORT_A, nbd1 -> $NBD_HOST:$PORT_B (export $EXPORT)"
/sbin/nbd-client "$NBD_HOST" "$PORT_A" /dev/nbd0 -N "$EXPORT" -b "$BLOCK_SIZE" -timeout "$NBD_TIMEOUT"
/sbin/nbd-client "$NBD_HOST" "$PORT_B" /dev/nbd1 -N "$EXPORT" -b "$BLOCK_SIZE" -timeout "$NBD_TIMEOUT"
S=$(cat /sys/block/nbd0/size)
[ "$S" -gt 0 ] || fail "nbd0 has size 0"
[ "$S" -eq "$(cat /sys/block/nbd1/size)" ] || fail "paths differ in size"
A=$(cat /sys/block/nbd0/dev)
B=$(cat /sys/block/nbd1/dev)

step "dm-multipath ($MP_POLICY)"
case $MP_POLICY in
    failover) TABLE="0 $S multipath 1 queue_if_no_path 0 2 1 round-robin 0 1 1 $A 1000 round-robin 0 1 1 $B 1000" ;;
    multibus) TABLE="0 $S multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 $A 1000 $B 1000" ;;
    *) fail "unknown MP_POLICY $MP_POLICY" ;;
esac
echo "$TABLE" | dmsetup create mp
dmsetup mknodes
[ -b "$MP" ] || fail "$MP not created"
echo "FTVM-INFO: $(dmsetup status mp)"

step "mkfs ext4 on $MP, mount, write batch1"
/sbin/mke2fs -q -F -t ext4 "$MP"
mkdir -p "$MNT"
mount -t ext4 "$MP" "$MNT"
: > /tmp/sums
write_files batch1
verify "batch1"

if [ "$MODE" = kill ]; then
    step "waiting ${PAUSE_SECONDS}s for the host to kill a server"
    echo
    echo "FTVM-GUEST-READY-FOR-KILL"
    sleep "$PAUSE_SECONDS"
    echo "FTVM-INFO: resuming; $(dmsetup status mp)"
fi

step "write batch2 and batch3"
write_files batch2
verify "batch2"
write_files batch3
verify "after batch3"
echo "FTVM-INFO: $(dmsetup status mp)"

step "umount, e2fsck -fn, remount, verify"
umount "$MNT"
/sbin/e2fsck -fn "$MP"
mount -t ext4 "$MP" "$MNT"
verify "after remount"
[ "$(cd "$MNT" && find . -type f -path './batch*' | wc -l)" -eq "$(wc -l < /tmp/sums)" ] || fail "file count changed"
umount "$MNT"

STATUS=$(dmsetup status mp)
echo "FTVM-MP-STATUS: $STATUS"
if [ -n "${EXPECT_FAILED_PATHS:-}" ]; then
    step "check failed path count"
    # each path appears as "<maj:min> <A|F> <fail count> ..." in the status line
    failed=$(echo "$STATUS" | tr ' ' '\n' | grep -c '^F$' || true)
    [ "$failed" -eq "$EXPECT_FAILED_PATHS" ] || fail "expected $EXPECT_FAILED_PATHS failed path(s), dm reports $failed"
fi

step "teardown"
dmsetup remove mp
/sbin/nbd-client -d /dev/nbd0 || true     # may fail if its server was killed
/sbin/nbd-client -d /dev/nbd1 || true
trap - EXIT
echo "FTVM-INFO: guest-multipath done ($(wc -l < /tmp/sums) files verified, mode $MODE, policy $MP_POLICY)"
