"""Login, logout, own password, language.

A login rotates the session (a new cookie and a new CSRF token), so a session fixed
before login is worth nothing. Every login, failed login, lockout, logout and password
change is in the audit log. Passwords are checked off the event loop (argon2 is slow on
purpose) and never on the catalog's thread.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp_session import get_session, new_session

from appliance.catalog import audit
from appliance.catalog import users as users_db
from appliance.web import i18n
from appliance.web.access import EVIDENCE
from appliance.web.keys import APPLIANCE, THROTTLE, USER
from appliance.web.render import render
from appliance.web.security import client_ip, safe_next


def landing(role: str) -> str:
    """Where a role starts after login."""
    if role in EVIDENCE:
        return "/recordings"
    if role == "it_admin":
        return "/admin/users"
    return "/audit"


async def login_page(request: web.Request) -> web.Response:
    user = request.get(USER)
    if user is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next"), landing(user.role)))
    return await render(request, "login.html", {"next": safe_next(request.query.get("next"), ""),
                                                "error": None, "name": ""})


async def login(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    throttle = request.app[THROTTLE]
    form = await request.post()
    name = str(form.get("name", "")).strip()[:64]
    password = str(form.get("password", ""))[:256]
    target = safe_next(str(form.get("next", "")), "")
    ip = client_ip(request)
    t = i18n.translator(i18n.language(request))

    async def refuse(key: str, status: int, **kw: object) -> web.Response:
        return await render(request, "login.html", {"next": target, "error": t(key, **kw), "name": name},
                            status=status)

    locked = throttle.locked_for(name, ip)
    if locked:
        app.metrics.web_logins.labels("locked").inc()
        await app.catalog.call(audit.append, f"anonymous@{ip}", "login.refused-locked", name, {"ip": ip})
        return await refuse("login.locked", 429, minutes=max(1, round(locked / 60)))
    found = await app.catalog.call(users_db.credentials, name) if name else None
    loop = asyncio.get_running_loop()
    ok = await loop.run_in_executor(None, users_db.verify_password, found[1] if found else None, password)
    user = found[0] if found else None
    if not ok or user is None or user.disabled:
        newly_locked = throttle.failed(name, ip)
        for kind in newly_locked:
            app.metrics.web_lockouts.labels(kind).inc()
        app.metrics.web_logins.labels("failed").inc()
        reason = "disabled" if ok and user and user.disabled else ("unknown user" if user is None
                                                                   else "wrong password")
        await app.catalog.call(audit.append, f"anonymous@{ip}", "login.failed", name,
                               {"ip": ip, "reason": reason, "locked": newly_locked})
        return await refuse("login.failed", 401)
    throttle.succeeded(name)

    def record(conn):  # type: ignore[no-untyped-def]
        users_db.record_login(conn, user.id)
        audit.append(conn, user.name, "login", user.name, {"ip": ip, "role": user.role})

    await app.catalog.call(record)
    app.metrics.web_logins.labels("ok").inc()
    session = await new_session(request)
    session["uid"] = user.id
    session["epoch"] = user.session_epoch
    session["seen"] = time.time()
    raise web.HTTPSeeOther(target or landing(user.role))


async def logout(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]

    def record(conn):  # type: ignore[no-untyped-def]
        users_db.end_sessions(conn, user.id)
        audit.append(conn, user.name, "logout", user.name, {"ip": client_ip(request)})

    await app.catalog.call(record)
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPSeeOther("/login")


async def password_page(request: web.Request) -> web.Response:
    return await render(request, "password.html", {"error": None, "done": False})


async def change_password(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    t = i18n.translator(i18n.language(request))
    current = str(form.get("current", ""))
    new, again = str(form.get("new", "")), str(form.get("again", ""))
    found = await app.catalog.call(users_db.credentials, user.name)
    loop = asyncio.get_running_loop()
    ok = await loop.run_in_executor(None, users_db.verify_password, found[1] if found else None, current)
    error = None
    if not ok:
        await app.catalog.call(audit.append, user.name, "user.password-change-failed", user.name,
                               {"ip": client_ip(request)})
        error = t("password.wrong_current")
    elif new != again:
        error = t("password.mismatch")
    elif new == current:
        error = t("password.same")
    else:
        try:
            digest = await loop.run_in_executor(None, users_db.hash_password, new)
        except users_db.UserError:
            error = t("password.policy", n=users_db.MIN_PASSWORD)
    if error:
        return await render(request, "password.html", {"error": error, "done": False}, status=400)
    await app.catalog.call(users_db.set_password, user.id, digest, actor=user.name)
    fresh = await app.catalog.call(users_db.get_user, user.id)
    session = await new_session(request)      # the old cookie is dead (epoch moved); this one lives
    session["uid"] = user.id
    session["epoch"] = fresh.session_epoch
    session["seen"] = time.time()
    return await render(request, "password.html", {"error": None, "done": True})


async def set_language(request: web.Request) -> web.Response:
    """``/lang/en?next=/recordings``: remember the language in a cookie, go back."""
    lang = request.match_info["lang"]
    if lang not in i18n.LANGUAGES:
        raise web.HTTPNotFound()
    response = web.HTTPSeeOther(safe_next(request.query.get("next"), "/"))
    response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="Strict",
                        secure=request.secure, path="/")
    raise response

