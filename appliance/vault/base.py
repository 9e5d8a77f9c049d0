"""The vault interface: one contract, two backends (``directory`` and ``zfs``).

The rest of the appliance never asks which backend it has.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.errors import VaultError
from appliance.vault.copier import fsync_dir
from appliance.vault.layout import DISCS, MEDIA, QUARANTINE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VaultSpace:
    """Space of the file system that holds the media."""

    free_bytes: int
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Reseal:
    """One new held snapshot, taken after a purge, that holds every file of the held
    snapshots before it that no purge removed (:meth:`Vault.reseal`)."""

    snapshot: str                 # the new snapshot, named as sessions record theirs
    older: tuple[str, ...]        # the held snapshots before it, oldest first, named alike
    own: tuple[str, ...]          # those of them that an earlier reseal took


class Vault(ABC):
    """Where evidence lives."""

    backend: str = "abstract"
    #: Whether every committed session gets a snapshot (so a session without one is a problem).
    snapshots: bool = False

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.vault.path

    @abstractmethod
    def prepare(self) -> None:
        """Check that the vault exists and is writable; create the layout's top folders."""

    @abstractmethod
    def seal(self, session_dir: Path, session_id: str) -> str | None:
        """Make a committed session unchangeable; return the snapshot name if one was taken."""

    @abstractmethod
    def health(self) -> str:
        """``ONLINE`` when healthy, else the backend's own word for what is wrong."""

    def snapshot_states(self, snapshot: str) -> dict[str, str]:
        """``held``, ``not held`` or ``missing`` for each snapshot taken at the seal of the
        session that ``snapshot`` names (backends with snapshots override this)."""
        return {snapshot: "missing"}

    def snapshot_state(self, snapshot: str) -> str:
        """``held``, ``not held`` or ``missing``: the worst of the session's snapshots."""
        try:
            states = set(self.snapshot_states(snapshot).values())
        except VaultError as exc:
            log.warning("snapshot state of %s unknown: %s", snapshot, exc)
            return "missing"
        return "missing" if "missing" in states else "not held" if "not held" in states else "held"

    def snapshot_path(self, snapshot: str, relative: str) -> Path | None:
        """Where a vault-relative file is seen inside a snapshot; None without snapshots."""
        return None

    @property
    def discs(self) -> Path:
        """Where disc images are built: scratch, in the vault (its own dataset on ZFS, never
        snapshotted nor replicated) because an image is as large as the disc."""
        return self.root / DISCS

    def space(self) -> VaultSpace:
        """Free and used bytes where the media is stored."""
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        return VaultSpace(free, total - st.f_bfree * st.f_frsize, total)

    def dataset_space(self) -> dict[str, tuple[int, int]] | None:
        """Free and used bytes per dataset, where the backend has datasets; else None."""
        return None

    def held_snapshots(self) -> int | None:
        """How many snapshots are held, where the backend has snapshots; else None."""
        return None

    def last_scrub(self) -> tuple[float, int] | None:
        """(Unix time, errors) of the pool's last finished scrub, where the backend scrubs."""
        return None

    def absolute(self, relative: str | Path) -> Path:
        """A vault-relative path (as the catalog stores it) made absolute, refusing escapes."""
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise VaultError(f"{relative}: outside the vault")
        return path

    def relative(self, path: Path) -> str:
        """The vault-relative form of an absolute path inside the vault."""
        return str(path.relative_to(self.root))

    def remove_purged(self, relative: str) -> bool:
        """Delete one file that an approved retention purge has recorded as purged: the only
        deletion of evidence there is (:mod:`appliance.catalog.retention` calls it, after the
        catalog says so). Clears the immutable attribute where there is one, opens the folder
        for the moment of the unlink, closes it again. False if the file was gone already."""
        path = self.absolute(relative)
        root = self.root.resolve()
        if not path.is_relative_to(root / MEDIA) and not path.is_relative_to(root / QUARANTINE):
            raise VaultError(f"{relative}: not a recording's file")
        if not path.exists():
            return False
        _clear_immutable(path)
        folder = path.parent
        mode = folder.stat().st_mode & 0o777
        os.chmod(folder, mode | 0o700)
        try:
            path.unlink()
            fsync_dir(folder)
        finally:
            os.chmod(folder, mode)
        return True

    def release_snapshot(self, session_id: str) -> list[str]:
        """Release the hold on a session's snapshots and destroy them, once retention has purged
        every recording of the session; returns their names ([] where there are none)."""
        return []

    def reseal(self, tag: str, purged: Callable[[str], bool],
               same: Callable[[str, Path], bool]) -> Reseal | None:
        """After a purge: take one held snapshot that can stand in for the held ones before
        it (so that they can go, and the purged files' space with them), or None where the
        backend has no snapshots or nothing is held. ``purged(path)``: whether an approved
        purge removed that vault-relative file; ``same(path, file)``: whether a file that
        changed since an older snapshot still has its catalogued hash, read at ``file``.
        Raises :class:`VaultError` naming what differs when the new snapshot cannot stand
        in (the older ones then stay)."""
        return None

    def retire(self, snapshots: list[str]) -> list[str]:
        """Release the evidence hold on snapshots that a :meth:`reseal` stands in for, and
        destroy them; returns every snapshot destroyed ([] where there are none)."""
        return []

    def make_session_dir(self, relative: Path) -> Path:
        """Create (or reopen, on resume) a session's folder."""
        path = self.root / relative
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VaultError(f"{path}: cannot create: {exc.strerror}") from None
        return path


def _clear_immutable(path: Path) -> None:
    """Take the immutable attribute off a file, where the file system has it (ZFS, ext4)."""
    import fcntl
    import struct

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        if flags & _FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("l", flags & ~_FS_IMMUTABLE_FL))
    except OSError:
        pass
    finally:
        os.close(fd)


_FS_IMMUTABLE_FL = 0x00000010
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602


def close_folders(session_dir: Path) -> None:
    """Make a committed session's folders read-only (0555), bottom-up, and fsync them."""
    for root, dirs, _files in os.walk(session_dir, topdown=False):
        for d in dirs:
            os.chmod(Path(root) / d, 0o555)
        fsync_dir(Path(root))
    os.chmod(session_dir, 0o555)


def open_folders(root: Path) -> None:
    """Undo :func:`close_folders` below ``root`` (tests and benchmarks cleaning up after themselves)."""
    for dirpath, dirs, _files in os.walk(root):
        for d in dirs:
            try:
                os.chmod(Path(dirpath) / d, 0o755)
            except OSError:
                pass
