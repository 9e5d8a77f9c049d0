"""Copying one evidence file into the vault, crash-safe and verified.

The order is the whole point (see BorgBackup's ``SaveFile``): the source is read once
and hashed while it is written to a temporary name beside its final place; the copy is
fdatasync'ed, read back from the disk (O_DIRECT where the file system allows it, else
after dropping it from the page cache) and hashed again; only when both digests agree
is it made read-only and renamed to its final name, and the folder fsync'ed. A crash at
any moment leaves either nothing, a ``.partial-*`` file that start-up removes, or a
complete verified file.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import (
    DeviceGone,
    SourceReadError,
    VaultError,
    VaultFullError,
    VerifyMismatch,
)
from appliance.vault.hashing import Digests, MultiHasher

PARTIAL_PREFIX = ".partial-"
# errno values that mean the camera (or its FUSE driver) is gone rather than one bad block.
# A killed FUSE driver gives ENOTCONN or, on this kernel, ECONNABORTED.
_GONE_ERRNOS = {errno.ENODEV, errno.ENXIO, errno.ENOTCONN, errno.ECONNABORTED, errno.ESHUTDOWN,
                errno.ENOENT}

Progress = Callable[[int], None]


@dataclass(frozen=True)
class CopyResult:
    """What one verified copy produced."""

    size: int
    digests: Digests
    mtime_ns: int
    seconds: float
    direct_readback: bool


def copy_verified(
    src: Path,
    dest: Path,
    algorithms: Sequence[str],
    block_size: int = 8 << 20,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy ``src`` to ``dest`` and prove the copy; raise without leaving ``dest`` otherwise.

    Blocking: run it in a worker thread. ``progress`` is called with byte counts as the
    copy advances (from that thread).
    """
    started = time.monotonic()
    temp = dest.parent / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
    try:
        size, written, mtime_ns, atime_ns = _copy_and_hash(src, temp, algorithms, block_size, progress)
        readback, direct = _hash_from_disk(temp, algorithms, block_size)
        bad = written.mismatches(readback)
        if bad:
            raise VerifyMismatch(f"{dest.name}: {', '.join(bad)} of the copy differs from the source")
        os.chmod(temp, 0o444)
        # The vault keeps the camera's file times as the camera's file system reported them.
        os.utime(temp, ns=(atime_ns, mtime_ns))
        os.rename(temp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        _remove_quietly(temp)
        raise
    return CopyResult(size, written, mtime_ns, time.monotonic() - started, direct)


def _copy_and_hash(
    src: Path, temp: Path, algorithms: Sequence[str], block_size: int, progress: Progress | None
) -> tuple[int, Digests, int, int]:
    hasher = MultiHasher(algorithms)
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _source_error(src, exc) from exc
    try:
        try:
            before = os.fstat(src_fd)
        except OSError as exc:
            raise _source_error(src, exc) from exc
        dst_fd = _open_for_write(temp)
        try:
            total = _pump(src, src_fd, dst_fd, hasher, block_size, progress)
            try:
                os.fdatasync(dst_fd)
            except OSError as exc:
                raise _vault_error(temp, exc) from exc
        finally:
            os.close(dst_fd)
        try:
            after = os.fstat(src_fd)
        except OSError as exc:
            raise _source_error(src, exc) from exc
    finally:
        os.close(src_fd)
    if total != before.st_size or after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns:
        raise SourceReadError(
            f"{src.name}: the file changed while it was copied "
            f"({before.st_size} bytes listed, {total} read)")
    return total, hasher.digests(), before.st_mtime_ns, before.st_atime_ns


def _open_for_write(temp: Path) -> int:
    """Open the temporary file, with O_DIRECT where the file system takes it.

    Direct writes skip the page cache: no second copy of the data in memory, no
    writeback storm at fdatasync, and the read-back that follows cannot be served from
    a cache that the write filled.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(temp, flags | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise _vault_error(temp, exc) from exc
    try:
        return os.open(temp, flags, 0o600)
    except OSError as exc:
        raise _vault_error(temp, exc) from exc


def _pump(src: Path, src_fd: int, dst_fd: int, hasher: MultiHasher, block_size: int,
          progress: Progress | None) -> int:
    """Read and hash block k+1 while block k is written: the disk and the CPU both stay busy."""
    bufs = _aligned_buffers(block_size)
    total, k = 0, 0
    with ThreadPoolExecutor(1, thread_name_prefix="copy-write") as writer:
        pending: Future[None] | None = None
        try:
            while True:
                buf, view = bufs[k & 1]
                try:
                    n = os.readv(src_fd, [buf])
                except OSError as exc:
                    raise _source_error(src, exc, total) from exc
                if n == 0:
                    break
                chunk = view[:n]
                hasher.update(chunk)
                if pending is not None:
                    pending.result()  # the buffer read next is the one this write used
                pending = writer.submit(_write_block, dst_fd, chunk)
                total += n
                k += 1
                if progress:
                    progress(n)
            if pending is not None:
                pending, last = None, pending
                last.result()
        finally:
            if pending is not None:  # never leave a write running against a closed file
                pending.exception()
    return total


def _aligned_buffers(block_size: int) -> tuple[tuple[mmap.mmap, memoryview], ...]:
    """Two page-aligned buffers (as O_DIRECT requires), left to the garbage collector:
    an exception's traceback may still hold views of them."""
    out = []
    for _ in range(2):
        buf = mmap.mmap(-1, block_size)
        out.append((buf, memoryview(buf)))
    return tuple(out)


def _write_block(fd: int, data: memoryview) -> None:
    """Write a block; a tail that is not a multiple of 4 KiB leaves O_DIRECT for its last bytes."""
    aligned = len(data) & ~4095
    if aligned != len(data) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
        _write_all(fd, data[:aligned])
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        _write_all(fd, data[aligned:])
    else:
        _write_all(fd, data)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise _vault_error(None, exc) from exc
        data = data[written:]


def _hash_from_disk(path: Path, algorithms: Sequence[str], block_size: int) -> tuple[Digests, bool]:
    """Hash the file as the disk has it, not as the page cache remembers it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        direct = True
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # tmpfs and some FUSE file systems refuse O_DIRECT
            raise _vault_error(path, exc) from exc
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        direct = False
    try:
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return _hash_fd(fd, algorithms, block_size), direct
    except OSError as exc:
        if direct and exc.errno == errno.EINVAL:
            os.close(fd)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return _hash_fd(fd, algorithms, block_size), False
        raise _vault_error(path, exc) from exc
    finally:
        os.close(fd)


def _hash_fd(fd: int, algorithms: Sequence[str], block_size: int) -> Digests:
    """Hash block k in a helper thread while block k+1 is read from the disk."""
    hasher = MultiHasher(algorithms)
    bufs = _aligned_buffers(block_size)
    k = 0
    with ThreadPoolExecutor(1, thread_name_prefix="readback-hash") as hashing:
        pending: Future[None] | None = None
        try:
            while True:
                buf, view = bufs[k & 1]
                n = os.readv(fd, [buf])
                if n == 0:
                    break
                if pending is not None:
                    pending.result()
                pending = hashing.submit(hasher.update, view[:n])
                k += 1
        finally:
            if pending is not None:
                pending.result()
    return hasher.digests()


def hash_file(path: Path, algorithms: Sequence[str] = ("sha256",), block_size: int = 8 << 20) -> Digests:
    """Digests of a file already in the vault, read from the disk (used by verify)."""
    digests, _ = _hash_from_disk(path, algorithms, block_size)
    return digests


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(dest: Path, data: bytes, mode: int = 0o444) -> None:
    """Write a small file (manifest, clock file) under a temporary name, fsync, rename."""
    temp = dest.parent / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, memoryview(data))
            os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(temp, dest)
        fsync_dir(dest.parent)
    except OSError as exc:
        _remove_quietly(temp)
        raise _vault_error(dest, exc) from exc
    except BaseException:
        _remove_quietly(temp)
        raise


def remove_partials(folder: Path) -> list[Path]:
    """Remove temporary files that a crash left below ``folder``; return what was removed."""
    removed = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(PARTIAL_PREFIX):
                path = Path(root) / name
                _remove_quietly(path)
                removed.append(path)
    return removed


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _source_error(src: Path, exc: OSError, offset: int | None = None) -> SourceReadError:
    where = f" at byte {offset}" if offset is not None else ""
    text = f"{os.fsdecode(src.name)}{where}: {exc.strerror or exc}"
    if exc.errno in _GONE_ERRNOS:
        return DeviceGone(text)
    return SourceReadError(text)


def _vault_error(path: Path | None, exc: OSError) -> VaultError:
    name = f"{path}: " if path else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return VaultFullError(f"{name}{exc.strerror}")
    return VaultError(f"{name}{exc.strerror or exc}")
