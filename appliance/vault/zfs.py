"""The ``zfs`` backend: production. Datasets, snapshots and holds through the ``zfs`` command.

Layout under the parent dataset from the config (created by Ansible or the operator,
never by the daemon; the daemon only creates its children):

    <parent>             readonly=on: only the children are written; a child that failed to
                         mount can never have evidence written into the parent's folder
    <parent>/media       recordsize=1M, compression=off (media is compressed already),
                         primarycache=metadata (see below)
    <parent>/quarantine  as media: unknown cameras
    <parent>/catalog     recordsize=16K for SQLite pages, lz4
    <parent>/discs       disc images being built; not replicated, not snapshotted

Media is written once and read rarely (playback, a disc, the weekly verify), so the ARC
keeps only its metadata: recordings do not push the catalog out of memory, and what
``appliance verify`` re-hashes comes from the disks, not from a cached copy. (OpenZFS 2.1
takes O_DIRECT but still caches; the copier's read-back right after the write may be served
from memory, which is why the weekly verify is the check of the disks.)

Every committed session gets one atomic snapshot of media, quarantine and catalog
(``@ingest-<session>``) with a hold, so neither the files nor the catalog state that
recorded them can be destroyed without first releasing the hold, which is audited.
A snapshot is of the whole dataset, so every held snapshot keeps the blocks of every file
that existed when it was taken, purged or not. After a retention purge the vault therefore
takes one new held snapshot (``@resealed-<purge list>``), proves with ``zfs diff`` that it
holds every file of the held snapshots before it that no purge removed, unchanged, and only
then lets those go (see :mod:`appliance.vault.zfsdiff`): the space of purged files comes back
even while sessions sealed after them are kept long-term.

Following zfs-autobackup's habits: argument lists, machine-readable output (``-H -p``),
and every command logged as a copy-pastable line.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.config import Config
from appliance.errors import VaultError
from appliance.vault import zfsdiff
from appliance.vault.base import Reseal, Vault, VaultSpace, close_folders
from appliance.vault.layout import CATALOG, DISCS, MEDIA, QUARANTINE

log = logging.getLogger(__name__)

HOLD_TAG = "appliance-evidence"
SNAPSHOT_PREFIX = "ingest-"
RESEAL_PREFIX = "resealed-"
TIMEOUT_S = 120
FS_IMMUTABLE_FL = 0x00000010
# Properties that only `zfs create` takes (`zfs set` refuses them: "property is readonly").
CREATE_ONLY = frozenset({"utf8only", "normalization", "casesensitivity"})
# Properties that `zfs get -p` prints as a byte count ("1M" reads back as "1048576").
_SIZE_PROPERTIES = frozenset({"recordsize", "quota", "refquota", "reservation", "refreservation"})
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
    # utf8only: the vault keeps only valid UTF-8 names (a camera name with invalid bytes gets
    # visible \xNN escapes, see appliance.dock.session); ZFS then refuses anything else.
    # readonly=off is set on each child: the parent is readonly=on and children inherit.
    media = {"readonly": "off", "recordsize": "1M", "compression": "off", "primarycache": "metadata",
             "atime": "off", "xattr": "sa", "exec": "off", "setuid": "off", "devices": "off",
             "utf8only": "on", f"autobackup:{backup_name}": "true"}
    return [
        Child(MEDIA, media, True),
        Child(QUARANTINE, media, True),
        Child(CATALOG, {"readonly": "off", "recordsize": "16K", "compression": "lz4", "atime": "off",
                          "exec": "off", "setuid": "off", "devices": "off",
                          f"autobackup:{backup_name}": "true"}, True),
        Child(DISCS, {"readonly": "off", "recordsize": "1M", "compression": "off", "atime": "off",
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
    snapshots = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        assert config.vault.dataset
        self.dataset = config.vault.dataset
        self.pool = self.dataset.split("/")[0]
        self.backup_name = config.backup_name  # replication.backup_name, else the station id

    def _ds(self, child: str) -> str:
        return f"{self.dataset}/{child}"

    def prepare(self) -> None:
        exists = run_zfs(["zfs", "list", "-H", "-o", "name", self.dataset], readonly=True, ok_codes=(0, 1))
        if not exists.strip():
            raise VaultError(f"dataset {self.dataset} does not exist; create the pool and dataset first "
                             f"(Ansible's station role does)")
        self._check_mounted(self.dataset, self.root)
        wanted = children(self.backup_name)
        listed = run_zfs(["zfs", "list", "-H", "-o", "name", "-d", "1", self.dataset], readonly=True)
        missing = [c for c in wanted if self._ds(c.name) not in listed.split()]
        if missing:
            # A new child's mount point is a folder made in the parent: open it for that moment.
            self._set(self.dataset, "readonly", "off")
        for child in wanted:
            name = self._ds(child.name)
            props = [a for k, v in child.properties.items() for a in ("-o", f"{k}={v}")]
            if child in missing:
                run_zfs(["zfs", "create", *props, name], readonly=False)
            else:
                current = self.properties(name, list(child.properties))
                for k, v in child.properties.items():
                    if _same_value(k, current.get(k, "-"), v):
                        continue
                    if k in CREATE_ONLY:
                        log.warning("%s: %s is %s, not %s; ZFS takes it only when a dataset is "
                                    "created, so it stays", name, k, current.get(k), v)
                        continue
                    run_zfs(["zfs", "set", f"{k}={v}", name], readonly=False)
            self._check_mounted(name, self.root / child.name)
        self._set(self.dataset, "readonly", "on")

    def _set(self, dataset: str, prop: str, value: str) -> None:
        """``zfs set`` only when the value differs (each set is a pool transaction and a log line)."""
        if not _same_value(prop, self.get(dataset, prop), value):
            run_zfs(["zfs", "set", f"{prop}={value}", dataset], readonly=False)

    def _check_mounted(self, name: str, where: Path) -> None:
        """The parent must be mounted at vault.path and each child at ``<vault.path>/<child>``:
        otherwise the daemon would write evidence into the folder of the dataset above, where
        no snapshot of the child covers it (and the child, once mounted, would hide it)."""
        props = self.properties(name, ["mountpoint", "mounted"])
        if Path(props.get("mountpoint", "")) != where:
            hint = (f"set vault.path to it or run `zfs set mountpoint={where} {name}`"
                    if name == self.dataset else f"run `zfs inherit mountpoint {name}`")
            raise VaultError(f"dataset {name} has mountpoint {props.get('mountpoint')}, but the vault "
                             f"needs it at {where} ({hint})")
        if props.get("mounted") != "yes":
            run_zfs(["zfs", "mount", name], readonly=False)
            if self.get(name, "mounted") != "yes":
                raise VaultError(f"dataset {name} is not mounted at {where}")

    def get(self, dataset: str, prop: str) -> str:
        """One property's value, as the machine-readable form prints it."""
        return run_zfs(["zfs", "get", "-H", "-p", "-o", "value", prop, dataset], readonly=True).strip()

    def properties(self, dataset: str, props: list[str]) -> dict[str, str]:
        """Several properties of one dataset in one command (``-`` for an unset user property)."""
        out = run_zfs(["zfs", "get", "-H", "-p", "-o", "property,value", ",".join(props), dataset],
                      readonly=True)
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

    def snapshot_names(self, session_id: str) -> list[str]:
        return [f"{self._ds(c.name)}@{SNAPSHOT_PREFIX}{session_id}"
                for c in children(self.backup_name) if c.snapshotted]

    def seal(self, session_dir: Path, session_id: str) -> str | None:
        close_folders(session_dir)
        _make_immutable(session_dir)
        snaps = self.snapshot_names(session_id)
        # The snapshots of media, quarantine and catalog are atomic together (all of them at
        # the first seal; a later seal only replaces what someone destroyed).
        self._snapshot_and_hold(snaps)
        return snaps[0]

    def _existing_snapshots(self, names: list[str]) -> set[str]:
        """Which of these snapshots exist (only these are listed, not every snapshot of the pool)."""
        out = run_zfs(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", *names], readonly=True,
                      ok_codes=(0, 1))
        return set(out.split())

    def session_snapshots(self, snapshot: str) -> list[str]:
        """Every snapshot taken with ``snapshot`` at the seal of its session (media, quarantine,
        catalog: one atomic ``zfs snapshot``), whichever of them the catalog recorded."""
        _dataset, snap = snapshot.split("@", 1)
        return [f"{self._ds(c.name)}@{snap}" for c in children(self.backup_name) if c.snapshotted]

    def snapshot_states(self, snapshot: str) -> dict[str, str]:
        """``held``, ``not held`` or ``missing`` for each snapshot of the session: a hold
        released on the catalog's snapshot alone counts as much as one on the media's."""
        names = self.session_snapshots(snapshot)
        existing = self._existing_snapshots(names)
        present = [n for n in names if n in existing]
        held: set[str] = set()
        if present:
            out = run_zfs(["zfs", "holds", "-H", *present], readonly=True, ok_codes=(0, 1))
            held = {f[0] for f in (line.split("\t") for line in out.splitlines())
                    if len(f) >= 2 and f[1] == HOLD_TAG}
        return {n: ("missing" if n not in existing else "held" if n in held else "not held")
                for n in names}

    def snapshot_path(self, snapshot: str, relative: str) -> Path | None:
        """Where a vault-relative file of a session is seen inside the snapshot (.zfs/snapshot).

        The snapshot is the one of the dataset that holds the file (``media/...`` or
        ``quarantine/...``), whichever dataset's snapshot the catalog recorded.
        """
        _dataset, snap = snapshot.split("@", 1)
        parts = Path(relative).parts
        if len(parts) < 2 or parts[0] not in {c.name for c in children(self.backup_name) if c.snapshotted}:
            return None
        return self.root / parts[0] / ".zfs" / "snapshot" / snap / Path(*parts[1:])

    def health(self) -> str:
        try:
            return run_zfs(["zpool", "list", "-H", "-o", "health", self.pool], readonly=True).strip()
        except VaultError as exc:
            log.warning("pool health unknown: %s", exc)
            return "UNKNOWN"

    def space(self) -> VaultSpace:
        # `zfs list -o` keeps the column order; `zfs get a,b` does not promise it.
        out = run_zfs(["zfs", "list", "-H", "-p", "-o", "available,used", self.dataset],
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

    def release_snapshot(self, session_id: str) -> list[str]:
        """Release the evidence hold on a session's snapshots and destroy them (retention: every
        recording of the session is purged). Other held snapshots that still hold the purged
        files keep their space until a :meth:`reseal` stands in for them."""
        return self._release_and_destroy(self.snapshot_names(session_id))

    def reseal(self, tag: str, purged: Callable[[str], bool],
               same: Callable[[str, Path], bool]) -> Reseal | None:
        """``@resealed-<tag>`` of media, quarantine and catalog, held, checked against every
        held snapshot before it with ``zfs diff`` (see :mod:`appliance.vault.zfsdiff`)."""
        held = self._held_evidence()
        name = f"{RESEAL_PREFIX}{tag}"
        # The same @names in every child (sealed together); media's order first.
        older = [n for n in dict.fromkeys(held.get(MEDIA, []) + held.get(QUARANTINE, []) + held.get(CATALOG, []))
                 if n != name]
        if not older:
            return None
        new = self.session_snapshots(f"{self._ds(MEDIA)}@{name}")
        self._snapshot_and_hold(new)
        problems: list[str] = []
        changed: set[str] = set()
        for child in (MEDIA, QUARANTINE):
            chain = [f"{self._ds(child)}@{n}" for n in held.get(child, []) if n != name]
            chain.append(f"{self._ds(child)}@{name}")
            for a, b in zip(chain, chain[1:]):
                out = run_zfs(["zfs", "diff", "-H", "-F", a, b], readonly=True)
                bad, modified = zfsdiff.judge(zfsdiff.parse(out, str(self.root / child), child), purged)
                problems += [f"{a} → {b}: {p}" for p in bad]
                changed.update(modified)
        for rel in sorted(changed):
            path = self.snapshot_path(new[0], rel)
            if path is not None and path.exists() and not same(rel, path):
                problems.append(f"{rel}: changed since it was sealed and no longer has its catalogued hash")
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise VaultError(f"the held snapshots stay: {new[0]} cannot stand in for them: "
                             + "; ".join(problems[:5]) + more)
        media = self._ds(MEDIA)
        return Reseal(new[0], tuple(f"{media}@{n}" for n in older),
                      tuple(f"{media}@{n}" for n in older if n.startswith(RESEAL_PREFIX)))

    def retire(self, snapshots: list[str]) -> list[str]:
        return self._release_and_destroy(list(dict.fromkeys(
            name for snapshot in snapshots for name in self.session_snapshots(snapshot))))

    def _held_evidence(self) -> dict[str, list[str]]:
        """The snapshot names (after the @) that carry the evidence hold, per child, oldest first."""
        datasets = [self._ds(c.name) for c in children(self.backup_name) if c.snapshotted]
        out = run_zfs(["zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name,userrefs", "-s", "createtxg",
                       "-d", "1", *datasets], readonly=True)
        candidates = []
        for line in out.splitlines():
            full, _, refs = line.partition("\t")
            snap = full.partition("@")[2]
            if refs.strip().isdigit() and int(refs) > 0 and snap.startswith((SNAPSHOT_PREFIX, RESEAL_PREFIX)):
                candidates.append(full)
        if not candidates:
            return {}
        holds = run_zfs(["zfs", "holds", "-H", *candidates], readonly=True)
        ours = {f[0] for f in (line.split("\t") for line in holds.splitlines()) if len(f) >= 2 and f[1] == HOLD_TAG}
        held: dict[str, list[str]] = {}
        for full in candidates:
            if full in ours:
                dataset, snap = full.split("@", 1)
                held.setdefault(dataset.rsplit("/", 1)[1], []).append(snap)
        return held

    def _snapshot_and_hold(self, snaps: list[str]) -> None:
        """Take whichever of ``snaps`` do not exist (in one command: atomic together) and put
        the evidence hold on whichever lack it."""
        existing = self._existing_snapshots(snaps)
        missing = [s for s in snaps if s not in existing]
        if missing:
            run_zfs(["zfs", "snapshot", *missing], readonly=False)
        held = run_zfs(["zfs", "holds", "-H", *snaps], readonly=True)
        missing = [s for s in snaps if f"{s}\t{HOLD_TAG}" not in held]
        if missing:
            run_zfs(["zfs", "hold", HOLD_TAG, *missing], readonly=False)

    def _release_and_destroy(self, snaps: list[str]) -> list[str]:
        listed = run_zfs(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", *snaps], readonly=True,
                         ok_codes=(0, 1))
        present = [s for s in snaps if s in set(listed.split())]
        if not present:
            return []
        held = run_zfs(["zfs", "holds", "-H", *present], readonly=True)
        holding = [s for s in present if f"{s}\t{HOLD_TAG}" in held]
        if holding:
            run_zfs(["zfs", "release", HOLD_TAG, *holding], readonly=False)
        for snap in present:
            # -d: a hold that is not ours (zfs-autobackup's, on the newest snapshot it shares
            # with HQ) defers the destruction to its release instead of failing the purge.
            run_zfs(["zfs", "destroy", "-d", snap], readonly=False)
        return present


# The duration is "HH:MM:SS", or "N days HH:MM:SS" for a scrub longer than a day (OpenZFS
# print_scan_status); the scan line shows only the pool's last scan, so a resilver after the
# scrub hides it.
_SCRUB_DONE = re.compile(r"^\s*scan: scrub repaired \S+ in (?:\d+ days )?\S+ with (\d+) errors on (.+?)\s*$",
                         re.M)


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


def _same_value(prop: str, current: str, wanted: str) -> bool:
    """Whether a property already has the wanted value (sizes compared as byte counts)."""
    if prop in _SIZE_PROPERTIES:
        return _zfs_bytes(current) == _zfs_bytes(wanted)
    return current == wanted


def _zfs_bytes(value: str) -> int | None:
    """``1M`` (ZFS units are binary), ``16K`` or ``1048576`` as bytes; None for ``-``/``none``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTPE]?)", value.strip().upper())
    if not match:
        return None
    return int(float(match.group(1)) * 1024 ** " KMGTPE".index(match.group(2) or " "))


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
