#!/bin/bash
# run-vm.sh --cache DIR --netns NAME --host-ip A.B.C.D --guest-ip A.B.C.D[/NN] --script GUEST_SCRIPT
#           --log LOGFILE [--timeout SECONDS] [--env KEY=VALUE]... [--env-file FILE]
#           [--append "KERNEL ARGS"] [--mem MB]
#
# Boots the cached kernel + base initramfs (build-initramfs.sh; built on first use) in QEMU (TCG)
# inside network namespace NAME (which must already have tap0, see netns.sh). GUEST_SCRIPT is
# packed with an env file into a small per-run cpio appended to the base initramfs; the guest
# /init runs it with `sh -e` and prints "FTVM-GUEST-RESULT: PASS|FAIL <reason>".
# The serial console goes to LOGFILE while the VM runs (callers may tail it for markers).
# Exit status: 0 only if LOGFILE contains "FTVM-GUEST-RESULT: PASS".
#
# Guest environment (/ftvm.env, sourced by /init before the script runs, all exported):
#   HOST_IP, GUEST_IP, NBD_HOST (= HOST_IP unless given), plus every --env KEY=VALUE and every
#   KEY=VALUE line of --env-file (later ones win).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FTVM_VM_CACHE:-/var/tmp/ftvm-vm-cache}
NETNS= HOST_IP=10.77.0.1 GUEST_IP=10.77.0.2 SCRIPT= LOG= TIMEOUT=180 APPEND= MEM=512
ENVS=()

usage() { sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "run-vm: ERROR: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --cache)    CACHE=$2; shift 2 ;;
        --netns)    NETNS=$2; shift 2 ;;
        --host-ip)  HOST_IP=$2; shift 2 ;;
        --guest-ip) GUEST_IP=$2; shift 2 ;;
        --script)   SCRIPT=$2; shift 2 ;;
        --log)      LOG=$2; shift 2 ;;
        --timeout)  TIMEOUT=$2; shift 2 ;;
        --env)      [[ $2 == *=* ]] || die "--env wants KEY=VALUE"; ENVS+=("$2"); shift 2 ;;
        --env-file) [[ -f $2 ]] || die "no env file $2"
                    while IFS= read -r line || [[ -n $line ]]; do
                        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
                        ENVS+=("$line")
                    done < "$2"; shift 2 ;;
        --append)   APPEND=$2; shift 2 ;;
        --mem)      MEM=$2; shift 2 ;;
        -h|--help)  usage ;;
        *)          die "unknown argument: $1" ;;
    esac
done
[[ -n $NETNS && -n $SCRIPT && -n $LOG ]] || usage
[[ -f $SCRIPT ]] || die "no guest script $SCRIPT"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout wants seconds"
[[ $HOST_IP =~ ^[0-9.]+$ ]] || die "bad --host-ip $HOST_IP"
[[ $GUEST_IP =~ ^[0-9.]+(/[0-9]+)?$ ]] || die "bad --guest-ip $GUEST_IP"
[[ $GUEST_IP == */* ]] || GUEST_IP=$GUEST_IP/24
ip netns list | awk '{print $1}' | grep -qxF -- "$NETNS" || die "network namespace $NETNS does not exist (netns.sh up)"
ip netns exec "$NETNS" ip link show tap0 >/dev/null 2>&1 || die "no tap0 in namespace $NETNS"

# Truncate the log first so a caller watching it for markers never sees a previous run's lines.
mkdir -p "$(dirname "$LOG")"
: > "$LOG"

"$HERE/build-initramfs.sh" "$CACHE"

T0=$(date +%s%N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftvm-vm.XXXXXX")
QPID=
cleanup() {
    if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then
        kill -TERM "$QPID" 2>/dev/null || true
        wait "$QPID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- per-run cpio: /test.sh + /ftvm.env
mkdir -p "$WORK/run"
cp "$SCRIPT" "$WORK/run/test.sh"
chmod 755 "$WORK/run/test.sh"
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
    echo "export HOST_IP=$(shq "$HOST_IP")"
    echo "export GUEST_IP=$(shq "$GUEST_IP")"
    for kv in "${ENVS[@]+"${ENVS[@]}"}"; do
        k=${kv%%=*}; v=${kv#*=}
        [[ $k =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad env name '$k'"
        echo "export $k=$(shq "$v")"
    done
} > "$WORK/run/ftvm.env"
(cd "$WORK/run" && printf '%s\n' test.sh ftvm.env | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$WORK/run.cpio.gz"
cat "$CACHE/initrd.gz" "$WORK/run.cpio.gz" > "$WORK/initrd-run.gz"

# ---- boot
CMDLINE="console=ttyS0 quiet panic=-1 ftvm.ip=$GUEST_IP ftvm.host=$HOST_IP${APPEND:+ $APPEND}"
rc=0
timeout -k 5 "$TIMEOUT" ip netns exec "$NETNS" qemu-system-x86_64 \
    -m "$MEM" -smp 1 -nographic -no-reboot \
    -kernel "$CACHE/vmlinuz" -initrd "$WORK/initrd-run.gz" -append "$CMDLINE" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,romfile= \
    </dev/null >>"$LOG" 2>&1 &
QPID=$!
wait "$QPID" || rc=$?
QPID=
ms=$(( ($(date +%s%N) - T0) / 1000000 )); ELAPSED=$((ms / 1000)).$(( (ms % 1000) / 100 ))

result=$(tr -d '\r' < "$LOG" | grep -a -o 'FTVM-GUEST-RESULT: .*' | tail -n1 || true)
if [[ $result == "FTVM-GUEST-RESULT: PASS" ]]; then
    echo "run-vm: PASS in ${ELAPSED}s (log: $LOG)" >&2
    exit 0
fi
[[ $rc == 124 || $rc == 137 ]] && echo "run-vm: timed out after ${TIMEOUT}s" >&2
echo "run-vm: FAIL in ${ELAPSED}s (qemu exit $rc): ${result:-no result marker} (log: $LOG)" >&2
echo "----- last 40 lines of $LOG -----" >&2
tail -n 40 "$LOG" | tr -d '\r' >&2
exit 1
