"""Disk images that look like a body-worn camera's storage, built on the host.

A camera presents one FAT32 partition (MBR) with its recordings under ``DCIM/`` and an
identity file ``DEVICE.TXT``. The images are made with mkfs.vfat and mtools only, so that no
loop device or vfat driver is needed on the host (this host's kernel has none).
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512
# The partition starts at 1 MiB, as camera firmware and most formatters place it.
PARTITION_START_SECTOR = 2048


@dataclass
class CameraImage:
    """A camera disk image and what is on it (path on the camera -> SHA-256)."""

    path: Path
    serial: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def mtools_target(self) -> str:
        """The image as mtools names its FAT partition (``image@@offset``)."""
        return f"{self.path}@@{PARTITION_START_SECTOR * SECTOR}"


def make_clip(path: Path, seconds: int = 2, index: int = 0) -> None:
    """A short real video (MPEG-4 in MP4) from ffmpeg's test pattern, different per index."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc=duration={seconds}:size=320x240:rate=15",
         "-f", "lavfi", "-i", f"sine=frequency={440 + 110 * index}:duration={seconds}",
         "-metadata", f"comment=clip {index}",
         "-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac", "-shortest", str(path)],
        check=True, capture_output=True,
    )


def make_camera_image(
    path: Path, serial: str, *, clips: int = 2, size_mib: int = 64, workdir: Path | None = None
) -> CameraImage:
    """Build a partitioned FAT32 camera image at ``path`` holding ``clips`` recordings."""
    workdir = workdir or path.parent
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    subprocess.run(["sfdisk", "-q", str(path)], check=True, capture_output=True,
                   input=f"label: dos\nstart={PARTITION_START_SECTOR}, type=c\n".encode())
    part_sectors = size_mib * 1024 * 1024 // SECTOR - PARTITION_START_SECTOR
    # One sector per cluster so that even a small image has the cluster count FAT32 requires.
    subprocess.run(
        ["mkfs.vfat", "-F", "32", "-s", "1", "-n", "CAMERA", "-i", _volume_id(serial),
         "--offset", str(PARTITION_START_SECTOR), str(path), str(part_sectors // 2)],
        check=True, capture_output=True,
    )
    image = CameraImage(path=path, serial=serial)
    _mtools(["mmd", "-i", image.mtools_target, "::DCIM", "::DCIM/100MEDIA"])
    identity = workdir / f"{serial}-DEVICE.TXT"
    identity.write_text(f"SN={serial}\r\nMODEL=DSJ-TEST\r\n")
    _copy_in(image, identity, "DEVICE.TXT")
    for i in range(clips):
        clip = workdir / f"{serial}-clip{i}.mp4"
        make_clip(clip, index=i)
        _copy_in(image, clip, f"DCIM/100MEDIA/REC{i:04d}.MP4")
    return image


def _copy_in(image: CameraImage, source: Path, target: str) -> None:
    _mtools(["mcopy", "-o", "-i", image.mtools_target, str(source), f"::{target}"])
    image.files[target] = hashlib.sha256(source.read_bytes()).hexdigest()


def _mtools(cmd: list[str]) -> None:
    # mtools refuses images whose geometry it cannot check unless told not to.
    subprocess.run(cmd, check=True, capture_output=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})


def _volume_id(serial: str) -> str:
    """A FAT volume id derived from the serial, so that each camera's file system differs."""
    return hashlib.sha256(serial.encode()).hexdigest()[:8]
