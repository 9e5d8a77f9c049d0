"""Simulated body-worn cameras for ``appliance demo``, the benchmark and the tests.

A simulated camera is a real FAT32 or exFAT image (or, as a last resort, a plain folder)
with the layout the generic camera profile of :mod:`appliance.config` expects::

    DEVICE.TXT                                   MODEL=DSJ-demo / SERIAL=<serial> [/ OFFICER=...]
    DCIM/20261127/<serial>_20261127_081500_0001.MP4
    DCIM/20261127/执法记录_现场检查_0002.MP4        (the second clip has a Chinese name)
    DCIM/20261127/<serial>_20261127_081614_0003.MP4
    AUDIO/<serial>_20261127_082151_0001.WAV
    SYSTEM/log.bin                               (not media: must never be ingested)

The clips are real H.264/AAC MP4 files made by ffmpeg (a few hundred KB each) and cached;
each copy on a camera gets a trailing ``free`` box naming the camera and the file, so no
two recordings anywhere are byte-identical (as on real cameras) while ffprobe still reads
them as valid.

Times: a camera's clock is a wall clock without a time zone, and FAT stores exactly that.
``CameraSpec.start`` is that wall clock; files are written so that their FAT/exFAT time
fields hold it, which means a reader running with ``TZ=UTC`` sees the same numbers. The
ingest maps camera wall-clock times to real time with the station's time zone. A file's
time is when its recording ended; FAT keeps it to 2 seconds (08:15:39 reads as 08:15:38),
exFAT to 10 ms.

Known quirk: fusefat (the FUSE FAT driver used where the kernel has no vfat) reports file
dates one month late (a file written 2026-11-27 shows as 2026-12-27) and writes them one
month early: it treats the FAT month (1-12) as a ``struct tm`` month (0-11). The images
here are right (mtools and fsck.fat read them back correctly); it is not worked around.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import shutil
import struct
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

#: The volume label of every simulated camera.
VOLUME_LABEL = "DSJ_CAM"
#: The model written to DEVICE.TXT.
MODEL = "DSJ-demo"
#: The Chinese file name given to the second clip of every camera.
CHINESE_CLIP_NAME = "执法记录_现场检查_0002.MP4"

_CLIP_FORMAT_VERSION = 1  # bump when the ffmpeg recipe changes, to invalidate the cache
_TOOL_TIMEOUT = 300.0
# FAT forbids these in names (besides control characters); mtools would rename or prompt.
_FAT_FORBIDDEN = set('"*/:<>?\\|')


class CameraBuildError(RuntimeError):
    """A simulated camera could not be built (a tool failed); the message has its stderr."""


@dataclass(frozen=True)
class CameraSpec:
    """What one simulated camera holds.

    ``start`` (camera wall-clock time of the first clip) and ``gap_seconds`` (pause between
    two clips) are extras beyond the basic fields, for tests of gap detection.
    """

    serial: str
    officer: str = ""
    fs: str = "vfat"  # 'vfat' (FAT32) or 'exfat'
    clips: int = 3  # number of short real MP4 clips
    clip_seconds: float = 2.0
    extra_files: dict[str, bytes] = field(default_factory=dict, hash=False)
    image_size: int = 256 << 20
    start: datetime = datetime(2026, 11, 27, 8, 15, 0)
    gap_seconds: float = 35.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.serial):
            raise ValueError(f"serial {self.serial!r}: use 1-32 letters, digits, _ or -")
        if self.fs not in ("vfat", "exfat"):
            raise ValueError(f"fs {self.fs!r}: 'vfat' or 'exfat'")
        if self.clips < 0 or self.clip_seconds <= 0:
            raise ValueError("clips must be >= 0 and clip_seconds > 0")
        if self.fs == "vfat" and self.image_size < 40 << 20:
            raise ValueError("a FAT32 image needs at least 40 MiB (65525 clusters)")
        if self.image_size < 8 << 20:
            raise ValueError("image_size must be at least 8 MiB")
        for rel in self.extra_files:
            _check_camera_path(rel)


def _check_camera_path(rel: str) -> None:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"extra file {rel!r}: a relative path with / separators and no '..'")
    for part in parts:
        if any(c in _FAT_FORBIDDEN or ord(c) < 32 for c in part):
            raise ValueError(f"extra file {rel!r}: a character FAT cannot store")
        if len(part.encode("utf-16-le")) // 2 > 254 or len(part.encode()) > 255:
            # FAT allows 255 UTF-16 units but mtools refuses 255 ("No directory slots") and
            # Linux allows 255 bytes of UTF-8 in one name.
            raise ValueError(f"extra file {rel!r}: a name longer than 254 characters / 255 bytes")


# -- media -----------------------------------------------------------------------------


def _run(argv: list[str], *, env: dict[str, str] | None = None,
         timeout: float = _TOOL_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                env=env, timeout=timeout, check=False)
    except FileNotFoundError:
        raise CameraBuildError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CameraBuildError(f"{argv[0]} did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip()[-1500:]
        raise CameraBuildError(f"{' '.join(argv[:3])}... failed ({result.returncode}): {detail}")
    return result


def _tool_env(**extra: str) -> dict[str, str]:
    # UTF-8 so mtools keeps Chinese names; TZ=UTC so a file's epoch mtime is stored on the
    # card as the same wall-clock numbers (see the module docstring).
    env = dict(os.environ)
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC", MTOOLSRC="/dev/null",
               MTOOLS_SKIP_CHECK="1")
    env.update(extra)
    return env


def generate_clip(cache_dir: Path, seconds: float, index: int) -> Path:
    """A real H.264/AAC MP4 clip (640x360, ``seconds`` long), made once and cached.

    ``index`` changes the tone of the audio track, so clips of different index differ.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"clip-v{_CLIP_FORMAT_VERSION}-{seconds:g}s-{index}.mp4"
    if path.exists():
        return path
    tone = 300 + 70 * (index % 20)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".mp4", dir=cache_dir)
    os.close(fd)
    try:
        _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
              "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds:g}",
              "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000:duration={seconds:g}",
              "-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-pix_fmt", "yuv420p",
              "-c:a", "aac", "-b:a", "64k", "-shortest", "-movflags", "+faststart",
              "-map_metadata", "-1", "-f", "mp4", tmp])
        os.replace(tmp, path)  # atomic: parallel builders never see a half-written clip
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def _wav_bytes(seconds: float, seed: str) -> bytes:
    """A short mono 16 kHz WAV (a quiet tone), made in Python: no ffmpeg needed."""
    rate = 16000
    freq = 440 + int(hashlib.sha256(seed.encode()).hexdigest()[:2], 16)
    frames = b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * freq * n / rate)))
                      for n in range(int(rate * seconds)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def _tagged(mp4: bytes, tag: str) -> bytes:
    # A top-level 'free' box is valid anywhere in an ISO BMFF file and ignored by players.
    payload = tag.encode("utf-8")
    return mp4 + struct.pack(">I4s", 8 + len(payload), b"free") + payload


# -- layout ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    rel: str
    data: bytes
    mtime: datetime  # camera wall clock


def _layout(spec: CameraSpec, cache_dir: Path) -> list[_Entry]:
    """Every file of the camera with its content and time."""
    entries = [_Entry("DEVICE.TXT",
                      (f"MODEL={MODEL}\r\nSERIAL={spec.serial}\r\n"
                       + (f"OFFICER={spec.officer}\r\n" if spec.officer else "")).encode("utf-8"),
                      spec.start - timedelta(days=30))]
    t = spec.start
    for i in range(1, spec.clips + 1):
        day = t.strftime("%Y%m%d")
        name = (CHINESE_CLIP_NAME if i == 2
                else f"{spec.serial}_{day}_{t.strftime('%H%M%S')}_{i:04d}.MP4")
        rel = f"DCIM/{day}/{name}"
        data = _tagged(generate_clip(cache_dir, spec.clip_seconds, i).read_bytes(),
                       f"{spec.serial}/{rel}")
        end = t + timedelta(seconds=spec.clip_seconds)
        entries.append(_Entry(rel, data, end))  # a camera closes the file when recording ends
        t = end + timedelta(seconds=spec.gap_seconds)
    audio_start = t + timedelta(minutes=5)
    entries.append(_Entry(
        f"AUDIO/{spec.serial}_{audio_start.strftime('%Y%m%d_%H%M%S')}_0001.WAV",
        _wav_bytes(1.0, spec.serial), audio_start + timedelta(seconds=1)))
    noise = hashlib.shake_256(f"log-{spec.serial}".encode()).digest(4096)
    entries.append(_Entry("SYSTEM/log.bin", noise, audio_start + timedelta(minutes=1)))
    for rel, data in spec.extra_files.items():
        entries.append(_Entry(rel, data, spec.start))
    seen: dict[str, str] = {}
    for e in entries:
        key = e.rel.casefold()
        if key in seen:
            raise ValueError(f"{e.rel!r} and {seen[key]!r} are the same name on FAT (case-insensitive)")
        seen[key] = e.rel
    return entries


def _epoch(wall_clock: datetime) -> float:
    return wall_clock.replace(tzinfo=timezone.utc).timestamp()


def _write_tree(entries: list[_Entry], root: Path) -> None:
    for e in entries:
        path = root / e.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(e.data)
        os.utime(path, (_epoch(e.mtime), _epoch(e.mtime)))


def build_camera_dir(spec: CameraSpec, dir_path: Path, cache_dir: Path) -> Path:
    """The camera's files as a plain folder (the demo's last-resort source); returns it."""
    dir_path = Path(dir_path)
    dir_path.mkdir(parents=True, exist_ok=True)
    _write_tree(_layout(spec, Path(cache_dir)), dir_path)
    return dir_path


def build_camera_image(spec: CameraSpec, image_path: Path, cache_dir: Path) -> Path:
    """A FAT32 or exFAT image file holding the camera's files; returns its path.

    FAT32 is made with mkfs.vfat and filled with mtools (no mount needed); exFAT is made
    with mkfs.exfat and filled through a writable exfat-fuse mount (needs root and
    /dev/fuse). The image is sparse: only the data written takes disk space.
    """
    image_path = Path(image_path)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    entries = _layout(spec, Path(cache_dir))
    image_path.unlink(missing_ok=True)
    with open(image_path, "wb") as fh:
        fh.truncate(spec.image_size)
    try:
        with tempfile.TemporaryDirectory(prefix="camera-", dir=image_path.parent) as staging:
            staging_path = Path(staging)
            _write_tree(entries, staging_path)
            if spec.fs == "vfat":
                _fill_fat32(spec, image_path, staging_path)
            else:
                _fill_exfat(image_path, staging_path)
    except BaseException:
        image_path.unlink(missing_ok=True)
        raise
    return image_path


def _volume_id(serial: str) -> str:
    return hashlib.sha256(serial.encode()).hexdigest()[:8].upper()


def _fill_fat32(spec: CameraSpec, image: Path, staging: Path) -> None:
    _run(["mkfs.vfat", "-F", "32", "-n", VOLUME_LABEL, "-i", _volume_id(spec.serial), str(image)])
    tops = sorted(str(p) for p in staging.iterdir())
    # -s recursive, -m keep mtimes, -Q stop at the first error, -D o never prompt on a
    # clash (there is none: names were checked case-insensitively above).
    _run(["mcopy", "-s", "-m", "-Q", "-D", "o", "-i", str(image), *tops, "::/"], env=_tool_env())


def _fill_exfat(image: Path, staging: Path) -> None:
    _run(["mkfs.exfat", "-L", VOLUME_LABEL, str(image)])
    with exfat_writable(image) as mnt:
        for src in sorted(staging.rglob("*")):
            dst = mnt / src.relative_to(staging)
            if src.is_dir():
                dst.mkdir(exist_ok=True)
            else:
                shutil.copyfile(src, dst)
                st = src.stat()
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


@contextlib.contextmanager
def exfat_writable(image: Path) -> Iterator[Path]:
    """Mount an exFAT image read-write with exfat-fuse for the duration of the block.

    Synchronous on purpose (image building runs in worker threads and test fixtures,
    outside any event loop). The loop device is detached at once and frees itself when
    exfat-fuse exits; the mount is always removed, even when the block raises.
    """
    mnt = Path(tempfile.mkdtemp(prefix="exfat-rw-", dir=Path(image).parent))
    device = _run(["losetup", "--find", "--show", str(image)]).stdout.decode().strip()
    mounted = False
    try:
        _run(["mount.exfat-fuse", "-o", "rw,nosuid,nodev,noexec", device, str(mnt)], env=_tool_env())
        mounted = True
    finally:
        subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)
        if not mounted:
            mnt.rmdir()
    try:
        yield mnt
    finally:
        # fuseblk: umount waits until exfat-fuse has flushed everything to the image.
        done = subprocess.run(["umount", str(mnt)], capture_output=True, check=False, timeout=120)
        if done.returncode != 0:
            subprocess.run(["umount", "--lazy", str(mnt)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


__all__ = ["CHINESE_CLIP_NAME", "CameraBuildError", "CameraSpec", "MODEL", "VOLUME_LABEL",
           "build_camera_dir", "build_camera_image", "exfat_writable", "generate_clip"]
