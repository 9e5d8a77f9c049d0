"""The audit log, health, accounts and settings."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web

from appliance import __version__
from appliance.catalog import audit
from appliance.catalog import users as users_db
from appliance.errors import ApplianceError
from appliance.vault.verify import last_run
from appliance.web import i18n
from appliance.web.keys import APPLIANCE, BURNS, STATE, THROTTLE, USER
from appliance.web.render import int_param, render
from appliance.web.security import SETTINGS_DEFAULTS, SETTINGS_LIMITS
from appliance.web.views.recordings import _bound, _day

CHAIN_CACHE_S = 60
AUDIT_PAGE = 100


async def chain_state(request: web.Request, fresh: bool = False) -> audit.ChainState:
    """The audit chain's state (``appliance audit verify``), cached for a minute: walking a
    long log holds the catalog's thread."""
    state = request.app[STATE]
    app = request.app[APPLIANCE]
    now = time.monotonic()
    if fresh or state.chain is None or now - state.chain[0] > CHAIN_CACHE_S:
        result = await app.catalog.call(audit.verify_chain)
        app.metrics.audit_chain_ok.set(1 if result.ok else 0)
        state.chain = (now, result)
    return state.chain[1]  # type: ignore[return-value]


async def audit_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    q = request.query
    zone = ZoneInfo(app.config.station.timezone)
    since, until = _day(q.get("from")), _day(q.get("to"))
    form = {"actor": q.get("actor", "").strip()[:64], "action": q.get("action", "").strip()[:64],
            "subject": q.get("subject", "").strip()[:128],
            "from": since.isoformat() if since else "", "to": until.isoformat() if until else ""}
    before = int_param(q.get("before"))
    where, args = [], []
    if form["actor"]:
        where.append("actor = ?")
        args.append(form["actor"])
    if form["action"]:
        where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
        args += [form["action"], form["action"].replace("\\", "\\\\").replace("%", "\\%")
                 .replace("_", "\\_") + ".%"]
    if form["subject"]:
        where.append("subject = ?")
        args.append(form["subject"])
    if since:
        where.append("at >= ?")
        args.append(_bound(since, zone))
    if until:
        where.append("at < ?")
        args.append(_bound(until + timedelta(days=1), zone))
    if before:
        where.append("seq < ?")
        args.append(before)
    sql = ("SELECT seq, at, actor, action, subject, details, hash FROM audit_log"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?")

    def work(conn):  # type: ignore[no-untyped-def]
        rows = [dict(r) for r in conn.execute(sql, (*args, AUDIT_PAGE + 1))]
        audit.append(conn, user.name, "audit.view", "", {k: v for k, v in form.items() if v})
        return rows

    rows = await app.catalog.call(work)
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    for r in rows:
        try:
            r["details"] = json.loads(r["details"])
        except ValueError:
            pass
    chain = await chain_state(request, fresh=q.get("check") == "1")
    params = {k: v for k, v in form.items() if v}
    next_url = "/audit?" + urlencode({**params, "before": rows[-1]["seq"]}) if more else None
    return await render(request, "audit.html", {"rows": rows, "form": form, "chain": chain,
                                                "next_url": next_url})


async def health_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    try:
        await asyncio.wait_for(app.refresh_space(), 10)
    except (asyncio.TimeoutError, OSError, ApplianceError):
        pass
    space = app.last_space

    def work(conn):  # type: ignore[no-untyped-def]
        counts = {
            "recordings": conn.execute("SELECT COUNT(*) FROM recordings").fetchone()[0],
            "sessions": conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0],
            "devices": conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0],
            "cases": conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0],
            "discs": conn.execute("SELECT COUNT(*) FROM discs").fetchone()[0],
        }
        return counts, last_run(conn)

    counts, verify = await app.catalog.call(work)
    chain = await chain_state(request)
    return await render(request, "health.html", {
        "space": space, "pool": app.vault_health, "backend": app.vault.backend, "verify": verify,
        "chain": chain, "counts": counts, "busy": app.busy_slots(), "version": __version__,
        "used_pct": round(100 * space.used_bytes / space.total_bytes) if space and space.total_bytes else 0,
        "replication": _replication(app),
    })


def _replication(app) -> dict:  # type: ignore[no-untyped-def]
    from appliance.vault.replication import summary

    replicator = getattr(app, "replicator", None)
    if replicator is None:
        return summary(None)
    replicator.reload()
    return summary(replicator.status)


# -- accounts ------------------------------------------------------------------------------

