"""The session manifest: the vault's own record of a session, beside its files.

It duplicates what the catalog holds for the session on purpose: a session folder
copied anywhere (a disc, headquarters) still says what it is and can be checked
without the catalog.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance import __version__
from appliance.catalog.sessions import VerifiedFile
from appliance.timeutil import camera_time, iso
from appliance.vault.copier import write_file_atomic
from appliance.vault.hashing import hash_bytes
from appliance.vault.layout import MANIFEST


@dataclass(frozen=True)
class SessionFacts:
    """Everything the manifest states about a session besides its files."""

    session_id: str
    station_id: str
    station_name: str
    device_serial: str
    device_model: str
    officer: str | None
    slot: str
    quarantined: bool
    started_at: datetime
    committed_at: datetime
    camera_newest: datetime | None
    clock_drift_s: float | None
    algorithms: list[str]
    camera_tz: str = "UTC"


def build_manifest(facts: SessionFacts, files: list[VerifiedFile]) -> bytes:
    """The manifest's bytes: UTF-8 JSON, keys sorted, so the same session gives the same bytes."""
    entries = []
    for f in files:
        entry = {"path": f.rel_path, "vault_path": f.vault_path, "size": f.size,
                 "camera_mtime": iso(camera_time(f.mtime_ns, facts.camera_tz)), "sha256": f.sha256}
        if f.sm3:
            entry["sm3"] = f.sm3
        if f.rel_path.encode("utf-8", "surrogateescape") != f.rel_path_raw:
            # The name is not valid UTF-8: keep the exact bytes too.
            entry["path_bytes_b64"] = base64.b64encode(f.rel_path_raw).decode()
        entries.append(entry)
    doc = {
        "format": "evidence-appliance/session-manifest/1",
        "appliance_version": __version__,
        "station": {"id": facts.station_id, "name": facts.station_name},
        "session": {
            "id": facts.session_id, "slot": facts.slot, "quarantined": facts.quarantined,
            "started_at": iso(facts.started_at), "committed_at": iso(facts.committed_at),
        },
        "device": {"serial": facts.device_serial, "model": facts.device_model},
        "officer": facts.officer,
        "clock": {
            "camera_newest_file": iso(facts.camera_newest) if facts.camera_newest else None,
            "drift_seconds": facts.clock_drift_s,
        },
        "hash_algorithms": facts.algorithms,
        "files": entries,
        "totals": {"files": len(files), "bytes": sum(f.size for f in files)},
    }
    return (json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_manifest(session_dir: Path, data: bytes) -> str:
    """Write the manifest crash-safe and read-only; return its SHA-256."""
    write_file_atomic(session_dir / MANIFEST, data, mode=0o444)
    return hash_bytes(data).sha256


def read_manifest(session_dir: Path) -> dict:
    """The manifest of a session folder."""
    return json.loads((session_dir / MANIFEST).read_text(encoding="utf-8"))
