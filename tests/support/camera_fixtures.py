"""Pytest fixtures for simulated cameras: images, FUSE mounts, and their cleanup.

Loaded by ``tests/conftest.py`` (``pytest_plugins``). Every fixture that can leave a
mount, a loop device or a FUSE process behind registers a finalizer that removes them
all under the test's ``tmp_path``, whether the test passed, failed or crashed half-way.

A fixture skips its test (never fakes it) when a tool, /dev/fuse or root is missing.

Fixtures:

* ``camera_cache``: a session-wide cache of generated clips;
* ``fat32_camera`` / ``exfat_camera``: factories ``make(serial="CAM0001", **spec) -> Path``;
* ``many_files_camera``: factory for a camera holding thousands of small files;
* ``fuse_mounted``: ``vol = await fuse_mounted(image)``, unmounted after the test;
* ``fault_fs``: factory for :func:`tests.support.faultfs.faultfs`, stopped after the test.

Helpers: :func:`add_large_file_to_exfat` (a >4 GiB file on an exFAT image, timed),
:func:`require_tools`, :func:`require_fuse`, :func:`cleanup_under`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.demo.cameras import CameraSpec, build_camera_image, exfat_writable
from appliance.dock.mount import MountedVolume, fuse_server_pids, mount_volume
from tests.support.faultfs import FaultFS, faultfs, fuse_available

#: Tools needed to build each kind of image.
TOOLS = {
    "vfat": ("mkfs.vfat", "mcopy", "ffmpeg", "blkid"),
    "exfat": ("mkfs.exfat", "mount.exfat-fuse", "losetup", "ffmpeg", "blkid"),
}


def require_tools(*tools: str) -> None:
    """Skip the calling test, naming what is missing, unless every tool is on PATH."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install: see scripts/packages/*.txt)")


def require_fuse() -> None:
    """Skip the calling test unless FUSE mounts can be made here (root and /dev/fuse)."""
    reason = fuse_available()
    if reason:
        pytest.skip(f"FUSE is not usable: {reason}")


def require_fuse_driver(fs: str) -> None:
    """Skip unless the FUSE driver that mounts ``fs`` here is installed."""
    require_fuse()
    require_tools({"vfat": "fusefat", "exfat": "mount.exfat-fuse"}[fs], "blkid")


# -- cleanup ------------------------------------------------------------------------------


def _mounts_under(root: Path) -> list[Path]:
    prefix = os.fsencode(os.path.abspath(root)) + b"/"
    points = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh.read().splitlines():
            point = line.split(b" ")[4].replace(b"\\040", b" ")
            if point.startswith(prefix):
                points.append(Path(os.fsdecode(point)))
    return points


def cleanup_under(root: Path) -> list[str]:
    """Remove every mount, FUSE process and loop device that lives under ``root``.

    Synchronous and independent of any event loop, so it works in a finalizer after a
    test whose loop is gone. Returns what it had to clean (empty when the test was tidy).
    """
    cleaned = []
    for point in sorted(_mounts_under(root), key=lambda p: len(p.parts), reverse=True):
        pids = fuse_server_pids(point)
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cleaned.append(f"mount {point}" + (f" (FUSE pids {pids})" if pids else ""))
    listing = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                             capture_output=True, text=True, check=False)
    prefix = os.path.abspath(root) + "/"
    for line in listing.stdout.splitlines():
        name, _, backing = line.strip().partition(" ")
        if backing.strip().startswith(prefix):
            subprocess.run(["losetup", "--detach", name], capture_output=True, check=False)
            cleaned.append(f"loop {name} -> {backing.strip()}")
    return cleaned


@pytest.fixture
def _cleanup_tmp(tmp_path: Path) -> Iterator[None]:
    yield
    leftovers = cleanup_under(tmp_path)
    if leftovers:
        # Not a failure of the test itself (it may have failed already), but visible.
        print(f"camera fixtures cleaned up after the test: {leftovers}")


# -- images --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def camera_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where generated clips are cached for the whole test session."""
    return tmp_path_factory.mktemp("camera-cache")


def _factory(fs: str, tmp_path: Path, cache: Path) -> Callable[..., Path]:
    require_tools(*TOOLS[fs])
    if fs == "exfat":
        require_fuse()
    counter = iter(range(1, 1000))

    def make(serial: str = "CAM0001", **spec: object) -> Path:
        image = tmp_path / f"{fs}-{serial}-{next(counter)}.img"
        return build_camera_image(CameraSpec(serial=serial, fs=fs, **spec), image, cache)  # type: ignore[arg-type]

    return make


@pytest.fixture
def fat32_camera(tmp_path: Path, camera_cache: Path, _cleanup_tmp: None) -> Callable[..., Path]:
    """Factory: ``image = fat32_camera("SN1", clips=2, extra_files={...})`` -> a FAT32 image."""
    return _factory("vfat", tmp_path, camera_cache)


