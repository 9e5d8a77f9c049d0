"""The image itself: it boots under TCG, answers SSH, runs real OpenZFS, and sees hot-plugged
USB cameras through real udev exactly as a field-station box sees its docking slots.

One VM for the whole module (see the ``vm`` fixture in conftest.py); the tests run in file
order and each leaves the machine as it found it, except for the pool that test_zfs creates.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.system.camera import make_camera_image
from tests.system.conftest import OUTPUT, BuiltImage, record_timing
from tests.system.vm import USB_PORTS, VM, XHCI_PCI_ADDR

pytestmark = pytest.mark.system

VENDOR = "ZHIFAYI"          # SCSI vendor: at most 8 characters
MODEL = "DSJ-V9 BodyCam"    # SCSI product: at most 16 characters


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest):
    started = time.monotonic()
    yield
    record_timing(f"test_boot: {request.node.name}", time.monotonic() - started)


@pytest.fixture(scope="module")
def quiet_vm(vm: VM) -> VM:
    """The VM with the appliance daemon stopped, so that it does not take the test cameras.

    These tests check the platform the daemon stands on, not the daemon.
    """
    vm.ssh("systemctl stop appliance.service")
    return vm


def test_boots_under_tcg_and_answers_ssh(vm: VM, appliance_image: BuiltImage) -> None:
    assert vm.ssh("uname -r").stdout.strip() == appliance_image.kernel
    state = vm.ssh("systemctl is-system-running --wait", check=False, timeout=300).stdout.strip()
    failed = vm.ssh("systemctl list-units --failed --plain --no-legend").stdout
    # The appliance daemon is written in parallel with the image and may not start yet; any
    # other failed unit is an image defect.
    others = [line for line in failed.splitlines() if line and not line.startswith("appliance.service")]
    assert not others, f"failed units (system state {state}):\n{failed}"
    assert vm.ssh("systemctl is-enabled systemd-timesyncd.service").stdout.strip() == "enabled"
    # Host keys were made on this first boot, not shipped in the image.
    vm.ssh("test -s /etc/ssh/ssh_host_ed25519_key")
    assert "console=ttyS0" in vm.ssh("cat /proc/cmdline").stdout


def test_appliance_layer_is_installed(vm: VM) -> None:
    vm.ssh("/opt/appliance/venv/bin/python -c 'import appliance'")
    assert vm.ssh("systemctl is-enabled appliance.service").stdout.strip() == "enabled"
    unit = vm.ssh("systemctl cat appliance.service").stdout
    assert "ExecStart=/opt/appliance/venv/bin/appliance run --config /etc/appliance/config.yaml" in unit
    config = vm.ssh("cat /etc/appliance/config.yaml").stdout
    assert re.search(r"backend:\s*zfs", config) and "tank/evidence" in config


def test_openzfs_pool_dataset_snapshot_hold(vm: VM) -> None:
    kernel = vm.ssh("uname -r").stdout.strip()
    vm.ssh("modprobe zfs")
    # The module was built by DKMS for the image's kernel, not the build host's.
    assert vm.ssh("modinfo -F vermagic zfs").stdout.split()[0] == kernel
    vm.ssh("zpool create -f -o ashift=12 -O atime=off tank mirror "
           "/dev/disk/by-id/virtio-pool0 /dev/disk/by-id/virtio-pool1")
    assert vm.ssh("zpool list -H -o health tank").stdout.strip() == "ONLINE"
    vm.ssh("zfs create -o recordsize=1M -o compression=off tank/evidence")
    vm.ssh("head -c 4M /dev/urandom > /tank/evidence/clip.mp4 && sync")
    vm.ssh("zfs snapshot tank/evidence@session-1 && zfs hold evidence tank/evidence@session-1")
    holds = vm.ssh("zfs holds -H tank/evidence@session-1").stdout
    assert "evidence" in holds
    # A held snapshot cannot be destroyed: the promise the vault makes.
    refused = vm.ssh("zfs destroy tank/evidence@session-1", check=False)
    assert refused.returncode != 0 and "busy" in refused.stderr.lower()
    # The snapshot still has the file after the live copy changes.
    vm.ssh("rm /tank/evidence/clip.mp4")
    vm.ssh("test -s /tank/evidence/.zfs/snapshot/session-1/clip.mp4")


def test_camera_hotplug_udev_and_vfat_mount(quiet_vm: VM, tmp_path: Path) -> None:
    vm = quiet_vm
    camera = make_camera_image(tmp_path / "cam.img", "DSJ00017A", clips=2)
    vm.hotplug_camera(camera.path, port=3, serial=camera.serial, vendor=VENDOR, model=MODEL)

    parts = vm.wait_for_block_device(ID_SERIAL_SHORT=camera.serial, DEVTYPE="partition")
    assert len(parts) == 1
    name, props = next(iter(parts.items()))
    assert props["ID_BUS"] == "usb"
    assert props["ID_FS_TYPE"] == "vfat"
    assert props["ID_VENDOR"] == VENDOR
    assert props["ID_MODEL"] == MODEL.replace(" ", "_")
    assert props["ID_PATH"] == f"pci-0000:00:{XHCI_PCI_ADDR:02x}.0-usb-0:3:1.0-scsi-0:0:0:0"

    vm.ssh(f"mkdir -p /mnt/cam && mount -t vfat -o ro,nosuid,nodev,noexec /dev/{name} /mnt/cam")
    try:
        fstype, options = vm.ssh("findmnt -n -o FSTYPE,OPTIONS /mnt/cam").stdout.split()
        assert fstype == "vfat" and "ro" in options.split(",")
        sums = vm.ssh("cd /mnt/cam && sha256sum DEVICE.TXT DCIM/100MEDIA/*").stdout
        seen = {path: digest for digest, path in (line.split() for line in sums.splitlines())}
        assert seen == camera.files
    finally:
        vm.ssh("umount /mnt/cam", check=False)

    vm.unplug_camera(3)
    vm.wait_for_no_block_device(ID_SERIAL_SHORT=camera.serial)


def test_each_usb_port_has_its_own_id_path(quiet_vm: VM, tmp_path: Path) -> None:
    """Plug a disk into every xHCI port at once and record the ID_PATH each one gets.

    The table goes to test-output/system/id_paths.json; images/README.md lists it for the
    dock's slot map.
    """
    vm = quiet_vm
    ports = USB_PORTS
    for port in ports:
        disk = tmp_path / f"port{port}.img"
        with open(disk, "wb") as f:
            f.truncate(8 * 1024 * 1024)
        vm.hotplug_camera(disk, port=port, serial=f"PORT{port:02d}", vendor=VENDOR, model=MODEL)
    id_paths = {}
    for port in ports:
        disks = vm.wait_for_block_device(ID_SERIAL_SHORT=f"PORT{port:02d}", DEVTYPE="disk")
        (props,) = disks.values()
        assert props["ID_BUS"] == "usb"
        id_paths[port] = props["ID_PATH"]
    (OUTPUT / "id_paths.json").write_text(json.dumps(id_paths, indent=2) + "\n")
    assert len(set(id_paths.values())) == len(ports), id_paths
    for port in ports:
        vm.unplug_camera(port)
    vm.wait_for_no_block_device(ID_BUS="usb")
