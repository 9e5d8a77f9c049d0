"""At headquarters: which ingest sessions of which station have arrived (`appliance hq status`).

Runs on HQ's receiving machine, as root, without the station: it reads only what was
received. Every station has its dataset under the root (``hq/stations/<station>``) with the
station's ``media``, ``quarantine`` and ``catalog`` below it, read-only and never mounted.
This command mounts *snapshots* (read-only by nature) in a private temporary folder, reads
them and unmounts them again:

- the sessions the station's catalog knows, from the newest received ``catalog`` snapshot
  (the SQLite file and its WAL copied out and opened there, so the catalog's last
  committed transactions are read as SQLite would after a crash);
- which of those have their own ``@ingest-<session>`` snapshot at HQ (the snapshot the
  station took and held when it committed the session: media, quarantine and catalog
  together);
- each session's ``manifest.json`` from the newest received snapshot of its dataset, checked
  against the catalog's SHA-256 of it; with ``--verify`` every file of the session re-hashed
  from the session's own snapshot against the manifest.

A session is ``arrived`` (own snapshot at HQ, manifest as recorded), ``arrived-no-snapshot``
(its files and manifest are at HQ in a later snapshot, but its own snapshot is missing there,
e.g. destroyed at HQ by mistake), ``pending`` (the catalog at HQ knows it, its files are not
there yet) or ``mismatch`` (the manifest differs from what the catalog recorded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from appliance.errors import ApplianceError

INGEST_PREFIX = "ingest-"
CHILDREN = ("media", "quarantine", "catalog")
CATALOG_FILE = "catalog.sqlite"


class HqError(ApplianceError):
    """总部 / headquarters: {}"""


def _zfs(*args: str) -> str:
    try:
        proc = subprocess.run(["zfs", *args], capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise HqError("zfs is not installed here") from None
    if proc.returncode != 0:
        raise HqError(f"zfs {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class SessionAtHq:
    station: str
    session: str
    state: str                      # arrived, arrived-no-snapshot, pending, mismatch
    dataset: str | None = None      # media or quarantine
    snapshot: str | None = None     # its own @ingest-... snapshot at HQ, if there
    device: str | None = None
    officer: str | None = None
    started_at: str | None = None
    files: int | None = None
    bytes: int | None = None
    manifest: str = "missing"       # ok, missing, differs, unread
    verified: str | None = None     # with --verify: ok, or what differs
    problems: list[str] = field(default_factory=list)


@dataclass
class StationAtHq:
    station: str
    dataset: str
    newest_snapshot: str | None = None
    newest_snapshot_at: str | None = None
    catalog_snapshot: str | None = None
    partial_receive: list[str] = field(default_factory=list)
    sessions: list[SessionAtHq] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sessions:
            out[s.state] = out.get(s.state, 0) + 1
        return out


@dataclass
class Snapshots:
    """The snapshots of one station at HQ: child -> [(name, creation)], oldest first (ZFS's
    own order, createtxg: a station clock that was wrong does not reorder them)."""

    by_child: dict[str, list[tuple[str, int]]]
    newest_overall: tuple[str, str, int] | None = None   # (child, name, creation)

    def newest(self, child: str) -> str | None:
        snaps = self.by_child.get(child) or []
        return snaps[-1][0] if snaps else None

    def has(self, child: str, name: str) -> bool:
        return any(n == name for n, _ in self.by_child.get(child, []))


def station_datasets(root: str, station: str | None = None) -> list[str]:
    names = _zfs("list", "-H", "-o", "name", "-d", "1", "-t", "filesystem", root).split()
    found = [n for n in names if n != root]
    if station:
        found = [n for n in found if n.rsplit("/", 1)[1] == station]
        if not found:
            raise HqError(f"no station {station!r} under {root}")
    return found


def list_snapshots(dataset: str) -> Snapshots:
    out = _zfs("list", "-H", "-p", "-t", "snapshot", "-o", "name,creation,createtxg", "-s", "createtxg",
               "-r", dataset)
    by_child: dict[str, list[tuple[str, int]]] = {}
    newest: tuple[int, str, str, int] | None = None
    for line in out.splitlines():
        name, creation, txg = line.split("\t")
        ds, snap = name.split("@", 1)
        child = ds[len(dataset) + 1:]
        if child in CHILDREN:
            by_child.setdefault(child, []).append((snap, int(creation)))
            if newest is None or int(txg) > newest[0]:
                newest = (int(txg), child, snap, int(creation))
    return Snapshots(by_child, newest[1:] if newest else None)


def partial_receives(dataset: str) -> list[str]:
    out = _zfs("get", "-H", "-p", "-o", "name,value", "-r", "-t", "filesystem", "receive_resume_token",
               dataset)
    return [line.split("\t")[0] for line in out.splitlines() if line.split("\t")[1] not in ("-", "")]


class SnapshotMounts:
    """Snapshots mounted read-only in a private folder for as long as the object lives."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="appliance-hq-"))
        os.chmod(self.base, 0o700)
        self._mounted: dict[str, Path] = {}

    def path(self, snapshot: str) -> Path:
        if snapshot not in self._mounted:
            where = self.base / f"m{len(self._mounted)}"
            where.mkdir()
            proc = subprocess.run(["mount", "-t", "zfs", "-o", "ro,nodev,nosuid,noexec", snapshot, str(where)],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                where.rmdir()
                raise HqError(f"cannot mount {snapshot} read-only: {proc.stderr.strip()}")
            self._mounted[snapshot] = where
        return self._mounted[snapshot]

    def close(self) -> None:
        for where in reversed(list(self._mounted.values())):
            subprocess.run(["umount", str(where)], capture_output=True, timeout=120)
            with contextlib.suppress(OSError):
                where.rmdir()
        self._mounted.clear()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def mounts() -> Iterator[SnapshotMounts]:
    m = SnapshotMounts()
    try:
        yield m
    finally:
        m.close()


def read_catalog(folder: Path) -> list[dict]:
    """Sessions from a catalog folder in a snapshot: copy the database and its WAL, open the copy."""
    src = folder / CATALOG_FILE
    if not src.exists():
        return []
    with tempfile.TemporaryDirectory(prefix="appliance-hq-catalog-") as tmp:
        for suffix in ("", "-wal"):
            if (folder / (CATALOG_FILE + suffix)).exists():
                shutil.copyfile(folder / (CATALOG_FILE + suffix), Path(tmp) / (CATALOG_FILE + suffix))
        conn = sqlite3.connect(Path(tmp) / CATALOG_FILE)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(
                "SELECT s.id, s.device_serial, s.state, s.started_at, s.files_total, s.bytes_total,"
                " s.quarantined, s.vault_dir, s.manifest_sha256, o.name AS officer"
                " FROM sessions s LEFT JOIN officers o ON o.id = s.officer_id"
                " WHERE s.manifest_sha256 IS NOT NULL ORDER BY s.started_at, s.id").fetchall()
            return [dict(r) for r in rows]
        except sqlite3.Error as exc:
            raise HqError(f"the catalog at {src} cannot be read: {exc}") from None
        finally:
            conn.close()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def station_status(dataset: str, *, verify: bool = False) -> StationAtHq:
    """What of one station has arrived at HQ."""
    station = dataset.rsplit("/", 1)[1]
    snaps = list_snapshots(dataset)
    result = StationAtHq(station=station, dataset=dataset, partial_receive=partial_receives(dataset))
    if snaps.newest_overall:
        child, name, creation = snaps.newest_overall
        result.newest_snapshot = f"{dataset}/{child}@{name}"
        result.newest_snapshot_at = datetime.fromtimestamp(creation, timezone.utc).isoformat()
    with mounts() as m:
        sessions: list[dict] = []
        cat_snap = snaps.newest("catalog")
        if cat_snap:
            result.catalog_snapshot = f"{dataset}/catalog@{cat_snap}"
            sessions = read_catalog(m.path(result.catalog_snapshot))
        known = {s["id"] for s in sessions}
        # Sessions whose snapshot arrived while the catalog that records them did not (yet).
        for child in ("media", "quarantine"):
            for name, _ in snaps.by_child.get(child, []):
                sid = name[len(INGEST_PREFIX):] if name.startswith(INGEST_PREFIX) else None
                if sid and sid not in known:
                    known.add(sid)
                    sessions.append({"id": sid, "quarantined": child == "quarantine", "vault_dir": None,
                                     "manifest_sha256": None})
        for row in sessions:
            result.sessions.append(_session(dataset, station, row, snaps, m, verify))
    return result


def _find_manifest(folder: Path, session_id: str) -> Path | None:
    """A session's manifest without the catalog: <YYYY>/<MM>/<DD>/<device>/<session>/."""
    for candidate in folder.glob(f"*/*/*/*/{session_id}/manifest.json"):
        return candidate
    return None


def _session(dataset: str, station: str, row: dict, snaps: Snapshots, m: SnapshotMounts,
             verify: bool) -> SessionAtHq:
    sid = row["id"]
    child = "quarantine" if row.get("quarantined") else "media"
    own = f"{INGEST_PREFIX}{sid}"
    s = SessionAtHq(station=station, session=sid, state="pending", dataset=child,
                    device=row.get("device_serial"), officer=row.get("officer"),
                    started_at=row.get("started_at"), files=row.get("files_total"),
                    bytes=row.get("bytes_total"))
    if snaps.has(child, own):
        s.snapshot = f"{dataset}/{child}@{own}"
    newest = snaps.newest(child)
    manifest_path: Path | None = None
    if newest:
        try:
            folder = m.path(f"{dataset}/{child}@{newest}")
            if row.get("vault_dir"):
                inner = Path(row["vault_dir"])
                inner = inner.relative_to(child) if inner.parts and inner.parts[0] == child else inner
                candidate = folder / inner / "manifest.json"
                manifest_path = candidate if candidate.exists() else None
            else:
                manifest_path = _find_manifest(folder, sid)
        except HqError as exc:
            s.problems.append(str(exc))
            s.manifest = "unread"
    manifest: dict | None = None
    if manifest_path is not None:
        data = manifest_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        try:
            manifest = json.loads(data)
        except ValueError:
            manifest = None
        if row.get("manifest_sha256") and digest != row["manifest_sha256"]:
            s.manifest = "differs"
            s.problems.append(f"manifest SHA-256 {digest[:12]}… differs from the catalog's "
                              f"{row['manifest_sha256'][:12]}…")
        elif manifest is None:
            s.manifest = "unread"
        else:
            s.manifest = "ok"
        if manifest:
            totals = manifest.get("totals") or {}
            s.files = totals.get("files", s.files)
            s.bytes = totals.get("bytes", s.bytes)
            s.device = s.device or (manifest.get("device") or {}).get("serial")
            s.officer = s.officer or manifest.get("officer")
            s.started_at = s.started_at or (manifest.get("session") or {}).get("started_at")
    if s.manifest == "differs":
        s.state = "mismatch"
    elif s.manifest == "ok":
        s.state = "arrived" if s.snapshot else "arrived-no-snapshot"
    if verify and manifest is not None and s.state in ("arrived", "arrived-no-snapshot"):
        s.verified = _verify(m, s, manifest, dataset, child, newest)
        if s.verified != "ok":
            s.state = "mismatch"
    return s


def _verify(m: SnapshotMounts, s: SessionAtHq, manifest: dict, dataset: str, child: str,
            newest: str | None) -> str:
    """Re-hash the session's files from its own snapshot (else the newest) against its manifest."""
    snap = s.snapshot or f"{dataset}/{child}@{newest}"
    try:
        folder = m.path(snap)
    except HqError as exc:
        return str(exc)
    bad = []
    for entry in manifest.get("files", []):
        rel = Path(entry["vault_path"])
        rel = rel.relative_to(child) if rel.parts and rel.parts[0] == child else rel
        path = folder / rel
        try:
            if path.stat().st_size != entry["size"] or _sha256_file(path) != entry["sha256"]:
                bad.append(str(rel))
        except OSError as exc:
            bad.append(f"{rel}: {exc.strerror}")
    return "ok" if not bad else f"{len(bad)} file(s) differ or are missing: {', '.join(bad[:5])}"


def hq_status(root: str, station: str | None = None, *, verify: bool = False) -> list[StationAtHq]:
    return [station_status(ds, verify=verify) for ds in station_datasets(root, station)]


def to_json(stations: list[StationAtHq]) -> list[dict]:
    out = []
    for st in stations:
        d = asdict(st)
        d["counts"] = st.counts()
        out.append(d)
    return out


def format_table(stations: list[StationAtHq]) -> str:
    lines = []
    for st in stations:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(st.counts().items())) or "no sessions"
        lines.append(f"{st.station} ({st.dataset}): {counts}; newest snapshot "
                     f"{st.newest_snapshot or '-'} at {st.newest_snapshot_at or '-'}"
                     + (f"; partial receive waiting: {', '.join(st.partial_receive)}" if st.partial_receive
                        else ""))
        for s in st.sessions:
            size = f"{s.bytes}" if s.bytes is not None else "-"
            verified = f"\tverify {s.verified}" if s.verified else ""
            lines.append(f"  {s.session}\t{s.state}\t{s.device or '-'}\t{s.officer or '-'}\t"
                         f"{s.files if s.files is not None else '-'} files\t{size} bytes\t"
                         f"manifest {s.manifest}{verified}")
            for p in s.problems:
                lines.append(f"    ! {p}")
    return "\n".join(lines)
