"""A FUSE file system that fills up mid-write: the target of a burn that fails half-way.

It passes through to a backing folder but, after ``limit`` bytes written in total,
every further write fails with ENOSPC (or EIO, or EROFS), while ``statfs`` keeps
reporting plenty of free space, so that neither xorriso's nor our own pre-check sees it
coming: exactly a drive that gives up in the middle of a disc.

It runs in a child process (``python -m tests.burner.fullfs BACKING MOUNT LIMIT ERRNO``)
so that a hang never takes pytest with it; use :func:`fullfs`, which waits for the
mount and always unmounts and stops the process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _serve(backing: str, mount: str, limit: int, err: int) -> None:
    from fuse import FUSE, FuseOSError, Operations

    class FullFS(Operations):
        def __init__(self) -> None:
            self.root = backing
            self.written = 0
            self.lock = threading.Lock()

        def _p(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def getattr(self, path, fh=None):
            try:
                st = os.lstat(self._p(path))
            except OSError as exc:
                raise FuseOSError(exc.errno) from None
            return {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid",
                                                 "st_atime", "st_mtime", "st_ctime")}

        def readdir(self, path, fh):
            return [".", ".."] + os.listdir(self._p(path))

        def statfs(self, path):
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 28, "f_bfree": 1 << 27,
                    "f_bavail": 1 << 27, "f_files": 1 << 20, "f_ffree": 1 << 20, "f_namemax": 255}

        def create(self, path, mode, fi=None):
            return os.open(self._p(path), os.O_RDWR | os.O_CREAT, mode)

        def open(self, path, flags):
            return os.open(self._p(path), flags & ~os.O_APPEND)

        def read(self, path, size, offset, fh):
            return os.pread(fh, size, offset)

        def write(self, path, data, offset, fh):
            with self.lock:
                if self.written + len(data) > limit:
                    raise FuseOSError(err)
                self.written += len(data)
            return os.pwrite(fh, data, offset)

        def truncate(self, path, length, fh=None):
            with open(self._p(path), "r+b") as f:
                f.truncate(length)

        def flush(self, path, fh):
            return 0

        def fsync(self, path, datasync, fh):
            return 0

        def release(self, path, fh):
            os.close(fh)
            return 0

        def unlink(self, path):
            os.unlink(self._p(path))

        def chmod(self, path, mode):
            os.chmod(self._p(path), mode)

        def utimens(self, path, times=None):
            os.utime(self._p(path), times)

    FUSE(FullFS(), mount, foreground=True, nothreads=True, allow_other=False)


@contextlib.contextmanager
def fullfs(backing: Path, mount: Path, limit: int, err: int = errno.ENOSPC) -> Iterator[Path]:
    """Mount a :class:`FullFS` of ``backing`` on ``mount`` for the ``with`` block."""
    backing.mkdir(parents=True, exist_ok=True)
    mount.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.burner.fullfs", str(backing), str(mount), str(limit), str(err)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mount):
            if proc.poll() is not None:
                raise RuntimeError(f"fullfs did not start: {proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError("fullfs did not mount within 10 s")
            time.sleep(0.05)
        yield mount
    finally:
        subprocess.run(["fusermount", "-u", "-z", str(mount)], capture_output=True)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
