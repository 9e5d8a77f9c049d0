# shellcheck shell=bash
# The base layer: Debian 12 with the kernel, systemd, OpenSSH, Python 3.11 and OpenZFS, on an
# ext4 root file system that extlinux boots, written as a qcow2 disk image.
#
# Sourced by build.sh after common.sh. The recipe's inputs (this file, common.sh and
# images/base/) are hashed into the cache key, so any change here makes a new base.

SUITE=bookworm
ARCH=amd64

# build_base OUT_DIR: build the base image into OUT_DIR (base.qcow2 plus its manifest).
# Uses WORK (a scratch folder), CACHE (apt downloads), IMAGES_DIR, AUTHORIZED_KEYS, IMAGE_SIZE.
build_base() {
    local out=$1
    ROOTFS=$WORK/rootfs
    mkdir -p "$out"
    stage "base: debootstrap" base_debootstrap
    mount_chroot_fs "$ROOTFS" "$CACHE/apt-archives"
    stage "base: system packages" base_system_packages
    stage "base: OpenZFS (DKMS)" base_openzfs
    stage "base: configure" base_configure
    umount_tree "$ROOTFS"
    stage "base: disk image" base_disk_image "$out"
    base_manifest "$out"
}

# A minimal Debian (minbase: apt, dpkg and essential packages only); everything else is
# installed by name in the next stages so that the package lists say what the box holds.
base_debootstrap() {
    log "mirror: ${MIRROR} (security: ${SECURITY_MIRROR})"
    mkdir -p "$CACHE/apt-archives"
    debootstrap --arch="$ARCH" --variant=minbase --components=main,contrib \
        --cache-dir="$CACHE/apt-archives" "$SUITE" "$ROOTFS" "$MIRROR" >&2
    write_apt_sources
    # During the build only: no service may start inside the chroot, and dpkg need not fsync
    # every file (a crash just means rebuilding). Both are removed in base_configure.
    printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
    chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
    echo force-unsafe-io >"$ROOTFS/etc/dpkg/dpkg.cfg.d/zz-build-unsafe-io"
}

# main and contrib (OpenZFS lives in contrib), with updates and security fixes.
write_apt_sources() {
    rm -f "$ROOTFS/etc/apt/sources.list"
    cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR}
Suites: ${SUITE} ${SUITE}-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${SECURITY_MIRROR}
Suites: ${SUITE}-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

base_system_packages() {
    in_chroot "$ROOTFS" apt-get update -q >&2
    # debootstrap takes packages from the release only: bring in updates and security fixes.
    in_chroot "$ROOTFS" apt-get full-upgrade -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold >&2
    # shellcheck disable=SC2046  # one package per word is intended
    apt_install "$ROOTFS" $(read_list "$IMAGES_DIR/base/packages.txt")
}

# The kernel version inside the image; the host's kernel is irrelevant (and may be anything).
image_kernel_version() {
    local versions
    versions=$(ls "$ROOTFS/lib/modules")
    [[ $(wc -w <<<"$versions") -eq 1 ]] || die "expected one kernel in the image, found: ${versions}"
    printf '%s\n' "$versions"
}

# OpenZFS from contrib, built by DKMS for the image's kernel. zfs-dkms's own postinst builds
# for every kernel whose headers are installed; the explicit dkms call afterwards states the
# target kernel so that the build never depends on what `uname -r` says on the build host.
base_openzfs() {
    local kver zver
    kver=$(image_kernel_version)
    log "image kernel: ${kver}"
    apt_install "$ROOTFS" "linux-headers-${kver}" linux-headers-amd64
    apt_install "$ROOTFS" zfs-dkms zfsutils-linux zfs-zed
    zver=$(in_chroot "$ROOTFS" dpkg-query -W -f='${Version}' zfs-dkms)
    zver=${zver%%-*}
    if ! in_chroot "$ROOTFS" dkms status -m zfs -v "$zver" -k "$kver" | grep -q installed; then
        in_chroot "$ROOTFS" dkms build -m zfs -v "$zver" -k "$kver" >&2
        in_chroot "$ROOTFS" dkms install -m zfs -v "$zver" -k "$kver" >&2
    fi
    in_chroot "$ROOTFS" dkms status -m zfs -k "$kver" >&2
    find "$ROOTFS/lib/modules/$kver" -name 'zfs.ko*' | grep -q . \
        || die "no zfs module for ${kver} after the DKMS build"
    in_chroot "$ROOTFS" depmod "$kver"
    # So that the box has the module at boot without waiting for the first pool import.
    echo zfs >"$ROOTFS/etc/modules-load.d/zfs.conf"
}

