# shellcheck shell=bash
# Helpers shared by the image recipe: logging and timing, clean-up on exit, input hashing,
# host dependencies, the Debian mirror, and chroot / loop-device handling.
#
# Sourced by build.sh; nothing here runs on its own.

# ---------------------------------------------------------------------------------------------
# Logging and timing
# ---------------------------------------------------------------------------------------------

# Progress goes to stderr so that stdout carries only the result lines (key=value) that the
# test rig reads.
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Every stage's wall-clock time, printed as a summary at the end.
STAGE_TIMES=()

# stage NAME COMMAND...: run one build stage and record how long it took.
stage() {
    local name=$1; shift
    local start=$SECONDS
    log "==> ${name}"
    "$@"
    local took=$((SECONDS - start))
    STAGE_TIMES+=("$(printf '%-28s %5d s' "$name" "$took")")
    log "<== ${name}: ${took} s"
}

print_stage_times() {
    local line
    log "stage timings:"
    for line in "${STAGE_TIMES[@]}"; do log "    ${line}"; done
}

# ---------------------------------------------------------------------------------------------
# Clean-up: undo mounts and loop devices even when a stage fails half-way
# ---------------------------------------------------------------------------------------------

CLEANUPS=()

# defer COMMAND...: run COMMAND when the script exits, most recent first (like Go's defer).
defer() { CLEANUPS+=("$(printf '%q ' "$@")"); }

run_cleanups() {
    local i
    for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUPS[i]}" || log "clean-up failed (ignored): ${CLEANUPS[i]}"
    done
    CLEANUPS=()
}

# ---------------------------------------------------------------------------------------------
# Input hashing: the cache key of a layer
# ---------------------------------------------------------------------------------------------

# hash_files PATH...: one short hash over the names and contents of every regular file under
# the given paths (files or folders, inside $REPO), in a stable order. Names are hashed
# relative to the repository, so that every checkout of the same commit (CI's clean clone,
# a developer's tree) finds the same cached layer. Byte-compiled Python is ignored.
hash_files() {
    local paths=() path
    for path in "$@"; do paths+=("${path#"$REPO"/}"); done
    (cd "$REPO" && find "${paths[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
        | LC_ALL=C sort -z \
        | xargs -0 sha256sum) \
        | sha256sum | cut -c1-16
}

# hash_text TEXT...: short hash of some strings (settings that shape a layer).
hash_text() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------------------------------------
# Host dependencies: CI starts from a fresh Debian 12 machine
# ---------------------------------------------------------------------------------------------

# Each entry is "command-or-file package": install the package when the first is missing.
HOST_NEEDS=(
    "debootstrap debootstrap"
    "qemu-img qemu-utils"
    "qemu-system-x86_64 qemu-system-x86"
    "qemu-storage-daemon qemu-system-common"
    "extlinux extlinux"
    "/usr/lib/syslinux/mbr/mbr.bin syslinux-common"
    "sfdisk fdisk"
    "mkfs.ext4 e2fsprogs"
    "losetup mount"
    "ssh-keygen openssh-client"
    "flock util-linux"
    "python3 python3"
    "/usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring"
)

