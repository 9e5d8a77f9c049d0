"""The fault-injecting FUSE file system really injects its faults."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from appliance.dock.mount import is_mounted, mount_volume, unmount_volume
from tests.support.camera_fixtures import require_fuse, require_fuse_driver
from tests.support.faultfs import FaultConfig, FaultFSError, faultfs

BAD_NAME = b"bad\xff\xfe.mp4"
DATA = bytes(range(256)) * 4096  # 1 MiB with a recognisable pattern


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "DCIM").mkdir(parents=True)
    (src / "DCIM" / "A.MP4").write_bytes(DATA)
    (src / "DCIM" / "B.MP4").write_bytes(b"b" * 5000)
    (src / "DEVICE.TXT").write_text("SERIAL=FAULT1\n")
    return src


def _read_all(path: Path | bytes, block: int) -> tuple[bytes, OSError | None]:
    got = bytearray()
    try:
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(block):
                got += chunk
    except OSError as exc:
        return bytes(got), exc
    return bytes(got), None


@pytest.mark.parametrize("block", [4096, 65536, 1 << 20])
def test_eio_past_an_offset_reaches_the_reader(source: Path, fault_fs, block: int) -> None:  # noqa: ANN001
    fs = fault_fs(source, eio_after={"DCIM/A.MP4": 300_000})
    got, error = _read_all(fs.path / "DCIM" / "A.MP4", block)
    assert error is not None and error.errno == errno.EIO
    assert got == DATA[:len(got)], "what was read before the error is the real data"
    assert len(got) == 300_000, "every byte before the bad spot is readable"
    # Other files and the rest of the tree are unaffected.
    assert (fs.path / "DCIM" / "B.MP4").read_bytes() == b"b" * 5000
    assert os.stat(fs.path / "DCIM" / "A.MP4").st_size == len(DATA)


@pytest.mark.parametrize("mode,codes", [
    ("eio", {errno.EIO}),
    ("enodev", {errno.ENODEV}),
    ("kill", {errno.ENOTCONN, errno.ECONNABORTED}),
])
def test_unplug_makes_every_later_operation_fail(source: Path, fault_fs, mode: str, codes: set[int]) -> None:  # noqa: ANN001
    fs = fault_fs(source)
    fh = open(fs.path / "DCIM" / "A.MP4", "rb", buffering=0)
    try:
        assert fh.read(65536) == DATA[:65536]  # the copy has started
        fs.unplug(mode)
        with pytest.raises(OSError) as exc:
            fh.read(65536)
        assert exc.value.errno in codes
    finally:
        with contextlib.suppress(OSError):
            fh.close()  # a dead FUSE connection fails even the close (ENOTCONN)
    for operation in (lambda: os.listdir(fs.path), lambda: os.stat(fs.path / "DEVICE.TXT"),
                      lambda: open(fs.path / "DCIM" / "B.MP4", "rb").read()):
        with pytest.raises(OSError) as exc:
            operation()
        assert exc.value.errno in codes


def test_unplug_vanish_removes_the_mount(source: Path, fault_fs) -> None:  # noqa: ANN001
    fs = fault_fs(source)
    assert os.listdir(fs.path)
    fs.unplug("vanish")
    assert not is_mounted(fs.path)
    assert os.listdir(fs.path) == [], "the mount point is an empty folder again"
    assert fs.process.wait(timeout=10) is not None, "the driver exits once unmounted"


def test_unplug_hang_blocks_until_plugged(source: Path, fault_fs) -> None:  # noqa: ANN001
    fs = fault_fs(source)
    fs.unplug("hang")
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(os.listdir(fs.path)), daemon=True)
    reader.start()
    reader.join(0.5)
    assert reader.is_alive(), "a hung camera does not answer"
    fs.plug()
    reader.join(10)
    assert result and sorted(result[0]) == ["DCIM", "DEVICE.TXT"]


def test_invalid_utf8_name_is_served(source: Path, fault_fs) -> None:  # noqa: ANN001
    # A name already stored as raw bytes on the source passes through as is ...
    with open(os.fsencode(source / "DCIM") + b"/raw\xe9.MP4", "wb") as fh:
        fh.write(b"raw")
    # ... and any file can be presented under a name that is not UTF-8.
    fs = fault_fs(source, rename={"DCIM/B.MP4": "DCIM/" + os.fsdecode(BAD_NAME)})
    names = os.listdir(os.fsencode(fs.path / "DCIM"))
    assert BAD_NAME in names and b"raw\xe9.MP4" in names
    assert b"B.MP4" not in names, "the renamed file is only visible under its new name"
    with pytest.raises(UnicodeDecodeError):
        BAD_NAME.decode("utf-8")
    with open(os.fsencode(fs.path / "DCIM") + b"/" + BAD_NAME, "rb") as fh:
        assert fh.read() == b"b" * 5000
    assert os.stat(os.fsencode(fs.path / "DCIM") + b"/" + BAD_NAME).st_size == 5000


def test_faults_compose_on_a_renamed_file(source: Path, fault_fs) -> None:  # noqa: ANN001
    bad = "DCIM/" + os.fsdecode(BAD_NAME)
    fs = fault_fs(source, rename={"DCIM/A.MP4": bad}, eio_after={bad: 1000})
    got, error = _read_all(os.fsencode(fs.path) + b"/DCIM/" + BAD_NAME, 4096)
    assert len(got) == 1000 and error is not None and error.errno == errno.EIO


def test_the_context_manager_cleans_up_when_the_test_fails(source: Path, tmp_path: Path) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    with pytest.raises(RuntimeError, match="test failed"):
        with faultfs(source, mnt) as fs:
            process = fs.process
            fs.unplug("hang")  # even a hung file system
            raise RuntimeError("test failed")
    assert not is_mounted(mnt)
    assert process.poll() is not None
    assert not mnt.exists(), "the mount point it created is removed"


def test_a_bad_source_fails_clearly(tmp_path: Path) -> None:
    require_fuse()
    with pytest.raises(FaultFSError, match="faultfs"):
        with faultfs(tmp_path / "missing", tmp_path / "mnt", start_timeout=5):
            pass
    assert not is_mounted(tmp_path / "mnt")


def test_config_round_trips_non_utf8_names() -> None:
    config = FaultConfig(eio_after={os.fsdecode(b"a\xff"): 5}, rename={"x": os.fsdecode(BAD_NAME)})
    assert FaultConfig.from_json(config.to_json()) == config


async def test_faultfs_over_a_mounted_camera(fat32_camera, fuse_mounted, fault_fs) -> None:  # noqa: ANN001
    """The stack the ingest tests use: camera image -> fusefat -> faultfs -> reader."""
    require_fuse_driver("vfat")
    vol = await fuse_mounted(fat32_camera("STACK1", clips=1))
    try:
        clip = "DCIM/20261127/STACK1_20261127_081500_0001.MP4"
        fs = fault_fs(vol.path, eio_after={clip: 100_000})
        got, error = _read_all(fs.path / clip, 1 << 20)
        assert len(got) == 100_000 and error.errno == errno.EIO
        assert got == (vol.path / clip).read_bytes()[:100_000]
        fs.unplug("eio")
        with pytest.raises(OSError):
            os.listdir(fs.path)
    finally:
        await unmount_volume(vol)


async def test_mount_volume_accepts_a_faultfs_directory(source: Path, fault_fs) -> None:  # noqa: ANN001
    """A DIRECTORY dock source may be a faultfs mount: used as is, never unmounted by us."""
    fs = fault_fs(source)
    vol = await mount_volume(fs.path, fs.path.parent / "unused")
    assert vol.driver == "directory" and vol.path == fs.path
    await unmount_volume(vol)
    assert is_mounted(fs.path)
    started = time.monotonic()
    fs.unplug("eio")
    with pytest.raises(OSError):
        os.listdir(vol.path)
    assert time.monotonic() - started < 5
