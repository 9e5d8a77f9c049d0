"""What a camera profile knows about a camera's file system.

Which folders hold media, which file says who the camera is, where the clock file goes.
Everything here reads paths as bytes: a camera's names are kept exactly as its file
system reports them, invalid UTF-8 included.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.config import CameraProfile
from appliance.vault.layout import is_safe_relative

MAX_DEPTH = 16
IDENTITY_MAX_BYTES = 64 << 10


@dataclass(frozen=True)
class CameraFile:
    """One media file found on a camera."""

    rel_raw: bytes
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[bytes, int, int]:
        """What makes a camera file the same file on the next docking."""
        return (self.rel_raw, self.size, self.mtime_ns)


@dataclass(frozen=True)
class Listing:
    """The media on a camera, and what was passed over and why."""

    files: list[CameraFile]
    skipped: list[tuple[bytes, str]]


def select_profile(profiles: list[CameraProfile], vendor: str | None, model: str | None) -> CameraProfile:
    """The first profile whose match fields all fit the USB vendor/model; else the first catch-all."""
    def fits(p: CameraProfile) -> bool:
        m = p.match
        return ((m.vendor is None or (vendor or "").strip().lower() == m.vendor.lower())
                and (m.model is None or (model or "").strip().lower() == m.model.lower()))
    for profile in profiles:
        if (profile.match.vendor or profile.match.model) and fits(profile):
            return profile
    catch_all = [p for p in profiles if not (p.match.vendor or p.match.model)]
    return catch_all[0] if catch_all else profiles[0]


def read_identity(root: Path, profile: CameraProfile) -> str | None:
    """The serial the camera's identity file names, or None if it has none we can read."""
    path = _find_case_insensitive(root, profile.identity.path.encode())
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(IDENTITY_MAX_BYTES)
    except OSError:
        return None
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    match = re.search(profile.identity.pattern, text)
    return match.group(1) if match else None


def list_media(root: Path, profile: CameraProfile) -> Listing:
    """Every media file below the profile's media folders, without following links."""
    files: list[CameraFile] = []
    skipped: list[tuple[bytes, str]] = []
    extensions = tuple(e.encode() for e in profile.extensions)
    broot = os.fsencode(root)
    for media_dir in profile.media_dirs:
        top = _find_case_insensitive(root, media_dir.encode())
        if top is None:
            continue
        _walk(broot, os.fsencode(top), extensions, files, skipped, 0)
    files.sort(key=lambda f: f.rel_raw)
    return Listing(files, skipped)


def _walk(broot: bytes, folder: bytes, extensions: tuple[bytes, ...], files: list[CameraFile],
          skipped: list[tuple[bytes, str]], depth: int) -> None:
    rel_folder = os.path.relpath(folder, broot)
    if depth > MAX_DEPTH:
        skipped.append((rel_folder, "folders nested too deep"))
        return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append((rel_folder, f"cannot list: {exc.strerror}"))
        return
    for entry in entries:
        rel = os.path.relpath(entry.path, broot)
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            skipped.append((rel, f"cannot stat: {exc.strerror}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(broot, entry.path, extensions, files, skipped, depth + 1)
        elif not stat.S_ISREG(st.st_mode):
            skipped.append((rel, "not a regular file"))
        elif not is_safe_relative(rel):
            skipped.append((rel, "unsafe name"))
        elif entry.name.lower().endswith(extensions):
            files.append(CameraFile(rel, st.st_size, st.st_mtime_ns))


def _find_case_insensitive(root: Path, rel: bytes) -> Path | None:
    """FAT is case-insensitive but drivers differ in how they present case: match either way."""
    current = os.fsencode(root)
    for part in rel.split(b"/"):
        try:
            names = os.listdir(current)
        except OSError:
            return None
        hit = next((n for n in names if n == part), None) or \
            next((n for n in names if n.lower() == part.lower()), None)
        if hit is None:
            return None
        current = os.path.join(current, hit)
    return Path(os.fsdecode(current))


def write_clock_file(root: Path, profile: CameraProfile, now: datetime) -> str:
    """Write the profile's clock-sync file with the station time; return what was written."""
    assert profile.clock_sync is not None
    text = now.strftime(profile.clock_sync.format)
    target = root / profile.clock_sync.path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="ascii", newline="\r\n") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return text


def wipe_files(root: Path, files: list[CameraFile]) -> tuple[list[bytes], list[tuple[bytes, str]]]:
    """Delete exactly these files, each only if it is still the file that was verified."""
    deleted: list[bytes] = []
    kept: list[tuple[bytes, str]] = []
    broot = os.fsencode(root)
    for f in files:
        path = os.path.join(broot, f.rel_raw)
        try:
            st = os.stat(path, follow_symlinks=False)
            if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                kept.append((f.rel_raw, "changed since it was copied"))
                continue
            os.unlink(path)
            deleted.append(f.rel_raw)
        except OSError as exc:
            kept.append((f.rel_raw, exc.strerror or str(exc)))
    return deleted, kept
