#!/bin/bash
# build-initramfs.sh CACHE_DIR
#
# Builds (once) a Debian kernel + base initramfs for running the Linux kernel NBD client in a
# small QEMU VM. Produces CACHE_DIR/vmlinuz and CACHE_DIR/initrd.gz (gzip'd newc cpio).
# Idempotent: exits immediately if both exist and are newer than this script.
# The per-run guest test script is NOT part of this archive: run-vm.sh appends a second small
# cpio holding /test.sh and /ftvm.env (the kernel accepts concatenated gzip'd cpio archives).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
CACHE=${1:-${FTVM_VM_CACHE:-/var/tmp/ftvm-vm-cache}}

# Modules wanted in the guest (from the recipe); their dependencies are added and the
# load order is computed from the `depends=` field of each .ko (busybox has no modprobe deps).
WANTED_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
failover net_failover virtio_net nbd crc16 crc32c_generic libcrc32c mbcache jbd2 ext4
scsi_common scsi_mod dm-mod dm-multipath dm-round-robin"
# Host tools copied into the guest at /sbin/<name> (they shadow busybox applets of the same name).
HOST_TOOLS="nbd-client dmsetup mke2fs e2fsck"

log() { echo "build-initramfs: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

up_to_date() {
    [[ -s $CACHE/vmlinuz && -s $CACHE/initrd.gz && $CACHE/vmlinuz -nt $SELF && $CACHE/initrd.gz -nt $SELF ]]
}

mkdir -p "$CACHE"
up_to_date && exit 0

# Serialise concurrent builders (several tests may start at once).
exec 9>"$CACHE/.build.lock"
flock 9
up_to_date && exit 0

for t in apt-get apt-cache dpkg cpio gzip ldd strings flock; do
    command -v "$t" >/dev/null || die "missing host tool: $t"
done

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
chmod 755 "$WORK"   # apt-get download drops privileges to _apt: it must reach the download dir
T0=$(date +%s)

# ---------------------------------------------------------------- packages
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6[^ ]*-amd64\)$/\1/p' | head -n1; }
KPKG=$(kpkg || true)
if [[ -z $KPKG ]]; then
    log "linux-image-amd64 not resolvable, running apt-get update"
    apt-get update -qq >&2
    KPKG=$(kpkg || true)