# Everything that makes the tree a bootable, reachable box: the files in images/base/rootfs,
# the test key, services, and the removal of what the build alone needed.
base_configure() {
    # systemd-resolved replaces /etc/resolv.conf with its stub, which breaks DNS inside the
    # chroot: so it comes last.
    apt_install "$ROOTFS" systemd-resolved
    cp -R --no-preserve=ownership "$IMAGES_DIR/base/rootfs/." "$ROOTFS/"

    install -d -m 700 "$ROOTFS/root/.ssh"
    install -m 600 "$AUTHORIZED_KEYS" "$ROOTFS/root/.ssh/authorized_keys"
    # Each box makes its own host keys on first boot (ssh-host-keys.service).
    rm -f "$ROOTFS"/etc/ssh/ssh_host_*
    # An empty machine-id: each box gets its own on first boot (DHCP client id, journal).
    : >"$ROOTFS/etc/machine-id"
    rm -f "$ROOTFS/var/lib/dbus/machine-id"
    install -d "$ROOTFS/var/log/journal"

    in_chroot "$ROOTFS" systemctl enable \
        systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
        ssh.service ssh-host-keys.service serial-getty@ttyS0.service >&2

    rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/dpkg/dpkg.cfg.d/zz-build-unsafe-io"
    # apt's download cache is a bind mount of the host's: unmount it before cleaning.
    umount "$ROOTFS/var/cache/apt/archives"
    in_chroot "$ROOTFS" apt-get clean
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
}

# Write the tree onto a partitioned raw disk, make it bootable with extlinux, then convert to
# qcow2 (sparse, so it holds only the blocks in use).
base_disk_image() {
    local out=$1 raw=$WORK/base.raw mnt=$WORK/mnt dev uuid
    rm -f "$raw"
    truncate -s "$IMAGE_SIZE" "$raw"
    # One bootable Linux partition from 1 MiB to the end of the disk, MBR (BIOS boot).
    printf 'label: dos\nstart=%d, type=83, bootable\n' $((PART_OFFSET / 512)) | sfdisk -q "$raw"
    dev=$(attach_partition "$raw")
    defer detach_loop "$dev" "$raw"
    # 64bit is left off because syslinux reads ext4 only without it; the file system is far
    # below the 16 TiB where it would matter.
    mkfs.ext4 -q -L appliance-root -O ^64bit "$dev"
    uuid=$(blkid -s UUID -o value "$dev")

    mkdir -p "$mnt"
    mount "$dev" "$mnt"
    defer umount_tree "$mnt"
    cp -a "$ROOTFS/." "$mnt/"
    printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$uuid" >"$mnt/etc/fstab"
    write_extlinux_conf "$mnt" "$uuid"
    extlinux --install "$mnt/boot/extlinux" >&2
    umount_tree "$mnt"
    detach_loop "$dev" "$raw"

    # The MBR boot code that loads extlinux from the active partition.
    dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
    qemu-img convert -O qcow2 "$raw" "$out/base.qcow2"
    rm -f "$raw"
}

# The boot menu: no prompt, straight into the kernel, with the console on the first serial port
# (the last console= is the one that gets /dev/console, hence ttyS0 last). /vmlinuz and
# /initrd.img are the symlinks Debian keeps pointing at the newest kernel, so kernel upgrades
# need no change here.
write_extlinux_conf() {
    local mnt=$1 uuid=$2
    install -d "$mnt/boot/extlinux"
    cat >"$mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT appliance
PROMPT 0
TIMEOUT 0

LABEL appliance
    LINUX /vmlinuz
    INITRD /initrd.img
    APPEND root=UUID=${uuid} ro console=tty0 console=ttyS0,115200n8
EOF
}

# What went into the image, for the README and for anyone debugging a box.
base_manifest() {
    local out=$1
    in_chroot "$ROOTFS" dpkg-query -W -f='${Package} ${Version}\n' >"$out/packages.txt"
    image_kernel_version >"$out/kernel-version"
    grep -E '^(linux-image-[0-9]|zfs-dkms|zfsutils-linux|python3 |openssh-server|systemd )' \
        "$out/packages.txt" >&2 || true
}
