"""appliance.demo.cameras: simulated cameras are real images with real clips."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import wave
from datetime import datetime, timezone
from pathlib import Path

import pytest

from appliance.config import CameraProfile
from appliance.demo.cameras import (
    CHINESE_CLIP_NAME,
    MODEL,
    CameraSpec,
    build_camera_dir,
    build_camera_image,
    generate_clip,
)
from appliance.dock.mount import unmount_volume
from tests.support.camera_fixtures import require_fuse_driver, require_tools

DAY = "DCIM/20261127"
EXTRA = {
    "DCIM/20261127/现场勘验_第二段_证据.MP4": b"",  # 0 bytes, Chinese
    "DCIM/长文件名/" + "执法记录仪长文件名" * 9 + ".MP4": b"long",  # 81 characters, 243 bytes
    "PHOTO/" + "a" * 200 + ".JPG": b"\xff\xd8\xff",
    "PHOTO/Space and (parens) #1.jpg": b"\xff\xd8\xff\xe0",
}


def _ffprobe(path: Path) -> dict:
    require_tools("ffprobe")
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_type,codec_name,width,height:format=duration",
                          "-of", "json", str(path)], capture_output=True, check=True, text=True)
    return json.loads(out.stdout)


def _files(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            found[p.relative_to(root).as_posix()] = p.stat().st_size
    return found


@pytest.fixture
def spec() -> CameraSpec:
    return CameraSpec("DSJ0042", officer="李警官", clips=3, extra_files=EXTRA)


def test_generate_clip_is_real_small_and_cached(camera_cache: Path) -> None:
    require_tools("ffmpeg")
    clip = generate_clip(camera_cache, 2.0, 7)
    info = _ffprobe(clip)
    codecs = {s["codec_type"]: s for s in info["streams"]}
    assert codecs["video"]["codec_name"] == "h264"
    assert (codecs["video"]["width"], codecs["video"]["height"]) == (640, 360)
    assert codecs["audio"]["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - 2.0) < 0.2
    assert 50_000 < clip.stat().st_size < 700_000
    mtime = clip.stat().st_mtime_ns
    assert generate_clip(camera_cache, 2.0, 7) == clip and clip.stat().st_mtime_ns == mtime
    assert generate_clip(camera_cache, 2.0, 8).read_bytes() != clip.read_bytes()


def test_camera_dir_layout(spec: CameraSpec, tmp_path: Path, camera_cache: Path) -> None:
    require_tools("ffmpeg")
    root = build_camera_dir(spec, tmp_path / "cam", camera_cache)
    files = _files(root)
    device = (root / "DEVICE.TXT").read_text(encoding="utf-8")
    assert f"MODEL={MODEL}" in device and "OFFICER=李警官" in device
    # What the generic profile of appliance.config reads to identify the camera.
    profile = CameraProfile(name="generic")
    assert re.search(profile.identity.pattern, device).group(1) == "DSJ0042"
    clips = sorted(p for p in files if p.startswith(DAY) and p.endswith(".MP4") and p != f"{DAY}/现场勘验_第二段_证据.MP4")
    assert clips == [f"{DAY}/DSJ0042_20261127_081500_0001.MP4", f"{DAY}/DSJ0042_20261127_081614_0003.MP4",
                     f"{DAY}/{CHINESE_CLIP_NAME}"]
    wavs = [p for p in files if p.startswith("AUDIO/") and p.endswith(".WAV")]
    assert len(wavs) == 1
    with wave.open(str(root / wavs[0])) as w:
        assert w.getnframes() == w.getframerate()  # one second
    assert "SYSTEM/log.bin" in files
    assert Path("log.bin").suffix not in profile.extensions, "the log must not look like media"
    assert files[f"{DAY}/现场勘验_第二段_证据.MP4"] == 0
    # Times are the camera's wall clock; the first clip ends 2 s after 08:15:00.
    first = (root / clips[0]).stat().st_mtime
    assert datetime.fromtimestamp(first, timezone.utc).replace(tzinfo=None) == datetime(2026, 11, 27, 8, 15, 2)


def test_every_recording_is_unique_but_valid(tmp_path: Path, camera_cache: Path) -> None:
    require_tools("ffmpeg", "ffprobe")
    a = build_camera_dir(CameraSpec("CAMA", clips=1), tmp_path / "a", camera_cache)
    b = build_camera_dir(CameraSpec("CAMB", clips=1), tmp_path / "b", camera_cache)
    clip_a = a / DAY / "CAMA_20261127_081500_0001.MP4"
    clip_b = b / DAY / "CAMB_20261127_081500_0001.MP4"
    assert clip_a.read_bytes() != clip_b.read_bytes()
    assert _ffprobe(clip_a)["streams"][0]["codec_name"] == "h264"


@pytest.mark.parametrize("fs", ["vfat", "exfat"])
async def test_image_mounts_back_with_everything(fs: str, spec: CameraSpec, tmp_path: Path,
                                                 camera_cache: Path, fuse_mounted, _cleanup_tmp) -> None:  # noqa: ANN001
    require_tools("ffmpeg", "mkfs.vfat" if fs == "vfat" else "mkfs.exfat")
    require_fuse_driver(fs)
    expected = _files(build_camera_dir(spec, tmp_path / "dir", camera_cache))
    started = time.monotonic()
    image = build_camera_image(CameraSpec(**{**spec.__dict__, "fs": fs}), tmp_path / f"{fs}.img", camera_cache)
    built = time.monotonic() - started
    assert built < 20
    assert os.stat(image).st_blocks * 512 < 32 << 20, "the image is sparse"
    vol = await fuse_mounted(image)
    try:
        assert vol.fs_type == fs
        seen = _files(vol.path)
        if fs == "vfat":
            # fusefat ignores the FAT "lower case" flags of pure 8.3 names and shows the
            # volume label as an empty file in the root.
            seen = {k.replace("SYSTEM/LOG.BIN", "SYSTEM/log.bin"): v for k, v in seen.items()
                    if k != "DSJ_CAM"}
        assert seen == expected
        assert "SERIAL=DSJ0042" in (vol.path / "DEVICE.TXT").read_text()
        assert (vol.path / DAY / CHINESE_CLIP_NAME).exists()
        info = _ffprobe(vol.path / DAY / CHINESE_CLIP_NAME)
        assert [s["codec_name"] for s in info["streams"]] == ["h264", "aac"]
        shown = datetime.fromtimestamp((vol.path / DAY / "DSJ0042_20261127_081500_0001.MP4").stat().st_mtime,
                                       timezone.utc)
        if fs == "exfat":
            assert shown.replace(tzinfo=None) == datetime(2026, 11, 27, 8, 15, 2)
        else:
            # fusefat reads the FAT month one too high (documented in appliance.demo.cameras);
            # the image itself is right, as mtools shows below.
            assert (shown.day, shown.hour, shown.minute, shown.second) == (27, 8, 15, 2)
            assert shown.month in (11, 12)
    finally:
        await unmount_volume(vol)
    if fs == "vfat":
        listing = subprocess.run(["mdir", "-i", str(image), f"::/{DAY}"], capture_output=True,
                                 env={**os.environ, "LC_ALL": "C.UTF-8", "MTOOLSRC": "/dev/null"},
                                 text=True, check=True).stdout
        assert re.search(r"2026-11-27\s+8:15 +DSJ0042_20261127_081500_0001\.MP4", listing)
        assert CHINESE_CLIP_NAME in listing


def test_spec_refuses_what_fat_cannot_hold() -> None:
    with pytest.raises(ValueError, match="serial"):
        CameraSpec("bad serial")
    with pytest.raises(ValueError, match="FAT cannot store"):
        CameraSpec("X1", extra_files={"DCIM/a:b.MP4": b""})
    with pytest.raises(ValueError, match="longer than 254"):
        CameraSpec("X1", extra_files={"DCIM/" + "x" * 251 + ".MP4": b""})
    with pytest.raises(ValueError, match="relative"):
        CameraSpec("X1", extra_files={"../x": b""})
    with pytest.raises(ValueError, match="fs"):
        CameraSpec("X1", fs="ntfs")


def test_case_clash_is_refused(tmp_path: Path, camera_cache: Path) -> None:
    spec = CameraSpec("X1", clips=0, extra_files={"DCIM/a.MP4": b"1", "DCIM/A.mp4": b"2"})
    with pytest.raises(ValueError, match="case-insensitive"):
        build_camera_dir(spec, tmp_path / "d", camera_cache)
