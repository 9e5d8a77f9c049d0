"""Where things go in the vault, the same for every backend.

    <vault>/media/YYYY/MM/DD/<device>/<session>/manifest.json
    <vault>/media/YYYY/MM/DD/<device>/<session>/files/<original relative path>
    <vault>/quarantine/YYYY/MM/DD/<device>/<session>/...   (unknown cameras)
    <vault>/catalog/catalog.sqlite
    <vault>/discs/<label>.iso                               (disc images being built: scratch)
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from pathlib import Path

from appliance.timeutil import local

MANIFEST = "manifest.json"
#: The vault's top folders (on ZFS, one child dataset each).
MEDIA, QUARANTINE, CATALOG, DISCS = "media", "quarantine", "catalog", "discs"
FILES = "files"
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_component(text: str, fallback: str = "unknown") -> str:
    """A device serial as a folder name: ASCII letters, digits, '-' and '_' only."""
    cleaned = _SAFE.sub("_", text)[:64].strip("_")
    return cleaned or fallback


def new_session_id(serial: str, started: datetime, tz_name: str) -> str:
    """``20261127T083015-<serial>-<4 hex>``: sorts by time, names the camera, never collides."""
    stamp = local(started, tz_name).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{safe_component(serial)}-{secrets.token_hex(2)}"


def session_relpath(session_id: str, serial: str, started: datetime, tz_name: str,
                    quarantined: bool) -> Path:
    """The session's folder relative to the vault root."""
    day = local(started, tz_name)
    top = "quarantine" if quarantined else "media"
    return Path(top, f"{day:%Y}", f"{day:%m}", f"{day:%d}", safe_component(serial), session_id)


def display_path(raw: bytes) -> str:
    """A camera path as text for people and JSON: invalid UTF-8 shown as \\xNN escapes."""
    return raw.decode("utf-8", "backslashreplace")


def is_safe_relative(raw: bytes) -> bool:
    """True for a relative path with no empty, '.' or '..' component (hostile names)."""
    if not raw or raw.startswith(b"/") or b"\0" in raw:
        return False
    return all(part not in (b"", b".", b"..") for part in raw.split(b"/"))
