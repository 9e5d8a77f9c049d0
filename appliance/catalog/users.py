"""Local accounts of the web page: who may log in, with which role (regulation art. 13:
the storage is password-protected).

Passwords are hashed with argon2id (argon2-cffi). Hashing is slow on purpose, so callers
hash *outside* the catalog's one thread (see :func:`hash_password`) and hand the hash in.
Every change is audited in the same transaction.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance.catalog import audit
from appliance.catalog.registry import ensure_officer
from appliance.errors import ApplianceError
from appliance.timeutil import iso, utcnow

#: Roles from the regulation, in the order the pages list them.
ROLES = ("officer", "device_manager", "leader", "bureau_head", "legal", "it_admin", "admin")
MIN_PASSWORD = 8
_NAME = re.compile(r"^[\w.\-@]{1,32}$")

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults
# Verified against when the user does not exist, so that the answer takes as long.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class UserError(ApplianceError):
    """账户错误 / account error: {}"""


@dataclass(frozen=True)
class User:
    """An account (never carries the password hash out of this module)."""

    id: int
    name: str
    display_name: str
    role: str
    officer_id: int | None
    officer_name: str | None
    session_epoch: int
    disabled: bool
    created_at: str
    last_login_at: str | None

    @property
    def label(self) -> str:
        return self.display_name or self.name


def hash_password(password: str) -> str:
    """The argon2id hash of a password that meets the policy. Blocking (tens of ms)."""
    check_password_policy(password)
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > 256:
        raise UserError("password too long: at most 256 characters")


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; takes as long for an unknown user. Blocking."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise UserError(f"{name!r}: a user name is 1 to 32 letters, digits, '.', '-', '_' or '@'")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"{role!r}: unknown role (one of {', '.join(ROLES)})")
    return role


def _user(r: sqlite3.Row) -> User:
    return User(r["id"], r["name"], r["display_name"], r["role"], r["officer_id"], r["officer_name"],
                r["session_epoch"], bool(r["disabled"]), r["created_at"], r["last_login_at"])


_SELECT = ("SELECT u.*, o.name AS officer_name FROM users u"
           " LEFT JOIN officers o ON o.id = u.officer_id")


def add_user(conn: sqlite3.Connection, name: str, role: str, password_hash: str, *,
             display_name: str = "", officer: str | None = None, actor: str = audit.SYSTEM) -> User:
    """Create an account; an officer account is tied to the officer's registry entry."""
    name, role = check_name(name), check_role(role)
    if role == "officer" and not officer:
        raise UserError("an officer account needs the officer's name (--officer)")
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise UserError(f"{name}: the user exists already")
    officer_id = ensure_officer(conn, officer, actor) if officer else None
    now = iso(utcnow())
    cur = conn.execute(
        "INSERT INTO users (name, display_name, role, officer_id, password_hash, created_at,"
        " password_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, display_name.strip()[:64], role, officer_id, password_hash, now, now))
    audit.append(conn, actor, "user.add", name, {"role": role, "officer": officer})
    return get_user(conn, int(cur.lastrowid))  # type: ignore[return-value]


def get_user(conn: sqlite3.Connection, user_id: int) -> User | None:
    r = conn.execute(_SELECT + " WHERE u.id = ?", (user_id,)).fetchone()
    return _user(r) if r else None


def credentials(conn: sqlite3.Connection, name: str) -> tuple[User, str] | None:
    """The account and its password hash, for a login check."""
    r = conn.execute(_SELECT + " WHERE u.name = ?", (name.strip(),)).fetchone()
    return (_user(r), r["password_hash"]) if r else None


def list_users(conn: sqlite3.Connection) -> list[User]:
    return [_user(r) for r in conn.execute(_SELECT + " ORDER BY u.name")]


def count_users(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]


def set_password(conn: sqlite3.Connection, user_id: int, password_hash: str, *, actor: str,
                 reset: bool = False) -> None:
    """Replace a password; every session of the account ends (the epoch moves)."""
    user = _require(conn, user_id)
    conn.execute("UPDATE users SET password_hash = ?, password_changed_at = ?,"
                 " session_epoch = session_epoch + 1 WHERE id = ?",
                 (password_hash, iso(utcnow()), user_id))
    audit.append(conn, actor, "user.password-reset" if reset else "user.password-change", user.name)


def set_role(conn: sqlite3.Connection, user_id: int, role: str, *, actor: str,
             officer: str | None = None) -> None:
    check_role(role)
    user = _require(conn, user_id)
    if role == "officer" and not (officer or user.officer_name):
        raise UserError("an officer account needs the officer's name")
    officer_id = ensure_officer(conn, officer, actor) if officer else user.officer_id
    conn.execute("UPDATE users SET role = ?, officer_id = ?, session_epoch = session_epoch + 1"
                 " WHERE id = ?", (role, officer_id, user_id))
    audit.append(conn, actor, "user.role", user.name, {"role": role, "previous": user.role,
                                                       "officer": officer or user.officer_name})


def set_disabled(conn: sqlite3.Connection, user_id: int, disabled: bool, *, actor: str) -> None:
    user = _require(conn, user_id)
    conn.execute("UPDATE users SET disabled = ?, session_epoch = session_epoch + 1 WHERE id = ?",
                 (int(disabled), user_id))
    audit.append(conn, actor, "user.disable" if disabled else "user.enable", user.name)


def end_sessions(conn: sqlite3.Connection, user_id: int) -> None:
    """Logout: cookies issued before now stop working (sessions live in cookies)."""
    conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = ?", (user_id,))


def record_login(conn: sqlite3.Connection, user_id: int) -> None:
    conn.execute("UPDATE users SET last_login_at = ? WHERE id = ?", (iso(utcnow()), user_id))


def _require(conn: sqlite3.Connection, user_id: int) -> User:
    user = get_user(conn, user_id)
    if user is None:
        raise UserError(f"no user with id {user_id}")
    return user
