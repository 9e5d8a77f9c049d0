#!/usr/bin/env bash
# Build the evidence appliance's operating-system image (Debian 12, OpenZFS, the appliance).
#
#   sudo images/build.sh                 # base + appliance layer, reused from the cache if unchanged
#   sudo images/build.sh --base-only     # just the base layer (for testing an Ansible rollout)
#   sudo images/build.sh --rebuild       # ignore the cache and build both layers again
#
# Two layers, each cached under $APPLIANCE_IMAGE_CACHE by a hash of its inputs:
#   base-<hash>/base.qcow2            the OS: kernel, systemd, OpenSSH, Python 3.11, OpenZFS
#   appliance-<hash>/appliance.qcow2  the appliance from this repository, on top of the base
# A run whose inputs have not changed does nothing but print the paths.
#
# On success, stdout carries only key=value lines (base_image, appliance_image, ssh_key,
# kernel); progress and timings go to stderr. See images/README.md.
#
# Settings (environment):
#   APPLIANCE_IMAGE_CACHE      where layers, the test SSH key and downloads are kept
#                              (default /var/cache/appliance-images; keep it outside the repository)
#   APPLIANCE_MIRROR           Debian mirror (default: the one this host's apt uses for bookworm)
#   APPLIANCE_SECURITY_MIRROR  security mirror (default: this host's for bookworm-security)
#   APPLIANCE_IMAGE_SIZE       size of the virtual root disk (default 8G; the qcow2 holds only
#                              what is used)
#   APPLIANCE_REPO             the repository whose appliance is installed (default: this one)
#   APPLIANCE_AUTHORIZED_KEYS  public keys authorised for root (default: the generated test
#                              key, $APPLIANCE_IMAGE_CACHE/ssh/id_ed25519.pub; give the fleet's
#                              key file for an image that goes onto real boxes)

set -euo pipefail

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$IMAGES_DIR/lib/common.sh"
# shellcheck source=lib/base.sh
source "$IMAGES_DIR/lib/base.sh"
# shellcheck source=lib/appliance.sh
source "$IMAGES_DIR/lib/appliance.sh"

CACHE=${APPLIANCE_IMAGE_CACHE:-/var/cache/appliance-images}
REPO=$(cd "${APPLIANCE_REPO:-$IMAGES_DIR/..}" && pwd)
IMAGE_SIZE=${APPLIANCE_IMAGE_SIZE:-8G}
AUTHORIZED_KEYS=${APPLIANCE_AUTHORIZED_KEYS:-}

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

