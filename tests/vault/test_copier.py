"""The copier: verified or nothing, and nothing half-done left behind."""

import errno
import hashlib
import os
import stat

import pytest

from appliance.errors import SourceReadError, VaultFullError, VerifyMismatch
from appliance.vault import copier
from appliance.vault.copier import PARTIAL_PREFIX, copy_verified, remove_partials, write_file_atomic
from appliance.vault.hashing import hash_bytes


def _src(tmp_path, data: bytes, name="clip.mp4"):
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    return path


def test_copy_gives_identical_readonly_file_with_camera_time_and_hashes(tmp_path):
    data = os.urandom(3 * 65536 + 17)
    src = _src(tmp_path, data)
    dest = tmp_path / "vault" / "clip.mp4"
    dest.parent.mkdir()
    seen = []
    result = copy_verified(src, dest, ["sha256", "sm3"], block_size=65536, progress=seen.append)
    assert dest.read_bytes() == data
    assert result.digests.sha256 == hashlib.sha256(data).hexdigest()
    assert result.digests.get("sm3") == hash_bytes(data, ["sm3"]).get("sm3")
    assert sum(seen) == len(data) == result.size
    assert stat.S_IMODE(dest.stat().st_mode) == 0o444
    assert dest.stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(PARTIAL_PREFIX)]


def test_empty_file_copies(tmp_path):
    src = _src(tmp_path, b"")
    dest = tmp_path / "out"
    result = copy_verified(src, dest, ["sha256"])
    assert result.size == 0 and dest.read_bytes() == b""
    assert result.digests.sha256 == hashlib.sha256(b"").hexdigest()


def test_readback_mismatch_leaves_nothing(tmp_path, monkeypatch):
    src = _src(tmp_path, b"x" * 100000)
    dest = tmp_path / "out.mp4"
    real = copier._hash_from_disk

    def corrupted(path, algorithms, block_size):
        # Simulate a disk that returns other bytes than were written.
        with open(path, "r+b") as fh:
            fh.write(b"y")
        return real(path, algorithms, block_size)

    monkeypatch.setattr(copier, "_hash_from_disk", corrupted)
    with pytest.raises(VerifyMismatch):
        copy_verified(src, dest, ["sha256"])
    assert not dest.exists()
    assert list(tmp_path.glob(PARTIAL_PREFIX + "*")) == []


def test_source_that_changes_during_copy_is_refused(tmp_path, monkeypatch):
    src = _src(tmp_path, b"a" * 200000)
    dest = tmp_path / "out"
    real_pump = copier._pump

    def growing(src_path, src_fd, dst_fd, hasher, block_size, progress):
        total = real_pump(src_path, src_fd, dst_fd, hasher, block_size, progress)
        with open(src_path, "ab") as fh:
            fh.write(b"more")
        return total

    monkeypatch.setattr(copier, "_pump", growing)
    with pytest.raises(SourceReadError, match="changed while it was copied"):
        copy_verified(src, dest, ["sha256"])
    assert not dest.exists()


def test_symlink_source_is_not_followed(tmp_path):
    target = _src(tmp_path, b"secret")
    link = tmp_path / "src" / "link.mp4"
    link.symlink_to(target)
    with pytest.raises(SourceReadError):
        copy_verified(link, tmp_path / "out", ["sha256"])


def test_full_disk_is_vault_full(tmp_path, monkeypatch):
    src = _src(tmp_path, b"z" * 100000)

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(copier.os, "write", no_space)
    with pytest.raises(VaultFullError):
        copy_verified(src, tmp_path / "out", ["sha256"])
    monkeypatch.undo()
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(PARTIAL_PREFIX + "*")) == []


def test_existing_unrecorded_file_is_replaced_atomically(tmp_path):
    """A crash between rename and record leaves a final name; the resumed copy replaces it."""
    src = _src(tmp_path, b"new content")
    dest = tmp_path / "out"
    dest.write_bytes(b"stale")
    dest.chmod(0o444)
    copy_verified(src, dest, ["sha256"])
    assert dest.read_bytes() == b"new content"


def test_write_file_atomic_and_remove_partials(tmp_path):
    write_file_atomic(tmp_path / "m.json", b"{}")
    assert (tmp_path / "m.json").read_bytes() == b"{}"
    (tmp_path / "sub").mkdir()
    leftover = tmp_path / "sub" / (PARTIAL_PREFIX + "abc")
    leftover.write_bytes(b"half")
    assert remove_partials(tmp_path) == [leftover]
    assert not leftover.exists()


@pytest.mark.parametrize("mode", ["eio", "enodev"])
def test_camera_pulled_right_after_open_is_a_source_error(tmp_path, fault_fs, monkeypatch, mode):
    """The camera goes between ``open`` and the first ``fstat``: a read error, never a crash."""
    src = _src(tmp_path, os.urandom(300_000))
    fs = fault_fs(src.parent)
    real_open = os.open

    def open_then_pull(path, flags, *args):
        fd = real_open(path, flags, *args)
        if str(path).startswith(str(fs.path)):
            fs.unplug(mode)
        return fd

    monkeypatch.setattr(copier.os, "open", open_then_pull)
    with pytest.raises(SourceReadError, match="clip.mp4"):
        copy_verified(fs.path / src.name, tmp_path / "out", ["sha256"])
    monkeypatch.undo()
    fs.plug()
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(PARTIAL_PREFIX + "*")) == []
