"""The audit log: append-only, hash-chained.

Each row's hash covers its own fields and the hash of the row before it, so an edited,
inserted or deleted row breaks the chain from that row on. Rows are appended in the
same transaction as the change they record, so the log never claims what did not
happen and never misses what did. (Removing rows from the very end cannot be seen from
the chain alone; the head hash is therefore also exported to metrics and onto discs.)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

from appliance.timeutil import iso, utcnow

GENESIS = "0" * 64
SYSTEM = "system"


@dataclass(frozen=True)
class ChainState:
    """Result of checking the chain."""

    ok: bool
    rows: int
    head: str
    first_broken: int | None = None
    reason: str = ""


def _row_hash(seq: int, at: str, actor: str, action: str, subject: str, details: str,
              prev_hash: str) -> str:
    canonical = json.dumps([seq, at, actor, action, subject, details, prev_hash],
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(conn: sqlite3.Connection, actor: str, action: str, subject: str = "",
           details: dict | None = None) -> str:
    """Append one row inside the caller's transaction; return its hash."""
    last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS)
    at = iso(utcnow())
    text = json.dumps(details or {}, ensure_ascii=False, sort_keys=True, default=str)
    digest = _row_hash(seq, at, actor, action, subject, text, prev)
    conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (seq, at, actor, action, subject, text, prev, digest))
    return digest


def head(conn: sqlite3.Connection) -> str:
    """The hash of the newest row (what a disc or a metric vouches for)."""
    row = conn.execute("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return row["hash"] if row else GENESIS


def verify_chain(conn: sqlite3.Connection) -> ChainState:
    """Walk the whole log; name the first row that does not follow from the one before."""
    prev, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute("SELECT * FROM audit_log ORDER BY seq"):
        count += 1
        seq = row["seq"]
        if seq != expected_seq:
            return ChainState(False, count, prev, seq, f"row {expected_seq} is missing")
        if row["prev_hash"] != prev:
            return ChainState(False, count, prev, seq, "does not follow the row before it")
        digest = _row_hash(seq, row["at"], row["actor"], row["action"], row["subject"],
                           row["details"], row["prev_hash"])
        if digest != row["hash"]:
            return ChainState(False, count, prev, seq, "its content was changed")
        prev, expected_seq = row["hash"], seq + 1
    return ChainState(True, count, prev)