main() {
    local base_only=0 rebuild=0 arg
    for arg in "$@"; do
        case $arg in
            --base-only) base_only=1 ;;
            --rebuild) rebuild=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: ${arg}" ;;
        esac
    done
    [[ $(id -u) -eq 0 ]] || die "run as root: the build uses debootstrap, chroot, mount and loop devices"
    case $CACHE in "$REPO"/*) die "APPLIANCE_IMAGE_CACHE must be outside the repository" ;; esac

    mkdir -p "$CACHE"
    CACHE=$(cd "$CACHE" && pwd)
    # The test key lives in the cache, never in the repository.
    SSH_KEY=$CACHE/ssh/id_ed25519
    AUTHORIZED_KEYS=${AUTHORIZED_KEYS:-$SSH_KEY.pub}
    take_lock
    trap run_cleanups EXIT

    stage "host dependencies" install_host_dependencies
    ensure_ssh_key
    resolve_mirrors

    local base_key base_dir
    base_key=$(base_cache_key)
    base_dir=$CACHE/base-$base_key
    build_layer base "$base_dir" "$rebuild" build_base

    local appliance_dir=""
    if ((!base_only)); then
        appliance_dir=$CACHE/appliance-$(appliance_cache_key "$base_key")
        build_layer appliance "$appliance_dir" "$rebuild" build_appliance "$base_dir"
    fi

    write_latest "$base_dir" "$appliance_dir"
    prune_cache "$base_dir" "$appliance_dir"
    print_stage_times
    print_result "$base_dir" "$appliance_dir"
}

# Only one build at a time per cache (CI and a developer may share a machine).
take_lock() {
    exec 9>"$CACHE/.lock"
    if ! flock -n 9; then
        log "another build holds ${CACHE}/.lock; waiting"
        flock 9
    fi
}

# The key that the tests and the image's root account share. It lives in the cache, never in
# the repository; a new key means a new base (the key is one of its inputs).
ensure_ssh_key() {
    if [[ ! -f $SSH_KEY ]]; then
        install -d -m 700 "$(dirname "$SSH_KEY")"
        ssh-keygen -q -t ed25519 -N '' -C appliance-test -f "$SSH_KEY"
        log "generated test SSH key ${SSH_KEY}"
    fi
}

resolve_mirrors() {
    MIRROR=${APPLIANCE_MIRROR:-$(host_mirror "$SUITE")}
    SECURITY_MIRROR=${APPLIANCE_SECURITY_MIRROR:-$(host_mirror "$SUITE-security")}
    [[ -n $MIRROR ]] || die "no Debian mirror for ${SUITE} in /etc/apt; set APPLIANCE_MIRROR"
    [[ -n $SECURITY_MIRROR ]] || die "no mirror for ${SUITE}-security in /etc/apt; set APPLIANCE_SECURITY_MIRROR"
}

# The base depends on its recipe (common.sh, base.sh, images/base/), the root's keys and the disk
# size. Not on the mirror's contents: a base is reused until the recipe changes; use
# --rebuild to take in newer Debian packages.
base_cache_key() {
    hash_text "$SUITE" "$ARCH" "$IMAGE_SIZE" "$(cat "$AUTHORIZED_KEYS")" \
        "$(hash_files "$IMAGES_DIR/lib/common.sh" "$IMAGES_DIR/lib/base.sh" "$IMAGES_DIR/base")"
}

# The appliance layer depends on its base, its recipe and the repository's package sources.
appliance_cache_key() {
    local base_key=$1 sources
    mapfile -t sources < <(package_sources)
    hash_text "$base_key" \
        "$(hash_files "$IMAGES_DIR/lib/appliance.sh" "$IMAGES_DIR/appliance")" \
        "$(hash_files "${sources[@]}")"
}

# build_layer NAME DIR REBUILD FUNCTION [ARGS...]: reuse DIR if it is complete, otherwise build
# it in a scratch folder and move it into place only when the build succeeded, so that a
# failed or interrupted build never leaves a half-made layer in the cache.
build_layer() {
    local name=$1 dir=$2 rebuild=$3 fn=$4
    shift 4
    if [[ -f $dir/.complete ]] && ((!rebuild)); then
        log "${name} layer cached: ${dir}"
        return
    fi
    WORK=$CACHE/work/$(basename "$dir")
    clean_work_dir "$WORK"
    mkdir -p "$WORK"
    local start=$SECONDS
    "$fn" "$@" "$WORK/out"
    date -u +%FT%TZ >"$WORK/out/.complete"
    echo "$((SECONDS - start))" >"$WORK/out/build-seconds"
    rm -rf "$dir"
    mv "$WORK/out" "$dir"
    clean_work_dir "$WORK"
    log "${name} layer built in $((SECONDS - start)) s: ${dir}"
}

# Remove a scratch folder left by this or an earlier (crashed) build, never crossing into a
# mount point that is still there.
clean_work_dir() {
    local dir=$1 dev
    [[ -e $dir ]] || return 0
    umount_tree "$dir"
    for dev in $(losetup -n -O NAME -j "$dir/base.raw" 2>/dev/null) \
               $(losetup -n -O NAME -j "$dir/disk.raw" 2>/dev/null); do
        losetup -d "$dev" || true
    done
    rm -rf --one-file-system "$dir"
}

# For people and scripts: latest.env holds the result lines of the newest build. (No symlinks:
# QEMU would resolve the appliance layer's relative backing path against the link's folder.)
write_latest() {
    print_result "$@" >"$CACHE/latest.env.tmp"
    mv "$CACHE/latest.env.tmp" "$CACHE/latest.env"
}

# Keep the disk from filling up: keep the two newest bases and the three newest appliance
# layers, and drop appliance layers whose base is gone (they cannot boot without it).
prune_cache() {
    local keep_base=$1 keep_appliance=$2 dir
    for dir in $(ls -1dt "$CACHE"/base-* 2>/dev/null | tail -n +3); do
        [[ $dir == "$keep_base" ]] || { log "pruning ${dir}"; rm -rf "$dir"; }
    done
    for dir in $(ls -1dt "$CACHE"/appliance-* 2>/dev/null); do
        [[ -e $dir/appliance.qcow2 ]] || continue
        if ! qemu-img info --backing-chain "$dir/appliance.qcow2" >/dev/null 2>&1; then
            [[ $dir == "$keep_appliance" ]] || { log "pruning ${dir} (its base is gone)"; rm -rf "$dir"; }
        fi
    done
    for dir in $(ls -1dt "$CACHE"/appliance-* 2>/dev/null | tail -n +4); do
        [[ $dir == "$keep_appliance" ]] || { log "pruning ${dir}"; rm -rf "$dir"; }
    done
}

print_result() {
    local base_dir=$1 appliance_dir=$2
    printf 'base_image=%s\n' "$base_dir/base.qcow2"
    [[ -z $appliance_dir ]] || printf 'appliance_image=%s\n' "$appliance_dir/appliance.qcow2"
    printf 'ssh_key=%s\n' "$SSH_KEY"
    printf 'kernel=%s\n' "$(cat "$base_dir/kernel-version")"
}

main "$@"; exit  # on one line: a script edited (or updated by git) while it runs is never read further
