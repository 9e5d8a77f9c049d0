"""Reading ``zfs diff -H -F`` and judging it: may one snapshot stand in for an older one?

After a retention purge the vault replaces its held snapshots by one new snapshot
(:meth:`appliance.vault.zfs.ZfsVault.reseal`), because a snapshot is of the whole dataset
and would otherwise keep every purged file's blocks for as long as any session that was
sealed after it is kept. That is only allowed when the difference between each held
snapshot and the next, up to the new one, is what the vault itself does: new files and
folders, folders opened and closed again, temporary copies that became recordings or went
away, and the removal of files that an approved purge removed. A file that changed, or
was replaced under its name, is allowed only if it still has its catalogued hash (setting the immutable attribute on a
session that was being copied when another session was sealed shows as a change); the
caller checks those. Anything else is refused, and the old snapshots stay.

``zfs diff -H`` prints one change per line, tab-separated: the change (``+ - M R``), with
``-F`` the file type (``F`` file, ``/`` folder, ``@`` link, ...), the path, and for ``R``
the new path. Paths are absolute, below the dataset's mountpoint, with every byte outside
printable ASCII, the space and the backslash written as ``\\NNNN`` (octal): Chinese names
arrive as runs of escaped UTF-8 bytes (OpenZFS ``stream_bytes``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from appliance.vault.copier import PARTIAL_PREFIX

_ESCAPE = re.compile(rb"\\([0-7]{4})")


@dataclass(frozen=True)
class Change:
    """One line of ``zfs diff -H -F``, its paths relative to the vault."""

    kind: str                 # "+" added, "-" removed, "M" modified, "R" renamed
    file_type: str            # "F" regular file, "/" folder, "@" symbolic link, ...
    path: str
    new_path: str | None = None


def unescape(text: str) -> str:
    """A path as ``zfs diff`` printed it, as the name it is (UTF-8; invalid bytes kept as
    surrogate escapes, as :func:`os.fsdecode` would)."""
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def parse(output: str, mountpoint: str, prefix: str) -> list[Change]:
    """The changes in ``zfs diff -H -F`` output of a dataset mounted at ``mountpoint``;
    paths become ``<prefix>/<path below the mountpoint>`` (the vault-relative form)."""
    base = PurePosixPath(mountpoint)

    def relative(raw: str) -> str:
        path = PurePosixPath(unescape(raw))
        below = path.relative_to(base) if path != base else PurePosixPath()
        return str(PurePosixPath(prefix) / below)

    changes = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        kind, file_type, path = fields[0], fields[1], fields[2]
        new_path = fields[3] if kind == "R" and len(fields) > 3 else None
        changes.append(Change(kind, file_type, relative(path),
                              relative(new_path) if new_path is not None else None))
    return changes


def judge(changes: Iterable[Change], purged: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(problems, files to check): what the vault does not do, and the files that changed
    and must still have their catalogued hash. ``purged(path)`` says whether an approved
    purge removed the file at that vault-relative path."""
    changes = list(changes)
    # A file replaced by a rename over it (a manifest written again, atomically) is one
    # object gone and another added under the same name: a change of content, not a loss.
    added = {c.path for c in changes if c.kind == "+" and c.file_type == "F"}
    problems: list[str] = []
    modified: list[str] = []
    for c in changes:
        if c.kind == "+" or (c.file_type == "/" and c.kind == "M"):
            continue
        if c.file_type == "F" and PurePosixPath(c.path).name.startswith(PARTIAL_PREFIX):
            continue  # a copy under way when a session was sealed: written, renamed or removed
        if c.file_type != "F":
            problems.append(f"{c.kind} {c.file_type} {c.path}: not something the vault does")
        elif c.kind == "-":
            if c.path in added:
                modified.append(c.path)
            elif not purged(c.path):
                problems.append(f"{c.path}: removed, but no approved purge removed it")
        elif c.kind == "R":
            problems.append(f"{c.path}: renamed to {c.new_path}")
        elif c.kind == "M":
            modified.append(c.path)
        else:
            problems.append(f"{c.kind} {c.path}: unknown change")
    return problems, modified
