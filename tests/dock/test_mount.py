"""appliance.dock.mount against real FUSE mounts of real FAT32 and exFAT images.

This machine's kernel has neither vfat nor exfat, so FAT32 goes through fusefat and exFAT
through exfat-fuse; the kernel path is exercised with ext2 standing in for a camera type.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from appliance.demo.cameras import CHINESE_CLIP_NAME
from appliance.dock import mount as mnt
from appliance.dock.mount import (
    MountedVolume,
    SourceVanished,
    check_fat_boot_sector,
    detect_fs_type,
    fuse_server_pids,
    is_mounted,
    mount_info,
    mount_volume,
    mounted,
    remount,
    unmount_all_under,
    unmount_volume,
)
from appliance.errors import DeviceGone, MountError
from tests.support.camera_fixtures import require_fuse, require_fuse_driver, require_tools
from tests.support.faultfs import REPO_ROOT

FS_TYPES = ["vfat", "exfat"]


@pytest.fixture
def camera(request):  # noqa: ANN001, ANN201
    """Image factory for the file system named by the test's parameter (FUSE-mountable)."""
    require_fuse_driver(request.param)
    return request.getfixturevalue({"vfat": "fat32_camera", "exfat": "exfat_camera"}[request.param])


def _loops_for(path: Path) -> str:
    return subprocess.run(["losetup", "--associated", str(path)], capture_output=True,
                          text=True, check=False).stdout.strip()


def _fat_image(path: Path, size: int = 64 << 20) -> Path:
    require_tools("mkfs.vfat")
    with open(path, "wb") as fh:
        fh.truncate(size)
    subprocess.run(["mkfs.vfat", "-F", "32", str(path)], check=True, capture_output=True)
    return path


# -- detection ---------------------------------------------------------------------------


async def test_detect_fs_type(tmp_path: Path, fat32_camera, exfat_camera) -> None:  # noqa: ANN001
    assert await detect_fs_type(fat32_camera("DET1", clips=1)) == "vfat"
    assert await detect_fs_type(exfat_camera("DET2", clips=1)) == "exfat"
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(1 << 20))
    assert await detect_fs_type(junk) is None
    assert await detect_fs_type(tmp_path) == "directory"


async def test_directory_source_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "cam").mkdir()
    vol = await mount_volume(tmp_path / "cam", tmp_path / "unused")
    assert vol == MountedVolume(tmp_path / "cam", tmp_path / "cam", "directory", "directory", False)
    assert not (tmp_path / "unused").exists()
    assert (await remount(vol, writable=True)).writable
    await unmount_volume(vol)
    assert (tmp_path / "cam").is_dir()  # a directory volume is never removed


# -- mounting real images ------------------------------------------------------------------


@pytest.mark.parametrize("camera", FS_TYPES, indirect=True)
async def test_mount_is_read_only_and_hardened(camera, tmp_path: Path) -> None:  # noqa: ANN001
    image = camera("RO1")
    target = tmp_path / "slots" / "slot-1"
    vol = await mount_volume(image, target)
    try:
        assert vol.path == target and vol.driver == "fuse" and not vol.writable
        assert vol.fs_type in FS_TYPES
        assert "SERIAL=RO1" in (target / "DEVICE.TXT").read_text()
        assert (target / "DCIM" / "20261127" / CHINESE_CLIP_NAME).stat().st_size > 100_000
        info = mount_info(target)
        assert info is not None
        # The kernel enforces these whatever the FUSE driver made of its options.
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(info.options)
        with pytest.raises(OSError) as exc:
            (target / "new.txt").write_bytes(b"x")
        assert exc.value.errno == errno.EROFS
        with pytest.raises(OSError):
            (target / "DEVICE.TXT").write_text("tampered")
    finally:
        await unmount_volume(vol)
    assert not is_mounted(target)
    assert not target.exists(), "the mount point is removed after unmounting"
    assert _loops_for(image) == "", "no loop device is left attached"


@pytest.mark.parametrize("camera", FS_TYPES, indirect=True)
async def test_remount_writable_and_back(camera, tmp_path: Path) -> None:  # noqa: ANN001
    image = camera("RW1", clips=1)
    async with mounted(image, tmp_path / "m") as vol:
        rw = await remount(vol, writable=True)
        assert rw.writable and rw.path == vol.path
        assert "rw" in mount_info(rw.path).options
        # The clock-sync file: fusefat can write a new file in the root folder.
        (rw.path / "TIME.TXT").write_text("2026-11-27 18:00:00\r\n")
        ro = await remount(rw, writable=False)
        assert not ro.writable
        assert (ro.path / "TIME.TXT").read_bytes() == b"2026-11-27 18:00:00\r\n"
        with pytest.raises(OSError):
            (ro.path / "again.txt").write_text("x")
    assert not is_mounted(tmp_path / "m")


