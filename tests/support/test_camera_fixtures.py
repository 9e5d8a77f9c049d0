"""The camera fixtures: many small files, a >4 GiB exFAT file, and cleanup after failures."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from appliance.demo.cameras import CameraSpec, build_camera_image, generate_clip
from appliance.dock.mount import fuse_server_pids, is_mounted, mount_volume, unmount_volume
from tests.support.camera_fixtures import (
    add_large_file_to_exfat,
    cleanup_under,
    require_fuse,
    require_fuse_driver,
    require_tools,
)


async def test_thousands_of_small_files(many_files_camera, fuse_mounted) -> None:  # noqa: ANN001
    require_fuse_driver("vfat")
    started = time.monotonic()
    image = many_files_camera(count=3000)
    built = time.monotonic() - started
    vol = await fuse_mounted(image)
    try:
        listed = sum(len(names) for _, _, names in os.walk(vol.path / "DCIM"))
        assert listed == 3000 + 1  # the small files and the camera's one clip
    finally:
        await unmount_volume(vol)
    print(f"3000-file FAT32 camera built in {built:.1f} s")
    assert built < 30


async def test_cleanup_under_removes_what_a_failed_test_left(tmp_path: Path, fat32_camera) -> None:  # noqa: ANN001
    require_fuse_driver("vfat")
    require_tools("losetup")
    image = fat32_camera("LEAK1", clips=1)
    vol = await mount_volume(image, tmp_path / "leaked-mount")  # never unmounted by the "test"
    pids = fuse_server_pids(vol.path)
    loop = subprocess.run(["losetup", "--find", "--show", "--read-only", str(image)],
                          capture_output=True, text=True, check=True).stdout.strip()
    cleaned = cleanup_under(tmp_path)
    assert any("leaked-mount" in c for c in cleaned) and any(loop in c for c in cleaned)
    assert not is_mounted(vol.path)
    assert subprocess.run(["losetup", "--associated", str(image)], capture_output=True,
                          text=True).stdout.strip() == ""
    for _ in range(100):
        if not any(os.path.exists(f"/proc/{p}") and "Z" not in _state(p) for p in pids):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"FUSE driver(s) {pids} still running")
    assert cleanup_under(tmp_path) == []


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


@pytest.mark.slow
async def test_a_file_over_4_gib_on_exfat(tmp_path: Path, camera_cache: Path, fuse_mounted, _cleanup_tmp) -> None:  # noqa: ANN001
    """exFAT is the only camera file system with files over 4 GiB; FAT32 stops at 4 GiB - 1."""
    require_tools("mkfs.exfat", "mount.exfat-fuse", "losetup", "ffmpeg")
    require_fuse()
    size = (4 << 30) + (512 << 20)  # 4.5 GiB
    image = build_camera_image(CameraSpec("BIG0001", fs="exfat", clips=1, image_size=size + (256 << 20)),
                               tmp_path / "big.img", camera_cache)
    head = generate_clip(camera_cache, 2.0, 1).read_bytes()
    rel = "DCIM/20261127/BIG0001_20261127_090000_0002.MP4"
    timing = add_large_file_to_exfat(image, rel, size, head=head)
    print(f"\n>4 GiB exFAT file: {timing}")
    vol = await fuse_mounted(image)
    try:
        path = vol.path / rel
        assert path.stat().st_size == size
        with open(path, "rb") as fh:
            assert fh.read(len(head)) == head
            fh.seek(size - 4096)
            assert fh.read() == b"\0" * 4096
    finally:
        await unmount_volume(vol)