fi
[[ -n $KPKG ]] || die "cannot find the linux-image-6.x-amd64 package linux-image-amd64 depends on"
log "downloading $KPKG busybox-static"
mkdir -p "$WORK/deb"
chmod 755 "$WORK/deb"
id _apt >/dev/null 2>&1 && chown _apt "$WORK/deb"   # avoid apt's "unsandboxed download" warning
(cd "$WORK/deb" && apt-get download -q "$KPKG" busybox-static >&2) || die "apt-get download failed"
mkdir -p "$WORK/x"
for d in "$WORK"/deb/*.deb; do dpkg -x "$d" "$WORK/x"; done

KVER=$(ls "$WORK/x/lib/modules" | head -n1)
[[ -n $KVER ]] || die "no modules directory in $KPKG"
MODDIR=$WORK/x/lib/modules/$KVER
VMLINUZ=$WORK/x/boot/vmlinuz-$KVER
[[ -f $VMLINUZ ]] || die "no kernel image in $KPKG"
BUSYBOX=$WORK/x/bin/busybox
[[ -x $BUSYBOX ]] || die "no busybox in busybox-static"

# ---------------------------------------------------------------- root skeleton
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,run,root,lib/ftvm-modules}
cp "$BUSYBOX" "$R/bin/busybox"
# Applet links (relative to /, never busybox onto itself).
while read -r applet; do
    applet=${applet#/}
    [[ -z $applet || $applet == bin/busybox ]] && continue
    mkdir -p "$R/$(dirname "$applet")"
    ln -sf /bin/busybox "$R/$applet"
done < <("$BUSYBOX" --list-full)
[[ -e $R/bin/sh ]] || ln -sf /bin/busybox "$R/bin/sh"

# ---------------------------------------------------------------- host tools + libraries
copy_lib() {  # copy a library (following symlinks) to the same path inside the root
    local src=$1
    [[ -e $R$src ]] && return 0
    mkdir -p "$R$(dirname "$src")"
    cp -L "$src" "$R$src"
}
for tool in $HOST_TOOLS; do
    src=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$tool") || die "host tool $tool not found"
    src=$(readlink -f "$src")
    # remove busybox applets of the same name anywhere in PATH, then install at /sbin/<tool>
    for d in bin sbin usr/bin usr/sbin; do rm -f "$R/$d/$tool"; done
    cp -L "$src" "$R/sbin/$tool"
    for d in usr/sbin; do ln -sf "/sbin/$tool" "$R/$d/$tool"; done
    while read -r lib; do copy_lib "$lib"; done < <(ldd "$src" | grep -o '/[^ ]*' | sort -u)
done
# dlopen'ed by libdevmapper/libudev? not needed; dmsetup runs with DM_DISABLE_UDEV=1.
ln -sf /sbin/mke2fs "$R/sbin/mkfs.ext4"
ln -sf /sbin/e2fsck "$R/sbin/fsck.ext4"
[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$R/etc/mke2fs.conf"
ln -sf /proc/self/mounts "$R/etc/mtab"
echo "root:x:0:0:root:/root:/bin/sh" > "$R/etc/passwd"
echo "root:x:0:" > "$R/etc/group"
echo "127.0.0.1 localhost" > "$R/etc/hosts"

# ---------------------------------------------------------------- kernel modules
declare -A MODPATH=()
while read -r f; do
    n=$(basename "$f"); n=${n%%.ko*}; n=${n//-/_}
    MODPATH[$n]=$f
done < <(find "$MODDIR" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
declare -A BUILTIN=()
if [[ -f $MODDIR/modules.builtin ]]; then
    while read -r f; do n=$(basename "$f"); n=${n%%.ko*}; BUILTIN[${n//-/_}]=1; done < "$MODDIR/modules.builtin"
fi

ko_plain() {  # $1 module name (normalised) -> path of an uncompressed copy in $WORK/ko
    local n=$1 src=${MODPATH[$1]} dst=$WORK/ko/$1.ko
    mkdir -p "$WORK/ko"
    if [[ ! -f $dst ]]; then
        case $src in
            *.ko.xz)  xz -dc "$src" > "$dst" ;;
            *.ko.zst) zstd -qdc "$src" > "$dst" ;;
            *.ko.gz)  gzip -dc "$src" > "$dst" ;;
            *)        cp "$src" "$dst" ;;
        esac
    fi
    echo "$dst"
}

declare -A STATE=()   # 1 = visiting, 2 = done
ORDER=()
visit() {
    local n=${1//-/_} dep deps
    [[ ${STATE[$n]:-} == 2 ]] && return 0
    [[ ${STATE[$n]:-} == 1 ]] && die "module dependency cycle at $n"
    if [[ -z ${MODPATH[$n]:-} ]]; then
        [[ -n ${BUILTIN[$n]:-} ]] && { STATE[$n]=2; return 0; }
        die "module $n neither built in nor found in $KPKG"
    fi
    STATE[$n]=1
    deps=$(strings "$(ko_plain "$n")" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' ')
    for dep in $deps; do visit "$dep"; done
    STATE[$n]=2
    ORDER+=("$n")
}
for m in $WANTED_MODULES; do visit "$m"; done
: > "$R/lib/ftvm-modules/load-order"
for n in "${ORDER[@]}"; do
    cp "$WORK/ko/$n.ko" "$R/lib/ftvm-modules/$n.ko"
    echo "$n" >> "$R/lib/ftvm-modules/load-order"
done
log "kernel $KVER, modules: ${ORDER[*]}"

# ---------------------------------------------------------------- /init and helper library
cat > "$R/ftvm-lib.sh" <<'LIB'
# Helpers for guest test scripts: `. /ftvm-lib.sh`
# step TEXT  - print a progress line; the last step is named in the FAIL marker if the script fails
# fail TEXT  - record TEXT as the failure reason and exit 1
step() { echo "FTVM-STEP: $*"; echo "$*" > /tmp/ftvm-step; }
fail() { echo "$*" > /tmp/ftvm-fail-reason; echo "FTVM-FAIL: $*"; exit 1; }
LIB

cat > "$R/init" <<'INIT'
#!/bin/sh
# ftvm guest /init: mounts, loads modules, brings up eth0, runs /test.sh, prints the result marker.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=dumb
export DM_DISABLE_UDEV=1          # no udev in the initramfs; dmsetup creates nodes itself
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

result() {
    echo
    echo "FTVM-GUEST-RESULT: $*"
    echo
    sync
    poweroff -f
    sleep 10
}

for m in $(cat /lib/ftvm-modules/load-order); do
    insmod /lib/ftvm-modules/$m.ko || result "FAIL insmod $m"
done

# Configuration: kernel command line (ftvm.ip=A.B.C.D/NN ftvm.host=A.B.C.D), then /ftvm.env
GUEST_IP=10.77.0.2/24
HOST_IP=10.77.0.1
for arg in $(cat /proc/cmdline); do
    case $arg in
        ftvm.ip=*)   GUEST_IP=${arg#ftvm.ip=} ;;
        ftvm.host=*) HOST_IP=${arg#ftvm.host=} ;;
    esac
done
export GUEST_IP HOST_IP
[ -f /ftvm.env ] && . /ftvm.env
case $GUEST_IP in */*) ;; *) GUEST_IP=$GUEST_IP/24 ;; esac
export NBD_HOST=${NBD_HOST:-$HOST_IP}

