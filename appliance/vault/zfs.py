"""The ``zfs`` backend: production. Datasets, snapshots and holds through the ``zfs`` command.

Layout under the parent dataset from the config (created by Ansible or the operator,
never by the daemon; the daemon only creates its children):

    <parent>/media       recordsize=1M, compression=off (media is compressed already)
    <parent>/quarantine  as media: unknown cameras
    <parent>/catalog     recordsize=16K for SQLite pages, lz4
    <parent>/discs       disc images being built; not replicated, not snapshotted

Every committed session gets one atomic snapshot of media, quarantine and catalog
(``@ingest-<session>``) with a hold, so neither the files nor the catalog state that
recorded them can be destroyed without first releasing the hold, which is audited.
Following zfs-autobackup's habits: argument lists, machine-readable output (``-H -p``),
and every command logged as a copy-pastable line.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.config import Config
from appliance.errors import VaultError
from appliance.vault.base import Vault, VaultSpace, close_folders

log = logging.getLogger(__name__)

HOLD_TAG = "appliance-evidence"
SNAPSHOT_PREFIX = "ingest-"
TIMEOUT_S = 120
FS_IMMUTABLE_FL = 0x00000010
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602


@dataclass(frozen=True)
class Child:
    """A dataset the daemon keeps under the parent, with its properties."""

    name: str
    properties: dict[str, str]
    snapshotted: bool


def children(backup_name: str) -> list[Child]:
    """The child datasets and their properties; ``autobackup:<name>`` marks what HQ receives."""
    media = {"recordsize": "1M", "compression": "off", "atime": "off", "xattr": "sa",
             "exec": "off", "setuid": "off", "devices": "off",
             f"autobackup:{backup_name}": "true"}
    return [
        Child("media", media, True),
        Child("quarantine", media, True),
        Child("catalog", {"recordsize": "16K", "compression": "lz4", "atime": "off",
                          "exec": "off", "setuid": "off", "devices": "off",
                          f"autobackup:{backup_name}": "true"}, True),
        Child("discs", {"recordsize": "1M", "compression": "off", "atime": "off",
                        f"autobackup:{backup_name}": "false"}, False),
    ]


def run_zfs(argv: list[str], *, readonly: bool, ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run a zfs/zpool command; raise VaultError with its stderr on an unexpected exit."""
    line = shlex.join(argv)
    log.debug("%s: %s", "read" if readonly else "change", line)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise VaultError(f"{argv[0]} is not installed (zfsutils-linux)") from None
    except subprocess.TimeoutExpired:
        raise VaultError(f"`{line}` did not finish in {TIMEOUT_S} s") from None
    if proc.returncode not in ok_codes:
        raise VaultError(f"`{line}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class ZfsVault(Vault):
    backend = "zfs"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        assert config.vault.dataset
        self.dataset = config.vault.dataset
        self.pool = self.dataset.split("/")[0]
        self.backup_name = config.station.id

    def _ds(self, child: str) -> str:
        return f"{self.dataset}/{child}"

    def prepare(self) -> None:
        exists = run_zfs(["zfs", "list", "-H", "-o", "name", self.dataset], readonly=True, ok_codes=(0, 1))
        if not exists.strip():
            raise VaultError(f"dataset {self.dataset} does not exist; create the pool and dataset first "
                             f"(Ansible's station role does)")
        mountpoint = self.get(self.dataset, "mountpoint")
        if Path(mountpoint) != self.root:
            raise VaultError(f"dataset {self.dataset} is mounted at {mountpoint}, "
                             f"but vault.path is {self.root}")
        for child in children(self.backup_name):
            name = self._ds(child.name)
            found = run_zfs(["zfs", "list", "-H", "-o", "name", name], readonly=True, ok_codes=(0, 1))
            props = [a for k, v in child.properties.items() for a in ("-o", f"{k}={v}")]
            if not found.strip():
                run_zfs(["zfs", "create", *props, name], readonly=False)
            else:
                for k, v in child.properties.items():
                    if self.get(name, k) != v:
                        run_zfs(["zfs", "set", f"{k}={v}", name], readonly=False)

    def get(self, dataset: str, prop: str) -> str:
        """One property's value, as the machine-readable form prints it."""
        return run_zfs(["zfs", "get", "-H", "-p", "-o", "value", prop, dataset], readonly=True).strip()

    def snapshot_names(self, session_id: str) -> list[str]:
        return [f"{self._ds(c.name)}@{SNAPSHOT_PREFIX}{session_id}"
                for c in children(self.backup_name) if c.snapshotted]

    def seal(self, session_dir: Path, session_id: str) -> str | None:
        close_folders(session_dir)
        _make_immutable(session_dir)
        snaps = self.snapshot_names(session_id)
        existing = set(run_zfs(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-d", "1",
                                self._ds("media")], readonly=True).split())
        if snaps[0] not in existing:
            # One command: the snapshots of media, quarantine and catalog are atomic together.
            run_zfs(["zfs", "snapshot", *snaps], readonly=False)
        held = run_zfs(["zfs", "holds", "-H", *snaps], readonly=True)
        missing = [s for s in snaps if f"{s}\t{HOLD_TAG}" not in held]
        if missing:
            run_zfs(["zfs", "hold", HOLD_TAG, *missing], readonly=False)
        return snaps[0]

    def snapshot_state(self, snapshot: str) -> str:
        """``held``, ``not held`` or ``missing``."""
        try:
            out = run_zfs(["zfs", "holds", "-H", snapshot], readonly=True)
        except VaultError:
            return "missing"
        tags = {line.split("\t")[1] for line in out.splitlines() if line.count("\t") >= 1}
        return "held" if HOLD_TAG in tags else "not held"

    def snapshot_path(self, snapshot: str, relative: str) -> Path:
        """Where a vault-relative file of a session is seen inside the snapshot (.zfs/snapshot)."""
        dataset, snap = snapshot.split("@", 1)
        child = dataset.rsplit("/", 1)[1]
        inner = Path(relative).relative_to(child) if Path(relative).parts[0] == child else Path(relative)
        return self.root / child / ".zfs" / "snapshot" / snap / inner

    def health(self) -> str:
        try:
            return run_zfs(["zpool", "list", "-H", "-o", "health", self.pool], readonly=True).strip()
        except VaultError as exc:
            log.warning("pool health unknown: %s", exc)
            return "UNKNOWN"

    def space(self) -> VaultSpace:
        out = run_zfs(["zfs", "get", "-H", "-p", "-o", "value", "available,used", self.dataset],
                      readonly=True).split()
        free, used = int(out[0]), int(out[1])
        return VaultSpace(free, used, free + used)

    def dataset_space(self) -> dict[str, tuple[int, int]]:
        """Free and used bytes per child dataset, for /metrics."""
        out = run_zfs(["zfs", "list", "-H", "-p", "-o", "name,available,used", "-r", self.dataset],
                      readonly=True)
        result = {}
        for line in out.splitlines():
            name, avail, used = line.split("\t")
            result[name] = (int(avail), int(used))
        return result

    def held_snapshots(self) -> int:
        """How many snapshots under the vault carry a hold (``userrefs`` > 0), for /metrics."""
        out = run_zfs(["zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "userrefs", "-r", self.dataset],
                      readonly=True)
        return sum(1 for value in out.split() if value.isdigit() and int(value) > 0)

    def last_scrub(self) -> tuple[float, int] | None:
        """When the pool's last scrub finished (Unix time) and the errors it found, for /metrics;
        None when no scrub has finished yet (or one is running now)."""
        return parse_scrub(run_zfs(["zpool", "status", self.pool], readonly=True))


_SCRUB_DONE = re.compile(r"^\s*scan: scrub repaired \S+ in \S+ with (\d+) errors on (.+?)\s*$", re.M)


def parse_scrub(status: str) -> tuple[float, int] | None:
    """The finished scrub in ``zpool status`` output: (its end as Unix time, errors).

    zpool prints the date in the box's local time, C-locale ctime format.
    """
    match = _SCRUB_DONE.search(status)
    if not match:
        return None
    try:
        finished = datetime.strptime(match.group(2), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        log.debug("zpool status: unreadable scrub date %r", match.group(2))
        return None
    return finished.timestamp(), int(match.group(1))


def _make_immutable(session_dir: Path) -> None:
    """Set the immutable attribute on every committed file, where the file system has it."""
    import fcntl
    import struct

    for root, _dirs, files in os.walk(session_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                flags = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
                fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("l", flags | FS_IMMUTABLE_FL))
            except OSError as exc:
                log.debug("immutable attribute not set on %s: %s", path, exc)
            finally:
                os.close(fd)