async def test_unknown_camera_files_are_listed_with_chinese_names(fat32_camera, tmp_path: Path) -> None:  # noqa: ANN001
    image = fat32_camera("ZH1", clips=2, extra_files={"DCIM/现场/说明.TXT": "中文".encode()})
    async with mounted(image, tmp_path / "m") as vol:
        assert (vol.path / "DCIM" / "现场" / "说明.TXT").read_bytes() == "中文".encode()
        assert CHINESE_CLIP_NAME in os.listdir(vol.path / "DCIM" / "20261127")


# -- hostile input -----------------------------------------------------------------------------


async def test_garbage_image_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(4 << 20))
    with pytest.raises(MountError, match="no recognizable file system"):
        await mount_volume(junk, tmp_path / "m")
    assert not (tmp_path / "m").exists()


async def test_truncated_fat_image_is_refused(tmp_path: Path) -> None:
    require_fuse_driver("vfat")
    image = _fat_image(tmp_path / "cut.img")
    os.truncate(image, 1 << 20)  # a card dump cut short: fusefat would show an empty root
    with pytest.raises(MountError, match="truncated"):
        await mount_volume(image, tmp_path / "m")
    assert not (tmp_path / "m").exists()


async def test_corrupt_fat_boot_sector_is_refused_even_when_type_is_forced(tmp_path: Path) -> None:
    require_fuse_driver("vfat")
    image = _fat_image(tmp_path / "bad.img")
    with open(image, "r+b") as fh:
        fh.seek(13)
        fh.write(b"\x03")  # 3 sectors per cluster: not a power of two
    with pytest.raises(MountError, match="corrupt FAT.*sectors per cluster"):
        await mount_volume(image, tmp_path / "m", fs_type="vfat")
    assert not is_mounted(tmp_path / "m")


async def test_corrupt_exfat_gives_the_drivers_reason(exfat_camera, tmp_path: Path) -> None:  # noqa: ANN001
    require_fuse_driver("exfat")
    image = exfat_camera("BAD1", clips=1)
    with open(image, "r+b") as fh:
        fh.seek(120)  # inside the boot region covered by the VBR checksum
        fh.write(b"\xde\xad\xbe\xef")
    with pytest.raises(MountError, match="checksum") as exc:
        await mount_volume(image, tmp_path / "m")
    assert "mount.exfat-fuse" in str(exc.value)
    assert not (tmp_path / "m").exists()
    assert _loops_for(image) == ""


async def test_unsupported_type_is_refused(tmp_path: Path) -> None:
    require_tools("mkfs.ext2")
    image = tmp_path / "ext2.img"
    with open(image, "wb") as fh:
        fh.truncate(8 << 20)
    subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], check=True, capture_output=True)
    with pytest.raises(MountError, match="'ext2' is not supported"):
        await mount_volume(image, tmp_path / "m")


async def test_vanished_source_is_device_gone(tmp_path: Path) -> None:
    with pytest.raises(SourceVanished) as exc:
        await mount_volume(tmp_path / "sdz1", tmp_path / "m")
    assert isinstance(exc.value, MountError) and isinstance(exc.value, DeviceGone)


async def test_non_empty_target_is_refused(fat32_camera, tmp_path: Path) -> None:  # noqa: ANN001
    require_fuse_driver("vfat")
    image = fat32_camera("NE1", clips=1)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "precious.txt").write_text("x")
    with pytest.raises(MountError, match="not empty"):
        await mount_volume(image, tmp_path / "m")
    assert (tmp_path / "m" / "precious.txt").exists()


