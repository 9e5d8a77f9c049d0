"""The web page's security, in one place.

* Sessions live in signed and encrypted cookies (aiohttp-session, Fernet). The key is
  generated at first start into the state folder with mode 0600. A cookie is
  ``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` whenever the request came over TLS.
  A session carries the account's *epoch*: logout, a password change, a role change or
  disabling the account moves the epoch, and every cookie issued before stops working.
* :func:`security_middleware` enforces the route table (:mod:`appliance.web.routes`) for
  every request: a route that is not in the table is refused; a route for logged-in users
  refuses a request without a valid session; a route for some roles refuses every other
  role. Every non-GET request must carry the session's CSRF token (form field
  ``csrf_token`` or header ``X-CSRF-Token``) and, when the browser sends one, an
  ``Origin`` of this very host.
* Failed logins are throttled per account and per address (:class:`LoginThrottle`).
* Every response gets the security headers (CSP without inline scripts, no framing,
  no sniffing, no caching of pages with evidence metadata).
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp_session import SESSION_KEY, Session, get_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from appliance.catalog import users as users_db
from appliance.catalog.users import User
from appliance.web.keys import APPLIANCE, STATE, USER
from appliance.web.access import Access
from appliance.web.access import may as role_may

if TYPE_CHECKING:
    from aiohttp.web_urldispatcher import AbstractResource

log = logging.getLogger(__name__)

COOKIE_NAME = "appliance_session"
KEY_FILE = "web-session.key"
SESSION_MAX_AGE_S = 12 * 3600          # absolute: a shift
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


# -- the cookie key ------------------------------------------------------------------------

def load_or_create_key(state_dir: Path) -> bytes:
    """The 32-byte cookie key in ``<state>/web-session.key`` (0600), created at first start."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("web: new session key in %s", path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("web: %s was readable by others (mode %o); set to 0600", path, mode)
        os.chmod(path, 0o600)
    key = base64.urlsafe_b64decode(path.read_bytes().strip())
    if len(key) != 32:
        raise ValueError(f"{path}: not a 32-byte key; remove it to have a new one made "
                         "(every session then ends)")
    return key


