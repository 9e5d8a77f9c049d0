"""A fault-injecting FUSE file system for tests: a read-only passthrough of a directory.

It behaves like a camera that misbehaves on cue:

* **EIO past an offset**: reading a named file gives its bytes up to ``offset``, then EIO
  (a bad sector in the middle of a recording);
* **unplug**: at a moment the test chooses, every later operation fails with EIO or ENODEV,
  or hangs (a USB device that stopped answering), or the driver dies (ENOTCONN), or the
  mount vanishes (a camera pulled out and cleaned up by the system);
* **invalid UTF-8 names**: a file can be presented under a name that is not valid UTF-8
  (``b'bad\\xff\\xfe.mp4'``), which fusefat can never produce because FAT stores UTF-16.
  Names the source directory already holds as raw bytes pass through unchanged too.

It runs in a child process (``python -m tests.support.faultfs --control SOCK [--config
JSON] SOURCE MOUNTPOINT``) so that a hang or a death
never takes pytest with it; the test talks to it over a unix socket. Use it through
:func:`faultfs`, a context manager that always unmounts and kills the process, even when
the test fails::

    with faultfs(src, tmp_path / "mnt", eio_after={"DCIM/a.MP4": 300_000}) as fs:
        ...
        fs.unplug("eio")

Reads are served with ``direct_io`` and no attribute caching, so what the test injects is
what the reader sees at once (no page cache hides an unplug).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from appliance.dock.mount import is_mounted

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The ways a camera can go away, for :meth:`FaultFS.unplug`.
UNPLUG_MODES = ("eio", "enodev", "hang", "kill", "vanish")
_ERRNO = {"eio": errno.EIO, "enodev": errno.ENODEV}
_CODEC = "faultfs_surrogateescape"


def _codec_search(name: str) -> codecs.CodecInfo | None:
    # fusepy decodes every path with one codec name and strict errors; this codec makes it
    # decode like Python's own os functions (surrogateescape), so any byte name survives.
    if name != _CODEC:
        return None

    def encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
        return text.encode("utf-8", "surrogateescape"), len(text)

    def decode(data: bytes, errors: str = "strict") -> tuple[str, int]:
        return bytes(data).decode("utf-8", "surrogateescape"), len(data)

    return codecs.CodecInfo(encode, decode, name=_CODEC)


codecs.register(_codec_search)


@dataclass(frozen=True)
class FaultConfig:
    """What to inject. Paths are relative, '/'-separated, as ``str`` (``os.fsdecode`` of
    the bytes for a non-UTF-8 name).

    ``eio_after``: presented path -> byte offset from which reads fail with EIO.
    ``hang_after``: presented path -> byte offset from which reads wait until :meth:`FaultFS.plug`
    (a camera that stalls in the middle of a copy, for as long as the test wants).
    ``rename``: source path -> presented path (same folder), e.g. to a non-UTF-8 name.
    ``unplugged``: a mode from :data:`UNPLUG_MODES` to start in (``"hang"`` makes a driver
    that never answers, for mount timeout tests); None to start healthy.
    """

    eio_after: dict[str, int] = field(default_factory=dict)
    hang_after: dict[str, int] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)
    unplugged: str | None = None

    def to_json(self) -> str:
        # ensure_ascii escapes lone surrogates, so non-UTF-8 names survive the trip.
        return json.dumps(asdict(self), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> "FaultConfig":
        return cls(**json.loads(text))


# -- the file system (runs in the child process) -----------------------------------------


def _make_operations(source: Path, config: FaultConfig):  # noqa: ANN202 - fusepy type
    from fuse import FuseOSError, Operations

    class FaultOperations(Operations):
        use_ns = True

        def __init__(self) -> None:
            self.root = os.fsencode(source)
            self.mode: str | None = config.unplugged
            self.released = threading.Event()
            self.reads = 0
            self.to_source = {"/" + p: "/" + s for s, p in config.rename.items()}
            self.to_presented = {"/" + s: "/" + p for s, p in config.rename.items()}
            self.eio_after = {"/" + p: off for p, off in config.eio_after.items()}
            self.hang_after = {"/" + p: off for p, off in config.hang_after.items()}

        # -- faults --
        def check(self) -> None:
            mode = self.mode
            if mode is None:
                return
            if mode == "hang":
                self.released.wait()  # until plugged again or the process is killed
                if self.mode is None:
                    return
            raise FuseOSError(_ERRNO.get(mode, errno.EIO))

        def src(self, path: str) -> bytes:
            return self.root + os.fsencode(self.to_source.get(path, path))

        # -- operations --
        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            self.check()
            if path in self.to_presented:  # the source name is hidden behind its new name
                raise FuseOSError(errno.ENOENT)
            st = os.lstat(self.src(path))
            return {"st_mode": st.st_mode, "st_nlink": st.st_nlink, "st_size": st.st_size,
                    "st_uid": st.st_uid, "st_gid": st.st_gid, "st_atime": st.st_atime_ns,
                    "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}

        def readdir(self, path: str, fh: int) -> list[str]:
            self.check()
            base = path.rstrip("/")
            names = []
            for raw in os.listdir(self.src(path)):
                name = os.fsdecode(raw)
                shown = self.to_presented.get(f"{base}/{name}")
                names.append(shown.rsplit("/", 1)[1] if shown else name)
            return [".", ".."] + names

        def readlink(self, path: str) -> str:
            self.check()
            return os.fsdecode(os.readlink(self.src(path)))

        def open(self, path: str, flags: int) -> int:
            self.check()
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
                raise FuseOSError(errno.EROFS)
            return os.open(self.src(path), os.O_RDONLY)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            self.check()
            stall = self.hang_after.get(path)
            if stall is not None and offset + size > stall:
                self.released.wait()  # until plugged (the process being killed ends it too)
            limit = self.eio_after.get(path)
            if limit is not None and offset + size > limit:
                if offset >= limit:
                    raise FuseOSError(errno.EIO)
                size = limit - offset  # a short read; the next read hits the bad spot
            self.reads += 1
            return os.pread(fh, size, offset)

        def release(self, path: str, fh: int) -> int:
            os.close(fh)  # always, even unplugged: never leak descriptors
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            self.check()
            sv = os.statvfs(self.root)
            return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                                 "f_bavail", "f_files", "f_ffree", "f_namemax")}

    return FaultOperations()


def _serve_control(sock_path: str, ops, mountpoint: str) -> None:  # noqa: ANN001
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind under a temporary name and rename once listening: the parent waits for the
    # socket file to exist, and must never find it before it accepts connections.
    server.bind(sock_path + ".tmp")
    server.listen(4)
    os.rename(sock_path + ".tmp", sock_path)

    def handle(conn: socket.socket) -> None:
        with conn:
            words = conn.makefile("r").readline().split()
            reply = "ok"
            if words[:1] == ["ping"]:
                pass
            elif words[:1] == ["stats"]:
                reply = json.dumps({"reads": ops.reads, "mode": ops.mode})
            elif words[:1] == ["plug"]:
                ops.mode = None
                ops.released.set()
            elif len(words) == 2 and words[0] == "unplug" and words[1] in UNPLUG_MODES:
                mode = words[1]
                if mode == "kill":
                    conn.sendall(b"ok\n")
                    os._exit(17)  # like a driver that crashed: the mount stays, dead
                if mode == "vanish":
                    ops.mode = "enodev"  # until the detach below has happened
                    subprocess.run(["umount", "--lazy", mountpoint], capture_output=True, check=False)
                else:
                    ops.released.clear()
                    ops.mode = mode
            else:
                reply = f"error: unknown command {' '.join(words)!r}"
            conn.sendall(reply.encode() + b"\n")

    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process: mount and serve until unmounted or killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="unix socket path")
    parser.add_argument("--config", default="{}", help="FaultConfig as JSON")
    # Mount point last, as FUSE drivers do: appliance.dock.mount finds drivers that way.
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.source):
        parser.error(f"source {args.source!r} is not a directory")
    from fuse import FUSE

    ops = _make_operations(Path(args.source), FaultConfig.from_json(args.config))
    threading.Thread(target=_serve_control, args=(args.control, ops, args.mountpoint),
                     daemon=True).start()
    FUSE(ops, args.mountpoint, foreground=True, ro=True, encoding=_CODEC, fsname="faultfs",
         subtype="faultfs", direct_io=True, attr_timeout=0, entry_timeout=0,
         negative_timeout=0)
    return 0


# -- the test side ------------------------------------------------------------------------


class FaultFSError(RuntimeError):
    """The fault file system could not be started or controlled."""


def fuse_available() -> str | None:
    """Why FUSE tests cannot run here, or None when they can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened: {exc.strerror}"
    if os.geteuid() != 0:
        return "FUSE mounts here need root"
    try:
        import fuse  # noqa: F401
    except (ImportError, OSError, EnvironmentError) as exc:
        return f"fusepy or libfuse2 is missing: {exc}"
    return None


