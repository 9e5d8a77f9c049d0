# shellcheck shell=bash
# The appliance layer: the appliance from this repository in /opt/appliance/venv, its
# configuration and its systemd unit, as a thin qcow2 whose backing file is the base image.
#
# Sourced by build.sh after common.sh. Its cache key covers the base's key, this file,
# images/appliance/ and the repository's Python package sources.

# The guest runs Debian 12's Python 3.11: wheels with compiled parts must be built for it.
GUEST_PYTHON=3.11

# build_appliance BASE_DIR OUT_DIR: build appliance.qcow2 in OUT_DIR on top of
# BASE_DIR/base.qcow2. Uses WORK, CACHE, REPO and IMAGES_DIR.
build_appliance() {
    local base_dir=$1 out=$2
    mkdir -p "$out"
    stage "appliance: wheels" appliance_wheels "$WORK/wheels"
    stage "appliance: install" appliance_install "$base_dir" "$out" "$WORK/wheels"
}

# A virtual environment on the host, made once, that only builds wheels.
wheel_builder_python() {
    local venv=$CACHE/wheel-builder version
    version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ $version == "$GUEST_PYTHON" ]] \
        || die "the host's python3 is ${version}; the image runs ${GUEST_PYTHON} and needs wheels built for it"
    if [[ ! -x $venv/bin/pip ]]; then
        python3 -m venv "$venv"
    fi
    printf '%s\n' "$venv/bin/python"
}

# The files of the repository that make the appliance's Python package (also the cache key).
package_sources() {
    local name
    for name in pyproject.toml appliance setup.py setup.cfg MANIFEST.in README.md LICENSE; do
        if [[ -e $REPO/$name ]]; then printf '%s\n' "$REPO/$name"; fi
    done
}

# The repository's wheel and the wheels of all its dependencies, so that the install inside the
# image needs no network. Downloads come from PyPI; pip's cache keeps reruns fast. The wheel is
# built from a copy of the sources: an in-tree build would write build/ and *.egg-info into a
# work tree that other people are editing.
appliance_wheels() {
    local dir=$1 src=$WORK/src python path
    python=$(wheel_builder_python)
    rm -rf "$dir" "$src"
    mkdir -p "$dir" "$src"
    while read -r path; do
        cp -R "$path" "$src/"
    done < <(package_sources)
    find "$src" -name __pycache__ -prune -exec rm -rf {} +
    "$python" -m pip wheel --quiet --cache-dir "$CACHE/pip" --wheel-dir "$dir" "$src" >&2
    log "wheels: $(cd "$dir" && ls | tr '\n' ' ')"
}

# The distribution name from pyproject.toml (what pip installs from the wheel folder).
project_name() {
    python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["name"])' \
        "$REPO/pyproject.toml"
}

# The layer is a qcow2 overlay on the base; qemu-storage-daemon shows it as a raw disk that a
# loop device mounts, so that only the blocks this layer changes are stored in it. The base is
# named by a path relative to the layer, so that the cache folder works wherever it is moved.
appliance_install() {
    local base_dir=$1 out=$2 wheels=$3 disk=$WORK/disk.raw mnt=$WORK/mnt dev name
    name=$(project_name)
    qemu-img create -q -f qcow2 -F qcow2 -b "$base_dir/base.qcow2" "$out/appliance.qcow2"
    export_image "$disk" "$out/appliance.qcow2"
    dev=$(attach_partition "$disk")
    defer detach_loop "$dev" "$disk"
    mkdir -p "$mnt"
    mount "$dev" "$mnt"
    mount_chroot_fs "$mnt"

    rm -rf "$mnt/tmp/wheels"
    cp -R "$wheels" "$mnt/tmp/wheels"
    rm -rf "$mnt/opt/appliance/venv"
    in_chroot "$mnt" python3 -m venv /opt/appliance/venv
    in_chroot "$mnt" /opt/appliance/venv/bin/pip install --quiet --no-index \
        --find-links /tmp/wheels "$name" >&2
    in_chroot "$mnt" /opt/appliance/venv/bin/pip freeze --all >"$mnt/opt/appliance/installed.txt"
    rm -rf "$mnt/tmp/wheels"

    install -d -m 755 "$mnt/etc/appliance"
    install -m 640 "$IMAGES_DIR/appliance/config.yaml" "$mnt/etc/appliance/config.yaml"
    install -m 644 "$IMAGES_DIR/appliance/appliance.service" "$mnt/etc/systemd/system/appliance.service"
    install -m 644 "$IMAGES_DIR/appliance/appliance-verify.service" \
        "$mnt/etc/systemd/system/appliance-verify.service"
    install -m 644 "$IMAGES_DIR/appliance/appliance-verify.timer" \
        "$mnt/etc/systemd/system/appliance-verify.timer"
    in_chroot "$mnt" systemctl enable appliance.service appliance-verify.timer >&2
    cp "$mnt/opt/appliance/installed.txt" "$out/installed.txt"

    umount_tree "$mnt"
    detach_loop "$dev" "$disk"
    stop_export "$disk"
    qemu-img rebase -u -F qcow2 -b "../$(basename "$base_dir")/base.qcow2" "$out/appliance.qcow2"
}