def _fake_driver(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-driver"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


async def test_a_driver_that_never_returns_is_killed(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    require_fuse()
    image = _fat_image(tmp_path / "ok.img")
    script = _fake_driver(tmp_path, "import time\ntime.sleep(120)\n")
    monkeypatch.setitem(mnt._FUSE_DRIVERS, "vfat", mnt._FuseDriver(str(script), ("ro",), ("rw",), False))
    monkeypatch.setattr(mnt, "kernel_supports", _no_kernel)
    monkeypatch.setattr(mnt, "COMMAND_TIMEOUT", 1.0)
    started = time.monotonic()
    with pytest.raises(MountError, match="did not finish within 1 s"):
        await mount_volume(image, tmp_path / "m")
    assert time.monotonic() - started < 10
    assert not (tmp_path / "m").exists()


async def _no_kernel(fs_type: str) -> bool:
    return False


async def test_a_file_system_that_hangs_after_mounting_is_cut_off(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A driver that mounts, then never answers (a hostile or broken file system)."""
    require_fuse()
    image = _fat_image(tmp_path / "ok.img")
    (tmp_path / "empty").mkdir()
    script = _fake_driver(tmp_path, f"""
        import subprocess, sys, time
        target = sys.argv[-1]
        subprocess.Popen([sys.executable, "-m", "tests.support.faultfs",
                          "--control", {str(tmp_path / 'ctl.sock')!r},
                          "--config", '{{"unplugged": "hang"}}', {str(tmp_path / 'empty')!r}, target],
                         cwd={str(REPO_ROOT)!r},
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            if (" " + target + " ") in open("/proc/self/mountinfo").read():
                sys.exit(0)
            time.sleep(0.05)
        sys.exit(1)
    """)
    monkeypatch.setitem(mnt._FUSE_DRIVERS, "vfat", mnt._FuseDriver(str(script), ("ro",), ("rw",), False))
    monkeypatch.setattr(mnt, "kernel_supports", _no_kernel)
    monkeypatch.setattr(mnt, "COMMAND_TIMEOUT", 3.0)
    monkeypatch.setattr(mnt, "PROBE_TIMEOUT", 2.0)
    started = time.monotonic()
    with pytest.raises(MountError, match="did not (answer|finish)"):
        await mount_volume(image, tmp_path / "m")
    assert time.monotonic() - started < 20
    assert not is_mounted(tmp_path / "m")
    assert fuse_server_pids(tmp_path / "m") == [], "the hung driver was killed"


# -- unmounting ------------------------------------------------------------------------------


@pytest.mark.parametrize("camera", FS_TYPES, indirect=True)
async def test_unmount_of_a_dead_fuse_mount_does_not_raise(camera, tmp_path: Path) -> None:  # noqa: ANN001
    vol = await mount_volume(camera("DEAD1", clips=1), tmp_path / "m")
    pids = fuse_server_pids(vol.path)
    assert pids, "the FUSE driver process is found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # the driver crashes (or a camera is yanked mid-read)
    for _ in range(100):
        try:
            os.listdir(vol.path)
        except OSError as exc:
            # This kernel says ECONNABORTED for an aborted connection, ENOTCONN otherwise.
            assert exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
            break
        await asyncio.sleep(0.02)
    assert is_mounted(vol.path)  # still in mountinfo, although nothing answers any more
    await unmount_volume(vol)
    assert not is_mounted(vol.path)
    assert not vol.path.exists()
    await unmount_volume(vol)  # twice: already gone, only logged


async def test_busy_unmount_falls_back_to_lazy(fat32_camera, tmp_path: Path) -> None:  # noqa: ANN001
    require_fuse_driver("vfat")
    vol = await mount_volume(fat32_camera("BUSY1", clips=1), tmp_path / "m")
    with open(vol.path / "DEVICE.TXT", "rb") as held:  # a copier still has a file open
        await asyncio.wait_for(unmount_volume(vol), 30)
        assert not is_mounted(vol.path)
        assert b"SERIAL=BUSY1" in held.read()  # the open file still reads after a lazy detach
    assert not vol.path.exists()


async def test_unmount_of_a_hung_fuse_mount_returns(tmp_path: Path, fault_fs, monkeypatch) -> None:  # noqa: ANN001
    """A camera that stopped answering: unmounting kills its driver instead of waiting."""
    monkeypatch.setattr(mnt, "RESPOND_TIMEOUT", 1.0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.MP4").write_bytes(b"x" * 1000)
    fs = fault_fs(src)
    vol = MountedVolume(fs.path, src, "vfat", "fuse", False)
    fs.unplug("hang")
    stuck = threading.Thread(target=lambda: _swallow(os.listdir, fs.path), daemon=True)
    stuck.start()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await asyncio.wait_for(unmount_volume(vol), 30)
    assert time.monotonic() - started < 10
    assert not is_mounted(fs.path)
    assert fs.process.wait(timeout=10) is not None, "the hung driver was killed"
    stuck.join(10)
    assert not stuck.is_alive(), "the reader stuck on the hung mount got an error back"


def _swallow(fn, *args):  # noqa: ANN001, ANN202
    try:
        return fn(*args)
    except OSError:
        return None


async def test_a_stale_mount_at_the_target_is_replaced(fat32_camera, tmp_path: Path) -> None:  # noqa: ANN001
    require_fuse_driver("vfat")
    image = fat32_camera("STALE1", clips=1)
    first = await mount_volume(image, tmp_path / "m")  # as if the daemon had crashed here
    second = await mount_volume(image, tmp_path / "m")
    try:
        assert "SERIAL=STALE1" in (second.path / "DEVICE.TXT").read_text()
    finally:
        await unmount_volume(second)
    await unmount_volume(first)  # already gone: no error
    assert not is_mounted(tmp_path / "m")


async def test_mounted_unmounts_when_the_block_fails(fat32_camera, tmp_path: Path) -> None:  # noqa: ANN001
    require_fuse_driver("vfat")
    with pytest.raises(RuntimeError, match="boom"):
        async with mounted(fat32_camera("CM1", clips=1), tmp_path / "m"):
            raise RuntimeError("boom")
    assert not is_mounted(tmp_path / "m")


async def test_unmount_all_under_clears_stale_slot_mounts(fat32_camera, exfat_camera, tmp_path: Path) -> None:  # noqa: ANN001
    """After a crash, the daemon clears its mount root before docking anything."""
    require_fuse_driver("vfat")
    require_fuse_driver("exfat")
    root = tmp_path / "mnt"
    await mount_volume(fat32_camera("ST1", clips=1), root / "slot-1")
    dead = await mount_volume(exfat_camera("ST2", clips=1), root / "slot-2")
    for pid in fuse_server_pids(dead.path):
        os.kill(pid, signal.SIGKILL)
    assert sorted(p.name for p in await unmount_all_under(root)) == ["slot-1", "slot-2"]
    assert not is_mounted(root / "slot-1") and not is_mounted(root / "slot-2")
    assert os.listdir(root) == []
    assert await unmount_all_under(root) == []


# -- the kernel path (ext2 stands in: this kernel has no vfat/exfat) --------------------------


async def test_kernel_driver_path(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    require_tools("mkfs.ext2", "losetup")
    if "ext2" not in mnt._proc_filesystems() or os.geteuid() != 0:
        pytest.skip("needs root and ext2 in the kernel to exercise the kernel mount path")
    image = tmp_path / "k.img"
    with open(image, "wb") as fh:
        fh.truncate(8 << 20)
    subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], check=True, capture_output=True)
    monkeypatch.setitem(mnt._KERNEL_OPTIONS, "ext2", {False: ("ro", "nosuid", "nodev", "noexec"),
                                                     True: ("rw", "nosuid", "nodev", "noexec")})
    monkeypatch.setattr(mnt, "SUPPORTED_TYPES", mnt.SUPPORTED_TYPES | {"ext2"})
    vol = await mount_volume(image, tmp_path / "k")
    try:
        assert (vol.driver, vol.fs_type, vol.writable) == ("kernel", "ext2", False)
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(mount_info(vol.path).options)
        assert _loops_for(image), "mount attached the image to a loop device"
        with pytest.raises(OSError):
            (vol.path / "x").write_text("x")
        vol = await remount(vol, writable=True)
        assert "rw" in mount_info(vol.path).options
        (vol.path / "x").write_text("x")
        vol = await remount(vol, writable=False)
        assert "ro" in mount_info(vol.path).options
    finally:
        await unmount_volume(vol)
    assert not is_mounted(tmp_path / "k") and not (tmp_path / "k").exists()
    for _ in range(50):  # the autoclear loop device goes away just after the unmount
        if not _loops_for(image):
            break
        await asyncio.sleep(0.05)
    assert _loops_for(image) == ""


# -- boot sector checks (pure) --------------------------------------------------------------


def _boot(bps: int = 512, spc: int = 8, reserved: int = 32, nfats: int = 2,
          total: int = 1 << 20, fatsz: int = 1024, root: int = 2) -> bytes:
    b = bytearray(512)
    struct.pack_into("<HBHBHH", b, 11, bps, spc, reserved, nfats, 0, 0)
    struct.pack_into("<II", b, 32, total, fatsz)
    struct.pack_into("<I", b, 44, root)
    b[510:512] = b"\x55\xaa"
    return bytes(b)


@pytest.mark.parametrize("kwargs,problem", [
    ({}, None),
    ({"bps": 500}, "bytes per sector"),
    ({"spc": 0}, "sectors per cluster"),
    ({"reserved": 0}, "reserved"),
    ({"nfats": 0}, "FAT copies"),
    ({"fatsz": 0}, "zero"),
    ({"fatsz": 600_000}, "larger than the whole"),
    ({"fatsz": 10}, "too small"),
    ({"root": 0}, "root directory cluster"),
    ({"root": 1 << 27}, "root directory cluster"),
])
def test_check_fat_boot_sector(kwargs: dict, problem: str | None) -> None:
    found = check_fat_boot_sector(_boot(**kwargs), device_size=512 << 20)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_check_fat_boot_sector_sees_truncation() -> None:
    assert "truncated" in check_fat_boot_sector(_boot(), device_size=1 << 20)


def test_tools_used_are_listed_in_the_package_lists() -> None:
    listed = (REPO_ROOT / "scripts/packages/run.txt").read_text().split()
    for package in ("fusefat", "exfat-fuse", "util-linux", "fuse3", "mtools", "dosfstools"):
        assert package in listed