i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -e /sys/class/net/eth0 ] || result "FAIL no eth0"
ip link set lo up
ip link set eth0 up || result "FAIL eth0 up"
ip addr add "$GUEST_IP" dev eth0 || result "FAIL ip addr add $GUEST_IP"
i=0
until ping -c 1 -W 1 "$HOST_IP" >/dev/null 2>&1; do
    i=$((i+1)); [ $i -ge 10 ] && result "FAIL host $HOST_IP unreachable from $GUEST_IP"
done
echo "FTVM-GUEST-NET: $GUEST_IP -> $HOST_IP ok"

[ -f /test.sh ] || result "FAIL no /test.sh in initramfs"
cd /tmp
sh -e /test.sh < /dev/null
rc=$?
cd /
if [ $rc -eq 0 ]; then
    result "PASS"
else
    reason="test.sh exit status $rc"
    [ -s /tmp/ftvm-step ] && reason="$reason at step: $(cat /tmp/ftvm-step)"
    [ -s /tmp/ftvm-fail-reason ] && reason="$reason: $(cat /tmp/ftvm-fail-reason)"
    result "FAIL $reason"
fi
INIT
chmod 755 "$R/init"

# ---------------------------------------------------------------- archive
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 > "$WORK/initrd.gz"
cp "$VMLINUZ" "$WORK/vmlinuz"
echo "$KPKG $KVER" > "$WORK/kernel-version"
mv -f "$WORK/vmlinuz" "$CACHE/vmlinuz"
mv -f "$WORK/kernel-version" "$CACHE/kernel-version"
mv -f "$WORK/initrd.gz" "$CACHE/initrd.gz"   # last: its mtime is the "done" mark
log "built $CACHE/vmlinuz and $CACHE/initrd.gz ($(du -h "$CACHE/initrd.gz" | cut -f1)) in $(( $(date +%s) - T0 ))s"
