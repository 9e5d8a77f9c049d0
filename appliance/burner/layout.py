"""Where every file goes on a disc, in each of its three directory trees.

An evidence disc carries the same files under three file systems, read by different
readers:

* **UDF 2.60** (Windows, macOS, Linux) and **Rock Ridge** (Linux, on top of ISO 9660):
  the original names, Chinese included, exactly as ``disc_path`` says;
* **Joliet** (older Windows): UCS-2 names of at most 64 characters, without ``* / : ; ?
  \\``, and case-insensitive. A name Joliet cannot hold is shortened deterministically
  (the same name always gives the same short name) and the mapping goes into the
  manifest. pycdlib counts Joliet's limit in UTF-8 bytes, so a Chinese name longer than
  21 characters is shortened too;
* **ISO 9660 level 3** itself: upper-case ``A-Z 0-9 _`` names, made from the original
  where possible, numbered otherwise. Nobody should need them, but they must be valid.

Paths are checked here, before anything is written: a path that no reader could show
faithfully is refused with the recording named, never silently altered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from appliance.burner.errors import InvalidDiscPath

#: Files every disc carries at its root; recordings may not use these names.
README = "README.txt"
MANIFEST = "MANIFEST.json"
SHA256SUMS = "SHA256SUMS"
INDEX = "index.html"
FORM_PDF = "record-form.pdf"
FORM_HTML = "record-form.html"
RESERVED = (README, MANIFEST, SHA256SUMS, INDEX, FORM_PDF, FORM_HTML)

MAX_DEPTH = 7             # ISO 9660: eight levels including the root
MAX_NAME_BYTES = 255      # Rock Ridge names as Linux file systems take them
JOLIET_MAX_BYTES = 64     # pycdlib's check (UTF-8 bytes, stricter than 64 UCS-2 units)
_JOLIET_BAD = re.compile(r"[*/:;?\\\x00-\x1f\x7f]")
_ISO_BAD = re.compile(r"[^A-Z0-9_]")


@dataclass(frozen=True)
class Placement:
    """One file or folder of a disc, in the three trees."""

    disc_path: str     # "a/b/c.mp4": the Rock Ridge and UDF path, original names
    iso_path: str      # "/A/B/C.MP4;1"
    joliet_path: str   # "/a/b/c.mp4", or shortened
    is_dir: bool

    @property
    def rr_name(self) -> str:
        return self.disc_path.rsplit("/", 1)[-1]

    @property
    def udf_path(self) -> str:
        return "/" + self.disc_path


@dataclass
class _Dir:
    placement: Placement | None
    iso_taken: set[str] = field(default_factory=set)
    joliet_taken: set[str] = field(default_factory=set)
    children: dict[str, "Placement"] = field(default_factory=dict)


class DiscLayout:
    """The three trees of one disc, built up path by path.

    :meth:`add` returns the :class:`Placement` of a file (creating its folders); folders
    come out of :attr:`directories` parents first, files out of :attr:`files` in the order
    they were added.
    """

    def __init__(self) -> None:
        self._dirs: dict[str, _Dir] = {"": _Dir(None)}
        self.directories: list[Placement] = []
        self.files: list[Placement] = []

    def add(self, disc_path: str, *, owner: str = "", reserved_ok: bool = False) -> Placement:
        """Place a file at ``disc_path``; ``owner`` names it in errors ("recording 17")."""
        parts = check_disc_path(disc_path, owner=owner)
        if not reserved_ok and len(parts) == 1 and parts[0].casefold() in _RESERVED_FOLDED:
            raise InvalidDiscPath(f"{owner or disc_path}: {disc_path!r} is reserved for the disc's own files")
        parent = ""
        for name in parts[:-1]:
            parent = self._ensure_dir(parent, name, owner, disc_path)
        pdir = self._dirs[parent]
        name = parts[-1]
        full = _join(parent, name)
        if name in pdir.children:
            what = "folder" if pdir.children[name].is_dir else "file"
            raise InvalidDiscPath(f"{owner or full}: {full!r} is already a {what} on this disc")
        placement = Placement(
            disc_path=full,
            iso_path=_iso_join(pdir, _iso_name(name, False, pdir.iso_taken)),
            joliet_path=_joliet_join(pdir, _joliet_name(name, pdir.joliet_taken)),
            is_dir=False,
        )
        pdir.children[name] = placement
        self.files.append(placement)
        return placement

    @property
    def joliet_renamed(self) -> dict[str, str]:
        """disc path -> Joliet path, for every file and folder Joliet shows differently."""
        out = {}
        for p in self.directories + self.files:
            if p.joliet_path != "/" + p.disc_path:
                out[p.disc_path] = p.joliet_path.lstrip("/")
        return out

    def _ensure_dir(self, parent: str, name: str, owner: str, disc_path: str) -> str:
        full = _join(parent, name)
        pdir = self._dirs[parent]
        existing = pdir.children.get(name)
        if existing is not None:
            if not existing.is_dir:
                raise InvalidDiscPath(f"{owner or disc_path}: {full!r} is a file on this disc, not a folder")
            return full
        placement = Placement(
            disc_path=full,
            iso_path=_iso_join(pdir, _iso_name(name, True, pdir.iso_taken)),
            joliet_path=_joliet_join(pdir, _joliet_name(name, pdir.joliet_taken)),
            is_dir=True,
        )
        pdir.children[name] = placement
        self._dirs[full] = _Dir(placement)
        self.directories.append(placement)
        return full


_RESERVED_FOLDED = {n.casefold() for n in RESERVED}


def check_disc_path(disc_path: str, *, owner: str = "") -> list[str]:
    """Split and check a relative disc path; :class:`InvalidDiscPath` saying what is wrong."""
    who = owner or repr(disc_path)

    def bad(reason: str) -> InvalidDiscPath:
        return InvalidDiscPath(f"{who}: {disc_path!r} {reason}")

    if not isinstance(disc_path, str) or not disc_path:
        raise bad("is empty")
    if disc_path.startswith("/"):
        raise bad("must be relative (no leading /)")
    parts = disc_path.split("/")
    if len(parts) > MAX_DEPTH:
        raise bad(f"is {len(parts)} levels deep; ISO 9660 allows {MAX_DEPTH}")
    for name in parts:
        if name in ("", ".", ".."):
            raise bad("has an empty, '.' or '..' component")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise bad("contains a control character")
        if "\\" in name:
            raise bad("contains a backslash, which Windows takes for a folder separator")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
            raise bad("is not valid UTF-8 (the catalog must give a readable name)")
        if any(ord(c) > 0xFFFF for c in name):
            raise bad("has characters outside the Basic Multilingual Plane, which UDF and Joliet cannot store")
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise bad(f"has a name longer than {MAX_NAME_BYTES} bytes")
        latin1 = all(ord(c) < 256 for c in name)
        if (not latin1 and len(name) > 126) or len(name) > 253:
            raise bad("has a name longer than UDF allows (126 characters, 253 in Latin-1)")
    return parts


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _iso_join(pdir: _Dir, iso_name: str) -> str:
    base = pdir.placement.iso_path if pdir.placement else ""
    return f"{base}/{iso_name}"


def _joliet_join(pdir: _Dir, name: str) -> str:
    base = pdir.placement.joliet_path if pdir.placement else ""
    return f"{base}/{name}"


def _iso_name(name: str, is_dir: bool, taken: set[str]) -> str:
    """An ISO 9660 level 3 identifier made from ``name``: ``STEM.EXT;1`` or ``DIR``."""
    if is_dir:
        stem, ext = name, ""
    else:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
    stem = _ISO_BAD.sub("", stem.upper().replace("-", "_").replace(" ", "_"))[:8]
    ext = _ISO_BAD.sub("", ext.upper())[:8]
    stem = stem or ("D" if is_dir else "F")
    n = 0
    candidate = stem
    while True:
        ident = candidate if is_dir else f"{candidate}.{ext}"
        if ident not in taken:
            taken.add(ident)
            return ident if is_dir else f"{ident};1"
        n += 1
        suffix = f"_{n}"
        candidate = stem[: 8 - len(suffix)] + suffix if len(stem) + len(suffix) > 8 else stem + suffix


def joliet_ok(name: str) -> bool:
    return len(name.encode("utf-8")) <= JOLIET_MAX_BYTES and not _JOLIET_BAD.search(name)


def _joliet_name(name: str, taken: set[str]) -> str:
    """``name`` if Joliet can hold it, else a short name that depends only on ``name`` and
    on the names already in the folder: ``<start of name>~<8 hex of its SHA-256>.<ext>``."""
    if joliet_ok(name) and name.casefold() not in taken:
        taken.add(name.casefold())
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    ext = _JOLIET_BAD.sub("_", ext)
    ext = f".{ext}" if ext and len(ext.encode("utf-8")) <= 12 else ""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    stem = _JOLIET_BAD.sub("_", stem)
    for width in (8, 12, 16, 24, 32, 64):
        tag = f"~{digest[:width]}"
        budget = JOLIET_MAX_BYTES - len(tag) - len(ext.encode("utf-8"))
        candidate = _truncate_utf8(stem, budget) + tag + ext
        if candidate.casefold() not in taken:
            taken.add(candidate.casefold())
            return candidate
    raise InvalidDiscPath(f"{name!r}: cannot find a unique Joliet name")  # pragma: no cover


def _truncate_utf8(text: str, limit: int) -> str:
    out = []
    used = 0
    for c in text:
        n = len(c.encode("utf-8"))
        if used + n > limit:
            break
        out.append(c)
        used += n
    return "".join(out)