@dataclass
class FaultFS:
    """A running fault file system, as seen by the test."""

    path: Path  # the mount point
    source: Path
    process: subprocess.Popen[bytes]
    control: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def _send(self, command: str, timeout: float = 10.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect(str(self.control))
                s.sendall(command.encode() + b"\n")
                reply = s.makefile("r").readline().strip()
            except OSError as exc:
                raise FaultFSError(f"faultfs control {command!r}: {exc}") from None
        if reply.startswith("error"):
            raise FaultFSError(reply)
        return reply

    def unplug(self, mode: str = "eio") -> None:
        """Pull the camera: from now on every operation fails (or hangs, or the mount dies).

        Returns once the fault is in force. ``kill``: the driver process dies (later
        operations give ENOTCONN); ``vanish``: the mount is detached (the mount point is
        an empty folder again).
        """
        if mode not in UNPLUG_MODES:
            raise ValueError(f"mode must be one of {UNPLUG_MODES}")
        self._send(f"unplug {mode}")
        if mode == "kill":
            self.process.wait(timeout=10)

    def plug(self) -> None:
        """Heal an ``eio``/``enodev``/``hang`` unplug (hung operations then complete)."""
        self._send("plug")

    def stats(self) -> dict[str, object]:
        """Counters of the running file system (``reads`` served, current ``mode``)."""
        return json.loads(self._send("stats"))

    def log(self) -> str:
        """What the child process wrote (fusepy and libfuse messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _cleanup(path: Path, process: subprocess.Popen[bytes] | None) -> None:
    # Detach first (no new access can start), then kill: hung operations then get ENOTCONN.
    if is_mounted(path):
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True, check=False)
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if is_mounted(path):  # a dead FUSE mount left behind
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def faultfs(source: Path, mountpoint: Path, *, eio_after: dict[str, int] | None = None,
            hang_after: dict[str, int] | None = None,
            rename: dict[str, str] | None = None, unplugged: str | None = None,
            start_timeout: float = 20.0) -> Iterator[FaultFS]:
    """Mount a fault-injecting passthrough of ``source`` at ``mountpoint``.

    The mount point is created if needed (and removed again if it was created here). On
    the way out, however the block ends, the mount is detached and the process killed.
    """
    reason = fuse_available()
    if reason:
        raise FaultFSError(f"FUSE is not usable: {reason}")
    config = FaultConfig(eio_after=dict(eio_after or {}), hang_after=dict(hang_after or {}),
                         rename=dict(rename or {}),
                         unplugged=unplugged)
    mountpoint = Path(os.path.abspath(mountpoint))
    created = not mountpoint.exists()
    mountpoint.mkdir(parents=True, exist_ok=True)
    # A short folder: unix socket paths are limited to 108 bytes, pytest's tmp_path is long.
    workdir = Path(tempfile.mkdtemp(prefix="faultfs-"))
    control = workdir / "ctl.sock"
    log_path = workdir / "faultfs.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.faultfs", "--control", str(control),
                 "--config", config.to_json(), "--", str(source), str(mountpoint)],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, start_new_session=True)
        fs = FaultFS(mountpoint, Path(source), process, control, log_path)
        deadline = time.monotonic() + start_timeout
        while not (is_mounted(mountpoint) and control.exists()):
            if process.poll() is not None:
                raise FaultFSError(f"faultfs exited with {process.returncode}: {fs.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise FaultFSError(f"faultfs did not mount within {start_timeout:g} s: {fs.log()[-2000:]}")
            time.sleep(0.02)
        fs._send("ping")
        yield fs
    finally:
        _cleanup(mountpoint, process)
        shutil.rmtree(workdir, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                mountpoint.rmdir()


if __name__ == "__main__":
    sys.exit(main())