async def users_page(request: web.Request, error: str | None = None, status: int = 200,
                     form: dict | None = None) -> web.Response:
    app = request.app[APPLIANCE]
    users = await app.catalog.call(users_db.list_users)
    form = form or dict.fromkeys(("name", "display_name", "role", "officer"), "")
    return await render(request, "users.html", {"users": users, "roles": users_db.ROLES, "error": error,
                                                "form": form, "done": request.query.get("done")},
                        status=status)


async def add_user(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    fields = {k: str(form.get(k, "")).strip() for k in ("name", "display_name", "role", "officer")}
    password = str(form.get("password", ""))
    loop = asyncio.get_running_loop()
    try:
        users_db.check_name(fields["name"])
        users_db.check_role(fields["role"])
        if fields["role"] == "admin" and user.role != "admin":
            raise users_db.UserError("only an admin may create another admin")
        digest = await loop.run_in_executor(None, users_db.hash_password, password)
        await app.catalog.call(users_db.add_user, fields["name"], fields["role"], digest,
                               display_name=fields["display_name"], officer=fields["officer"] or None,
                               actor=user.name)
    except ApplianceError as exc:
        return await users_page(request, str(exc), 400, fields)
    raise web.HTTPSeeOther("/admin/users?done=added")


async def change_user(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    uid = int_param(request.match_info["uid"])
    form = await request.post()
    action = str(form.get("action", ""))
    target = await app.catalog.call(users_db.get_user, uid) if uid else None
    if target is None:
        raise web.HTTPNotFound()
    loop = asyncio.get_running_loop()
    try:
        if target.role == "admin" and user.role != "admin":
            raise users_db.UserError("only an admin may change an admin account")
        if action == "role":
            role = users_db.check_role(str(form.get("role", "")))
            if role == "admin" and user.role != "admin":
                raise users_db.UserError("only an admin may make an admin")
            if target.id == user.id:
                raise users_db.UserError("you cannot change your own role")
            await app.catalog.call(users_db.set_role, target.id, role, actor=user.name,
                                   officer=str(form.get("officer", "")).strip() or None)
        elif action in ("disable", "enable"):
            if target.id == user.id:
                raise users_db.UserError("you cannot disable yourself")
            await app.catalog.call(users_db.set_disabled, target.id, action == "disable", actor=user.name)
        elif action == "reset":
            digest = await loop.run_in_executor(None, users_db.hash_password, str(form.get("password", "")))
            await app.catalog.call(users_db.set_password, target.id, digest, actor=user.name, reset=True)
        else:
            raise web.HTTPBadRequest(text="unknown action")
    except ApplianceError as exc:
        return await users_page(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/admin/users?done={action}")


# -- settings ------------------------------------------------------------------------------

async def settings_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    state = request.app[STATE]
    return await render(request, "settings.html", {"settings": state.settings, "limits": SETTINGS_LIMITS,
                                                   "error": error, "done": request.query.get("done")},
                        status=status)


async def save_settings(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    state = request.app[STATE]
    user = request[USER]
    form = await request.post()
    t = i18n.translator(i18n.language(request))
    new: dict[str, int] = {}
    for key, (low, high) in SETTINGS_LIMITS.items():
        value = int_param(str(form.get(key, "")))
        if value is None or not low <= value <= high:
            return await settings_page(request, t("settings.range", name=t(f"settings.{key}"), low=low,
                                                  high=high), 400)
        new[key] = value
    changed = {k: v for k, v in new.items() if state.settings.get(k) != v}
    if changed:
        await app.catalog.call(store_settings, changed, user.name)
        state.settings.update(changed)
        apply_settings(request.app)
    raise web.HTTPSeeOther("/admin/settings?done=1")


def store_settings(conn, changed: dict[str, int], actor: str) -> None:  # type: ignore[no-untyped-def]
    from appliance.timeutil import iso, utcnow

    now = iso(utcnow())
    for key, value in changed.items():
        old = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        conn.execute("INSERT INTO settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, ?)"
                     " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                     " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                     (key, str(value), now, actor))
        audit.append(conn, actor, "setting.change", key,
                     {"value": value, "previous": int(old[0]) if old else SETTINGS_DEFAULTS[key]})


def load_settings(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    out = dict(SETTINGS_DEFAULTS)
    for key, value in conn.execute("SELECT key, value FROM settings"):
        if key in out and str(value).isdigit():
            out[key] = int(value)
    return out


def apply_settings(app: web.Application) -> None:
    settings = app[STATE].settings
    throttle = app[THROTTLE]
    throttle.max_failures = settings["login_max_failures"]
    throttle.lockout_s = settings["lockout_minutes"] * 60
    app[BURNS].pseudo_drives = settings["pseudo_drives"]
