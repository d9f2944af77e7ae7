#!/bin/bash
# netns.sh up NAME HOST_IP/PREFIX   - create network namespace NAME with lo up and tap device tap0
#                                     holding HOST_IP (for a QEMU guest started inside NAME)
# netns.sh down NAME                - stop every process still running inside NAME (TERM, then
#                                     KILL after 5 s) and delete NAME; safe to call repeatedly
set -euo pipefail

usage() { echo "usage: $0 up NAME HOST_IP/PREFIX | $0 down NAME" >&2; exit 2; }
exists() { ip netns list | awk '{print $1}' | grep -qxF -- "$1"; }

cmd=${1:-}; name=${2:-}
[[ -n $cmd && -n $name ]] || usage
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "netns.sh: bad namespace name '$name'" >&2; exit 2; }

case $cmd in
up)
    addr=${3:-}
    [[ $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || usage
    if exists "$name"; then echo "netns.sh: namespace $name already exists" >&2; exit 1; fi
    ip netns add "$name"
    ok=0
    trap '[[ $ok == 1 ]] || ip netns del "$name" 2>/dev/null || true' EXIT
    ip netns exec "$name" ip link set lo up
    ip netns exec "$name" ip tuntap add dev tap0 mode tap
    ip netns exec "$name" ip addr add "$addr" dev tap0
    ip netns exec "$name" ip link set tap0 up
    ok=1
    ;;
down)
    exists "$name" || exit 0
    pids=$(ip netns pids "$name" 2>/dev/null || true)
    if [[ -n $pids ]]; then
        kill -TERM $pids 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z $(ip netns pids "$name" 2>/dev/null || true) ]] && break
            sleep 0.1
        done
        pids=$(ip netns pids "$name" 2>/dev/null || true)
        [[ -n $pids ]] && { kill -KILL $pids 2>/dev/null || true; sleep 0.2; }
    fi
    ip netns del "$name" 2>/dev/null || true
    ;;
*) usage ;;
esac