@pytest.fixture
def exfat_camera(tmp_path: Path, camera_cache: Path, _cleanup_tmp: None) -> Callable[..., Path]:
    """Factory: ``image = exfat_camera("SN1", ...)`` -> an exFAT image (built via exfat-fuse)."""
    return _factory("exfat", tmp_path, camera_cache)


def many_small_files(count: int, *, per_folder: int = 500, size: int = 256) -> dict[str, bytes]:
    """``count`` small JPEG-looking files spread over DCIM folders.

    8.3 names on purpose: with long names mtools builds each FAT short name by trying
    ``~1``, ``~2``... against the whole folder, and 3000 long names took 21 s instead of 2.
    """
    files = {}
    for i in range(count):
        folder = f"DCIM/P{i // per_folder:07d}"
        files[f"{folder}/IMG{i:05d}.JPG"] = b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big") * (size // 4)
    return files


@pytest.fixture
def many_files_camera(tmp_path: Path, camera_cache: Path,
                      _cleanup_tmp: None) -> Callable[..., Path]:
    """Factory: ``image = many_files_camera(count=3000, fs="vfat")`` -> thousands of small files."""

    def make(count: int = 3000, fs: str = "vfat", serial: str = "MANY0001") -> Path:
        require_tools(*TOOLS[fs])
        if fs == "exfat":
            require_fuse()
        spec = CameraSpec(serial=serial, fs=fs, clips=1, extra_files=many_small_files(count))
        return build_camera_image(spec, tmp_path / f"many-{fs}-{serial}.img", camera_cache)

    return make


# -- mounts --------------------------------------------------------------------------------


@pytest.fixture
def fuse_mounted(tmp_path: Path, _cleanup_tmp: None) -> Callable[..., object]:
    """``vol = await fuse_mounted(image, writable=False)``: mounted via appliance.dock.mount.

    Skips the test when FUSE is unusable. Whatever the test does, the mount is gone after
    it (a plain unmount is the test's business; the finalizer removes what is left).
    """
    require_fuse()
    counter = iter(range(1, 1000))

    async def mount(image: Path, *, writable: bool = False, fs_type: str | None = None) -> MountedVolume:
        return await mount_volume(image, tmp_path / f"mnt-{next(counter)}", writable=writable,
                                  fs_type=fs_type)

    return mount


@pytest.fixture
def fault_fs(tmp_path: Path, _cleanup_tmp: None) -> Iterator[Callable[..., FaultFS]]:
    """Factory: ``fs = fault_fs(source_dir, eio_after=..., rename=...)``, stopped after the test."""
    require_fuse()
    with contextlib.ExitStack() as stack:
        counter = iter(range(1, 1000))

        def start(source: Path, **options: object) -> FaultFS:
            return stack.enter_context(faultfs(source, tmp_path / f"faultfs-{next(counter)}",
                                               **options))  # type: ignore[arg-type]

        yield start


# -- large files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LargeFileTiming:
    """How long :func:`add_large_file_to_exfat` took, and what it cost on the host disk."""

    size: int
    seconds_write: float  # extending the file through exfat-fuse (it writes the zeros)
    seconds_unmount: float  # exfat-fuse flushing on unmount
    seconds_dig_holes: float  # giving the zero blocks back to the host (0 if skipped)
    host_bytes: int  # the image's real disk usage at the end


def add_large_file_to_exfat(image: Path, rel_path: str, size: int, *, head: bytes = b"",
                            dig_holes: bool = True) -> LargeFileTiming:
    """Add a ``size``-byte file (``head`` followed by zeros) to an exFAT image, timed.

    exFAT is the only camera file system that holds a file over 4 GiB. exfat-fuse has no
    sparse files: extending a file writes every zero through FUSE, so this costs about
    10-20 s for 4.5 GiB on a developer machine; afterwards ``fallocate --dig-holes`` makes
    the image sparse again so the test does not keep gigabytes of zeros on disk. The image
    must be big enough (``CameraSpec(image_size=...)`` of at least ``size`` + 64 MiB).
    """
    start = time.monotonic()
    with exfat_writable(image) as mnt:
        target = mnt / rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(head)
            fh.truncate(size)
        written = time.monotonic()
        unmount_started = time.monotonic()
    unmounted = time.monotonic()
    dig = 0.0
    if dig_holes and shutil.which("fallocate"):
        subprocess.run(["fallocate", "--dig-holes", str(image)], check=True, capture_output=True)
        dig = time.monotonic() - unmounted
    return LargeFileTiming(size, written - start, unmounted - unmount_started, dig,
                           os.stat(image).st_blocks * 512)


__all__ = [
    "LargeFileTiming", "add_large_file_to_exfat", "camera_cache", "cleanup_under",
    "exfat_camera", "fat32_camera", "fault_fs", "fuse_mounted",
    "many_files_camera", "many_small_files", "require_fuse", "require_fuse_driver",
    "require_tools",
]
