"""Ingest from real FAT32 and exFAT images mounted through FUSE, and from a faulty camera.

This kernel has no vfat or exfat driver, so the mount layer uses fusefat and exfat-fuse
here; the kernel drivers are covered by the system tests in the virtual machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from appliance.demo.cameras import CHINESE_CLIP_NAME
from appliance.dock.events import SourceKind
from appliance.dock.mount import mount_volume, unmount_volume
from tests.support.camera_fixtures import add_large_file_to_exfat, require_fuse_driver


async def _camera_files(image: Path, mnt: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file on an image, read back through the mount layer."""
    vol = await mount_volume(image, mnt)
    try:
        out = {}
        for root, _dirs, files in os.walk(vol.path):
            for name in files:
                path = Path(root) / name
                out[str(path.relative_to(vol.path))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out
    finally:
        await unmount_volume(vol)


def _mtools_listing(image: Path) -> list[str]:
    """Every file on a FAT image, lower-cased, as mtools reads it."""
    out = subprocess.run(["mdir", "-/", "-b", "-i", str(image), "::"], capture_output=True, text=True,
                         check=True, env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout
    return [line.removeprefix("::/").lower() for line in out.splitlines()
            if line.strip() and not line.endswith("/")]


def _recorded(harness) -> dict[str, str]:
    return {r["rel_path"]: r["sha256"] for r in harness.rows("SELECT rel_path, sha256 FROM recordings")}


@pytest.mark.config(ingest={"wipe": "after-verify", "ffprobe": True})
async def test_fat32_camera_ingested_wiped_and_clock_set(harness, fat32_camera, tmp_path):
    require_fuse_driver("vfat")
    harness.register("FAT0001")
    long_name = "DCIM/20261127/" + "长文件名" * 20 + ".MP4"  # 244 bytes: near the 255 limit
    image = fat32_camera("FAT0001", clips=2, extra_files={long_name: b"L" * 5000,
                                                          "DCIM/20261127/EMPTY.MP4": b""})
    before = await _camera_files(image, tmp_path / "before")
    result = await harness.ingest(1, image, SourceKind.IMAGE)
    assert result.result == "done", result.reason
    recorded = _recorded(harness)
    media = {k: v for k, v in before.items() if k.upper().startswith(("DCIM/", "AUDIO/"))}
    assert recorded == media
    assert any(CHINESE_CLIP_NAME in k for k in recorded) and long_name in recorded
    # Read back with mtools, not fusefat: fusefat ignores the lower-case flags of 8.3 names
    # and lists the volume label as a file, so it is no judge of what is on the card.
    after = _mtools_listing(image)
    assert not [k for k in after if k in {m.lower() for m in media}], "verified media must be wiped"
    assert {"system/log.bin", "device.txt", "time.txt"} <= set(after)
    # ffprobe ran after the copy and found the clips' codec.
    for _ in range(100):
        probed = harness.rows("SELECT codec FROM recordings WHERE rel_path LIKE '%.MP4' AND size > 0"
                              " AND probed_at IS NOT NULL")
        if len(probed) >= 2:
            break
        await asyncio.sleep(0.1)
    assert {r["codec"] for r in probed} >= {"h264"}


async def test_exfat_camera_is_ingested(harness, exfat_camera, tmp_path):
    require_fuse_driver("exfat")
    harness.register("EXF0001")
    image = exfat_camera("EXF0001", clips=2)
    result = await harness.ingest(2, image, SourceKind.IMAGE)
    assert result.result == "done", result.reason
    assert any(CHINESE_CLIP_NAME in k for k in _recorded(harness))


async def test_corrupt_fat_fails_with_reason_and_nothing_is_written(harness, fat32_camera, tmp_path):
    require_fuse_driver("vfat")
    harness.register("BAD0001")
    image = fat32_camera("BAD0001", clips=1)
    with open(image, "r+b") as fh:  # wreck the boot sector and the first FAT
        fh.write(os.urandom(64 * 1024))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    result = await harness.ingest(1, image, SourceKind.IMAGE, serial="BAD0001")
    assert result.result == "failed"
    assert harness.appliance.board.get("1").state == "empty"  # undocked by the test
    session = harness.rows("SELECT state, reason FROM sessions")[0]
    assert session["state"] == "failed" and session["reason"]
    assert hashlib.sha256(image.read_bytes()).hexdigest() == digest


@pytest.mark.slow
async def test_thousands_of_small_files(harness, many_files_camera):
    require_fuse_driver("vfat")
    harness.register("MANY0001")
    image = many_files_camera(count=3000)
    started = time.monotonic()
    result = await harness.ingest(1, image, SourceKind.IMAGE, timeout=600)
    assert result.result == "done", result.reason
    count = harness.rows("SELECT count(*) n FROM recordings")[0]["n"]
    assert count >= 3000
    print(f"3000 small files ingested through fusefat in {time.monotonic() - started:.1f} s")


@pytest.mark.slow
async def test_file_over_4gib_on_exfat(harness, exfat_camera):
    require_fuse_driver("exfat")
    harness.register("BIG0001")
    image = exfat_camera("BIG0001", clips=1, image_size=(4 << 30) + (700 << 20))
    size = (4 << 30) + (100 << 20)
    timing = add_large_file_to_exfat(image, "DCIM/20261127/BIG_0001.MP4", size, head=b"big-clip")
    started = time.monotonic()
    result = await harness.ingest(1, image, SourceKind.IMAGE, timeout=1200)
    assert result.result == "done", result.reason
    row = harness.rows("SELECT size, sha256, vault_path FROM recordings WHERE rel_path LIKE '%BIG_0001%'")[0]
    assert row["size"] == size
    expected = hashlib.sha256()
    expected.update(b"big-clip")
    zeros = bytes(1 << 20)
    left = size - 8
    while left:
        n = min(left, len(zeros))
        expected.update(zeros[:n])
        left -= n
    assert row["sha256"] == expected.hexdigest()
    print(f">4 GiB: building {timing.seconds_write:.1f} s, ingest {time.monotonic() - started:.1f} s")
    os.chmod(harness.appliance.vault.root / row["vault_path"], 0o644)
    os.truncate(harness.appliance.vault.root / row["vault_path"], 0)  # free the space now


def _faulty_source(tmp_path: Path, count: int = 6, size: int = 4 << 20) -> tuple[Path, dict[str, str]]:
    src = tmp_path / "camera-src"
    media = src / "DCIM" / "100MEDIA"
    media.mkdir(parents=True)
    (src / "DEVICE.TXT").write_text("SERIAL=FLT0001\n")
    expected = {}
    for i in range(count):
        data = os.urandom(size)
        (media / f"CLIP{i:03d}.MP4").write_bytes(data)
        expected[f"DCIM/100MEDIA/CLIP{i:03d}.MP4"] = hashlib.sha256(data).hexdigest()
    return src, expected


@pytest.mark.config(ingest={"wipe": "after-verify", "ffprobe": False})
async def test_read_error_mid_file_keeps_the_rest_and_wipes_nothing(harness, fault_fs, tmp_path):
    harness.register("FLT0001")
    src, expected = _faulty_source(tmp_path)
    fs = fault_fs(src, eio_after={"DCIM/100MEDIA/CLIP002.MP4": 1 << 20})
    result = await harness.ingest(1, fs.path)
    assert result.result == "failed"
    assert "CLIP002.MP4" in result.reason and "byte" in result.reason
    recorded = _recorded(harness)
    assert set(recorded) == set(expected) - {"DCIM/100MEDIA/CLIP002.MP4"}
    assert all(recorded[k] == expected[k] for k in recorded)
    assert all((src / k).exists() for k in expected), "nothing may be wiped after a read error"
    assert "读取失败" in harness.appliance.board.get("1").message_zh or \
        harness.rows("SELECT state FROM sessions")[0]["state"] == "failed"


async def test_camera_pulled_mid_copy_resumes_on_redock(harness, fault_fs, tmp_path):
    harness.register("FLT0001")
    src, expected = _faulty_source(tmp_path, count=8, size=8 << 20)
    fs = fault_fs(src)
    harness.dock(3, fs.path)
    for _ in range(400):  # wait until the copy is under way
        if harness.rows("SELECT count(*) n FROM session_files")[0]["n"] >= 1:
            break
        await asyncio.sleep(0.01)
    fs.unplug("eio")
    harness.undock(3)
    await asyncio.wait_for(harness.appliance.wait_idle(), 60)
    first = harness.finished[-1]
    assert first.result == "interrupted", first.reason
    assert harness.rows("SELECT count(*) n FROM recordings")[0]["n"] == 0
    copied_before = harness.rows("SELECT count(*) n FROM session_files")[0]["n"]
    assert copied_before >= 1
    fs.plug()
    result = await harness.ingest(3, fs.path)
    assert result.result == "done", result.reason
    sessions = harness.rows("SELECT id, state FROM sessions")
    assert len(sessions) == 1 and sessions[0]["state"] == "done"  # the same session, resumed
    assert _recorded(harness) == expected  # nothing lost, nothing twice
    reads = fs.stats()
    assert reads["mode"] in ("ok", "healthy", None) or reads


async def test_invalid_utf8_name_from_a_camera(harness, fault_fs, tmp_path):
    harness.register("FLT0001")
    src, expected = _faulty_source(tmp_path, count=2, size=1000)
    bad = os.fsdecode(b"DCIM/100MEDIA/\xb2\xe2\xca\xd4.MP4")  # GBK bytes, not UTF-8
    fs = fault_fs(src, rename={"DCIM/100MEDIA/CLIP001.MP4": bad})
    result = await harness.ingest(1, fs.path)
    assert result.result == "done", result.reason
    rows = {bytes(r["rel_path_raw"]): r for r in harness.rows("SELECT * FROM recordings")}
    raw = b"DCIM/100MEDIA/\xb2\xe2\xca\xd4.MP4"
    assert raw in rows and rows[raw]["sha256"] == expected["DCIM/100MEDIA/CLIP001.MP4"]
    assert rows[raw]["rel_path"] == "DCIM/100MEDIA/\\xb2\\xe2\\xca\\xd4.MP4"


@pytest.fixture
def small_vault(tmp_path):
    """A 24 MiB tmpfs as the vault, so the disk really fills up."""
    path = tmp_path / "vault"
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.config(ingest={"wipe": "after-verify", "ffprobe": False})
async def test_vault_filling_up_mid_copy_fails_cleanly(small_vault, tmp_path):
    from appliance.daemon import Appliance
    from tests.support.appliance import Harness, make_config

    config = make_config(tmp_path, vault={"path": str(small_vault), "reserve": 0},
                         ingest={"wipe": "after-verify", "ffprobe": False})
    appliance = Appliance(config)
    await appliance.start(udev=False, web_listener=False)
    try:
        h = Harness(appliance)
        h.register("FLT0001")
        src, expected = _faulty_source(tmp_path, count=8, size=4 << 20)
        h.dock(1, src)
        await asyncio.sleep(0)
        await asyncio.wait_for(appliance.wait_idle(), 60)
        result = h.finished[-1]
        assert result.result == "failed" and result.vault_full
        assert appliance.metrics.vault_full._value.get() == 1
        assert all((src / k).exists() for k in expected), "nothing may be wiped"
        assert h.rows("SELECT count(*) n FROM recordings")[0]["n"] == 0
        leftovers = [p for p in small_vault.rglob(".partial-*")]
        assert leftovers == []
        assert "空间不足" in appliance.board.get("1").message_zh
    finally:
        await appliance.stop()
