"""The two file objects pycdlib streams an image through, each hashing what passes.

* :class:`SourceReader` stands for one vault file: pycdlib reads it block by block while
  it writes the image; the reader opens the file only then, checks its size at once and
  its SHA-256 against the catalogued value as the last block goes through. A file that
  no longer matches raises :class:`SourceMismatch`, which stops the build.
* :class:`HashingSink` stands for the image file: it writes through to the disk and
  computes the image's SHA-256 on the way, so the image is never read back to be hashed.

Hashing runs in worker threads (hashlib releases the GIL on large buffers), one for the
sources and one for the image, so that both hashes and the copy use the cores in
parallel; each worker takes its blocks in order and the backlog is bounded.

pycdlib writes the image's metadata (volume descriptors, path tables, directory records,
UDF descriptors) scattered over the first sectors and one UDF anchor at the very end,
then the file data in order. The sink hashes every block that lands at the hash frontier
at once; blocks written ahead of it are remembered as ranges and read back from the
image when the frontier reaches them. Once the first byte of file data is written at
``data_start`` (pycdlib writes all metadata first), every gap below is final, so the few
megabytes of metadata are read back once and the file data streams through unread. A
write below the frontier, which pycdlib does not do, is still handled correctly: the
whole image is then re-hashed at the end (and :attr:`HashingSink.reread_bytes` says so).

The sink also writes behind: every 64 MiB of file data it asks the kernel to start
writing what came since the last time and to drop what is already on the disk. The
final fsync then has almost nothing left to do, and the image (read from the disk when
it is burned) does not push the page cache out.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from appliance.burner.errors import ImageError, SourceMismatch

log = logging.getLogger(__name__)

_ZEROS = bytes(1 << 20)
_READBACK = 4 << 20
_WRITE_BEHIND = 64 << 20


class OrderedHasher:
    """Feeds blocks to one hash object in a worker thread, in order, at most ``depth``
    blocks behind the caller."""

    def __init__(self, executor: ThreadPoolExecutor, depth: int = 4) -> None:
        self._executor = executor
        self._hash = hashlib.sha256()
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(self._executor.submit(self._hash.update, data))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        self.drain()
        return self._hash.hexdigest()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()


class SourceReader(io.RawIOBase):
    """A vault file as pycdlib reads it: opened lazily, size checked on open, SHA-256
    checked at the end. Supports only what pycdlib does: ``seek(0)`` then ``read(n)``."""

    mode = "rb"

    def __init__(self, path: Path, size: int, sha256: str, owner: str,
                 executor: ThreadPoolExecutor) -> None:
        super().__init__()
        self.path = path
        self.size = size
        self.sha256 = sha256.lower()
        self.owner = owner
        self._executor = executor
        self._fd: int | None = None
        self._pos = 0
        self._hasher: OrderedHasher | None = None
        self.verified = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET and offset == 0:
            self._close_fd()
            self._pos = 0
            self._hasher = None
            return 0
        if whence == io.SEEK_SET and offset == self._pos:
            return self._pos
        raise io.UnsupportedOperation("a vault file is streamed from its start only")

    def read(self, n: int = -1) -> bytes:
        if self._fd is None:
            if self.verified and self._pos >= self.size:
                return b""
            self._open()
        want = self.size - self._pos if n is None or n < 0 else min(n, self.size - self._pos)
        chunks = []
        got = 0
        assert self._fd is not None
        while got < want:
            try:
                block = os.read(self._fd, want - got)
            except OSError as exc:
                self._close_fd()
                raise ImageError(f"{self.owner}: cannot read {self.path}: {exc.strerror or exc}") from exc
            if not block:
                self._close_fd()
                raise SourceMismatch(
                    f"{self.owner}: {self.path} ended after {self._pos + got} bytes, catalogued {self.size}")
            chunks.append(block)
            got += len(block)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._pos += len(data)
        assert self._hasher is not None
        self._hasher.feed(data)
        if self._pos >= self.size:
            self._finish()
        return data

    def readinto(self, b) -> int:  # pragma: no cover - pycdlib uses read()
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._close_fd()
        super().close()

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceMismatch(f"{self.owner}: cannot open {self.path}: {exc.strerror or exc}") from exc
        st = os.fstat(fd)
        if st.st_size != self.size:
            os.close(fd)
            raise SourceMismatch(f"{self.owner}: {self.path} is {st.st_size} bytes, catalogued {self.size}")
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):  # pragma: no cover - not on every platform
            pass
        self._fd = fd
        self._hasher = OrderedHasher(self._executor)
        if self.size == 0:
            self._finish()

    def _finish(self) -> None:
        assert self._hasher is not None
        digest = self._hasher.hexdigest()
        self._close_fd()
        if digest != self.sha256:
            raise SourceMismatch(
                f"{self.owner}: {self.path} has SHA-256 {digest}, catalogued {self.sha256}")
        self.verified = True

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class HashingSink(io.RawIOBase):
    """The image file as pycdlib writes it: writes go straight to ``fd`` (opened
    read-write), and the SHA-256 of the whole image is computed on the way."""

    mode = "wb"

    def __init__(self, fd: int, executor: ThreadPoolExecutor, data_start: int | None) -> None:
        super().__init__()
        self._fd = fd
        self._hasher = OrderedHasher(executor)
        self.data_start = data_start
        self._pos = 0
        self._end = 0
        self._frontier = 0
        self._ahead: list[tuple[int, int]] = []   # written, not hashed yet: sorted [start, end)
        self._data_phase = False
        self._dirty = False
        self.reread_bytes = 0
        self.written_bytes = 0
        self._flushed = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self._end + offset
        else:  # pragma: no cover
            raise ValueError(whence)
        return self._pos

    def write(self, data) -> int:
        if not isinstance(data, bytes):
            data = bytes(data)
        n = len(data)
        if not n:
            return 0
        pos = self._pos
        view = memoryview(data)
        done = 0
        while done < n:
            done += os.pwrite(self._fd, view[done:], pos + done)
        self._pos = pos + n
        self._end = max(self._end, self._pos)
        self.written_bytes += n

        if not self._data_phase and self.data_start is not None and pos == self.data_start:
            # pycdlib has written all metadata: every gap below the first file is final.
            self._data_phase = True
            self._fill_to(pos)
        if pos < self._frontier:
            self._dirty = True          # rewrote hashed bytes: re-hash everything at the end
        elif pos == self._frontier:
            self._hasher.feed(data)
            self._frontier += n
            self._absorb()
        elif self._data_phase:
            self._fill_to(pos)
            self._hasher.feed(data)
            self._frontier += n
            self._absorb()
        else:
            self._remember(pos, pos + n)
        if self._data_phase:
            self._write_behind(pos + n)
        return n

    def finish(self, total_size: int) -> str:
        """Hash whatever is left up to ``total_size`` and return the image's SHA-256."""
        if self._dirty:
            log.warning("image writes went backwards; re-hashing the whole image")
            self._hasher.drain()
            hasher = OrderedHasher(self._hasher._executor)
            off = 0
            while off < total_size:
                block = os.pread(self._fd, min(_READBACK, total_size - off), off)
                if not block:
                    raise ImageError(f"image is shorter ({off} bytes) than its size {total_size}")
                hasher.feed(block)
                off += len(block)
                self.reread_bytes += len(block)
            return hasher.hexdigest()
        self._fill_to(total_size)
        return self._hasher.hexdigest()

    # --- internals ------------------------------------------------------------------

    def _write_behind(self, end: int) -> None:
        """Start the disk write of the file data written since the last call and drop
        what the call before started (clean by now) from the page cache.

        Without it the kernel holds gigabytes of dirty image until the final fsync, which
        then stalls with nothing else to do; and an image is read from the disk when it
        is burned, so keeping it cached only pushes out pages worth keeping.
        """
        if end - self._flushed < _WRITE_BEHIND:
            return
        start = max(0, self._flushed - _WRITE_BEHIND)
        os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_DONTNEED)
        self._flushed = end

    def _remember(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self._ahead, (start, end))
        self._ahead.insert(i, (start, end))
        merged: list[tuple[int, int]] = []
        for s, e in self._ahead:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self._ahead = merged

    def _absorb(self) -> None:
        while self._ahead and self._ahead[0][0] <= self._frontier:
            start, end = self._ahead.pop(0)
            if end > self._frontier:
                self._read_back(self._frontier, end)

    def _fill_to(self, target: int) -> None:
        """Advance the frontier to ``target``: written ranges read back, gaps as zeros."""
        self._absorb()
        while self._frontier < target:
            if self._ahead and self._ahead[0][0] < target:
                self._zeros(self._ahead[0][0] - self._frontier)
                self._absorb()
            else:
                self._zeros(target - self._frontier)
        self._absorb()

    def _zeros(self, n: int) -> None:
        while n > 0:
            k = min(n, len(_ZEROS))
            self._hasher.feed(_ZEROS if k == len(_ZEROS) else _ZEROS[:k])
            self._frontier += k
            n -= k

    def _read_back(self, start: int, end: int) -> None:
        off = start
        while off < end:
            block = os.pread(self._fd, min(_READBACK, end - off), off)
            if not block:  # pragma: no cover - we wrote these bytes
                raise ImageError(f"cannot read back image bytes {off}..{end}")
            self._hasher.feed(block)
            off += len(block)
            self.reread_bytes += len(block)
        self._frontier = end