class CookieStorage(EncryptedCookieStorage):
    """Encrypted cookie storage whose cookie is ``Secure`` when the request came over TLS."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key, cookie_name=COOKIE_NAME, max_age=SESSION_MAX_AGE_S, httponly=True,
                         samesite="Strict", path="/")

    async def save_session(self, request: web.Request, response: web.StreamResponse,
                           session: Session) -> None:
        # No await between setting the flag and writing the cookie: no other request interleaves.
        self._cookie_params["secure"] = request.secure
        await super().save_session(request, response, session)


# -- settings that the IT admin may change -------------------------------------------------

SETTINGS_DEFAULTS: dict[str, int] = {
    "session_idle_minutes": 30,
    "login_max_failures": 5,
    "lockout_minutes": 15,
    "pseudo_drives": 0,
}
SETTINGS_LIMITS: dict[str, tuple[int, int]] = {
    "session_idle_minutes": (5, 720),
    "login_max_failures": (3, 20),
    "lockout_minutes": (1, 1440),
    "pseudo_drives": (0, 4),
}


# -- login throttling ----------------------------------------------------------------------

@dataclass
class _Counter:
    failures: deque = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    """Failed logins per account and per address; too many within the window lock it.

    An address gets three times the account's allowance (a shared station PC). While
    locked, even the right password is refused, so guessing gains nothing.
    """

    MAX_KEYS = 10_000

    def __init__(self, max_failures: int = 5, lockout_s: float = 900, window_s: float = 900,
                 clock=time.monotonic) -> None:
        self.max_failures, self.lockout_s, self.window_s = max_failures, lockout_s, window_s
        self._clock = clock
        self._keys: dict[str, _Counter] = {}

    def locked_for(self, user: str, ip: str) -> float:
        """Seconds the account or the address is still locked (0: not locked)."""
        now = self._clock()
        return max(0.0, *(c.locked_until - now for c in self._counters(user, ip)))

    def failed(self, user: str, ip: str) -> list[str]:
        """Count a failure; return which keys ('user', 'ip') this failure locked."""
        now = self._clock()
        locked = []
        for kind, key, allowed in (("user", self._ukey(user), self.max_failures),
                                   ("ip", f"ip:{ip}", self.max_failures * 3)):
            c = self._keys.setdefault(key, _Counter())
            c.failures.append(now)
            while c.failures and c.failures[0] < now - self.window_s:
                c.failures.popleft()
            if len(c.failures) >= allowed and c.locked_until <= now:
                c.locked_until = now + self.lockout_s
                c.failures.clear()
                locked.append(kind)
        self._prune(now)
        return locked

    def succeeded(self, user: str) -> None:
        self._keys.pop(self._ukey(user), None)

    def _counters(self, user: str, ip: str) -> list[_Counter]:
        return [self._keys.get(self._ukey(user)) or _Counter(), self._keys.get(f"ip:{ip}") or _Counter()]

    @staticmethod
    def _ukey(user: str) -> str:
        return "user:" + user.strip().lower()

    def _prune(self, now: float) -> None:
        if len(self._keys) <= self.MAX_KEYS:
            return
        for key in [k for k, c in self._keys.items()
                    if c.locked_until < now and (not c.failures or c.failures[-1] < now - self.window_s)]:
            del self._keys[key]


# -- per-application state -----------------------------------------------------------------

@dataclass
class WebState:
    """What the web application keeps between requests (all of it in memory)."""

    access: dict[tuple["AbstractResource", str], Access] = field(default_factory=dict)
    names: dict[str, Access] = field(default_factory=dict)
    settings: dict[str, int] = field(default_factory=lambda: dict(SETTINGS_DEFAULTS))
    plays: dict[tuple[int, int], float] = field(default_factory=dict)
    chain: tuple[float, object] | None = None

    def play_is_new(self, user_id: int, recording_id: int, window_s: float = 300) -> bool:
        """A play is audited once per user and recording per window: seeking is the same play."""
        now = time.monotonic()
        last = self.plays.get((user_id, recording_id))
        self.plays[(user_id, recording_id)] = now
        if len(self.plays) > 10_000:
            self.plays = {k: v for k, v in self.plays.items() if v > now - window_s}
        return last is None or now - last > window_s


def may(access: Access, user: User | None) -> bool:
    """Whether ``user`` (None: nobody logged in) may use a route with ``access``."""
    return role_may(access, user.role if user else None)


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


def safe_next(target: str | None, default: str = "/") -> str:
    """A redirect target only if it is a path on this site (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def csrf_token(session: Session) -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


async def current_user(request: web.Request) -> User | None:
    return request.get(USER)


# -- the middleware ------------------------------------------------------------------------

def _route_access(request: web.Request) -> Access | None:
    state = request.app[STATE]
    match = request.match_info
    resource = match.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return state.access.get((resource, method))


async def _load_user(request: web.Request, session: Session) -> User | None:
    uid = session.get("uid")
    if not isinstance(uid, int):
        return None
    app = request.app[APPLIANCE]
    state = request.app[STATE]
    user = await app.catalog.call(users_db.get_user, uid)
    idle = state.settings["session_idle_minutes"] * 60
    now = time.time()
    if (user is None or user.disabled or session.get("epoch") != user.session_epoch
            or now - float(session.get("seen", 0)) > idle):
        for key in ("uid", "epoch", "seen"):
            session.pop(key, None)
        session.changed()
        return None
    if now - float(session.get("seen", 0)) > 30:   # refresh the idle clock, not on every request
        session["seen"] = now
    return user


def _wants_html(request: web.Request) -> bool:
    return not request.path.startswith("/api/") and request.method in SAFE_METHODS


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":  # tools; opaque origins: the token and SameSite decide
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.netloc == request.host


@web.middleware
async def security_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Route table, session, role, CSRF: every request passes here before its handler."""
    metrics = request.app[APPLIANCE].metrics
    if request.match_info.http_exception is not None:     # 404 / 405: nothing to protect
        raise request.match_info.http_exception
    access = _route_access(request)
    if access is None:
        metrics.web_denied.labels("not_in_table").inc()
        raise web.HTTPForbidden(text="route not in the access table")
    session = await get_session(request)
    user = await _load_user(request, session)
    request[USER] = user
    if not may(access, user):
        if user is None:
            metrics.web_denied.labels("no_session").inc()
            if _wants_html(request):
                raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe=""))
            raise web.HTTPUnauthorized(text="login required")
        metrics.web_denied.labels("role").inc()
        raise web.HTTPForbidden(text="your role may not use this page")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type in ("application/x-www-form-urlencoded",
                                                      "multipart/form-data"):
            sent = (await request.post()).get(CSRF_FIELD)
        expected = session.get("csrf")
        if (not isinstance(sent, str) or not expected
                or not hmac.compare_digest(sent.encode(), str(expected).encode())
                or not _same_origin(request)):
            metrics.web_denied.labels("csrf").inc()
            raise web.HTTPForbidden(text="CSRF check failed: reload the page and try again")
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the same headers on every response, streams and files included."""
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.path.startswith("/static/"):
        h.setdefault("Cache-Control", "public, max-age=3600")
    else:
        h.setdefault("Cache-Control", "no-store")
    if request.secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION_KEY)