install_host_dependencies() {
    local entry what pkg missing=()
    for entry in "${HOST_NEEDS[@]}"; do
        read -r what pkg <<<"$entry"
        if [[ $what == /* ]]; then
            [[ -e $what ]] || missing+=("$pkg")
        else
            command -v "$what" >/dev/null || missing+=("$pkg")
        fi
    done
    # python3 -m venv needs ensurepip, which Debian ships separately.
    python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    if ((${#missing[@]} == 0)); then
        log "host dependencies present"
        return
    fi
    log "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ---------------------------------------------------------------------------------------------
# The Debian mirror: taken from this host's apt configuration, never written into the recipe
# ---------------------------------------------------------------------------------------------

# host_mirror SUITE: the first URI that this host's apt uses for SUITE (deb822 or one-line).
host_mirror() {
    local suite=$1 uri
    uri=$(awk -v suite="$suite" '
        /^URIs:/    { uris = $2 }
        /^Suites:/  { for (i = 2; i <= NF; i++) if ($i == suite && uris != "") { print uris; exit } }
        /^[[:space:]]*$/ { uris = "" }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z $uri ]]; then
        uri=$(awk -v suite="$suite" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2; exit }
                                     $1 == "deb" && $0 ~ /\[/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/ && $(i+1) == suite) { print $i; exit } }' \
              /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    fi
    printf '%s\n' "${uri%/}"
}

# ---------------------------------------------------------------------------------------------
# chroot handling
# ---------------------------------------------------------------------------------------------

# mount_chroot_fs ROOT [APT_CACHE]: the kernel file systems a package install needs, the host's
# DNS settings, and optionally a host folder as apt's download cache so that rebuilds do not
# download the same packages again. Undone by umount_tree, at the latest on exit.
mount_chroot_fs() {
    local root=$1 apt_cache=${2:-}
    defer umount_tree "$root"
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --bind /dev "$root/dev"
    mount --bind /dev/pts "$root/dev/pts"
    mount -t tmpfs tmpfs "$root/run"
    if [[ -n $apt_cache ]]; then
        mkdir -p "$apt_cache/partial" "$root/var/cache/apt/archives"
        mount --bind "$apt_cache" "$root/var/cache/apt/archives"
    fi
    # A build-time resolver; the finished image gets systemd-resolved's stub instead.
    if [[ ! -L $root/etc/resolv.conf ]]; then
        cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    fi
}

# umount_tree DIR: unmount everything mounted at or below DIR, deepest first. Safe to call
# twice, so the same call serves the normal path and the clean-up on failure.
umount_tree() {
    local top mnt
    top=$(realpath -m "$1")
    findmnt -rn -o TARGET | awk -v top="$top" '$0 == top || index($0, top "/") == 1' \
        | sort -r | while read -r mnt; do umount -l "$mnt"; done
}

# in_chroot ROOT COMMAND...: run a command inside the image with a clean, predictable
# environment (no host locale, no questions from debconf).
in_chroot() {
    local root=$1; shift
    chroot "$root" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        "$@"
}

# apt_install ROOT PACKAGE...: install packages inside the image, recommends left out so that
# the image holds only what the appliance needs.
apt_install() {
    local root=$1; shift
    in_chroot "$root" apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2
}

# read_list FILE: the non-comment, non-empty lines of a package list.
read_list() { sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$1"; }

# ---------------------------------------------------------------------------------------------
# Disk images
# ---------------------------------------------------------------------------------------------

# The root file system starts at 1 MiB, the usual alignment; the MBR and extlinux's boot
# sector code live before it.
PART_OFFSET=$((1024 * 1024))

# attach_partition RAW_IMAGE: print a loop device that covers the root partition. An offset
# loop works on kernels without partition scanning on loop devices.
attach_partition() {
    local image=$1 size dev
    size=$(stat -c %s "$image")
    dev=$(losetup --find --show --offset "$PART_OFFSET" --sizelimit "$((size - PART_OFFSET))" "$image")
    printf '%s\n' "$dev"
}

# detach_loop DEV IMAGE: detach DEV if it still points at IMAGE. Safe to call twice: a loop
# device number freed by the first call may already belong to someone else.
detach_loop() {
    local dev=$1 image=$2
    if [[ $(losetup -n -O BACK-FILE "$dev" 2>/dev/null) == "$(realpath -m "$image")" ]]; then
        losetup -d "$dev"
    fi
}

# export_image FILE_MOUNTPOINT QCOW2: show a qcow2 image as a plain raw file through FUSE
# (qemu-storage-daemon), so that a loop device and mount can write into it. Writes land in the
# qcow2 only: on an overlay, that is exactly the difference from its backing file. This stands
# in for qemu-nbd, whose kernel module many build hosts lack. Stopped by stop_export.
export_image() {
    local file=$1 image=$2
    : >"$file"
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=file0,filename=${image}" \
        --blockdev "driver=qcow2,node-name=disk0,file=file0" \
        --export "type=fuse,id=export0,node-name=disk0,mountpoint=${file},writable=on" \
        --pidfile "${file}.pid" --daemonize
    defer stop_export "$file"
}

# stop_export FILE_MOUNTPOINT: stop the daemon of export_image; it flushes and closes the
# qcow2 on SIGTERM. Safe to call twice.
stop_export() {
    local file=$1 pid i
    [[ -f ${file}.pid ]] || return 0
    pid=$(cat "${file}.pid")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        die "qemu-storage-daemon ${pid} did not stop; the image ${file} may be incomplete"
    fi
    rm -f "${file}.pid"
    if mountpoint -q "$file"; then umount "$file"; fi
}
