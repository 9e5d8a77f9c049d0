"""Retention (article 7, six-month minimum): propose a purge list, a leader decides, carry it out."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.catalog import approvals
from appliance.catalog import confidentiality as conf
from appliance.catalog import retention as retention_db
from appliance.errors import ApplianceError
from appliance.regulation import retention_months
from appliance.timeutil import iso, utcnow
from appliance.vault import replication
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import int_param, render
from appliance.web.views.common import decide_request
from appliance.web.views.recordings import cleared_for

SHOWN = 1000


async def overview(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    months = retention_months(app.config)
    now = utcnow()

    def work(conn):  # type: ignore[no-untyped-def]
        found = retention_db.candidates(conn, now=now, months=months)
        return (found, retention_db.protected_counts(conn), retention_db.listing(conn),
                approvals.pending_counts(conn)["purge_lists"])

    found, protected, lists, _pending = await app.catalog.call(work)
    return await render(request, "retention.html", {
        "months": months, "cutoff": iso(retention_db.cutoff(now, months)), "count": len(found),
        "bytes": sum(r["size"] for r in found), "protected": protected, "lists": lists, "error": error,
        "open": any(p["state"] in ("pending", "approved", "executing") for p in lists),
    }, status=status)


async def propose(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    try:
        list_id = await app.catalog.call(retention_db.propose, now=utcnow(), months=retention_months(app.config),
                                         actor=user.name)
    except ApplianceError as exc:
        return await overview(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/retention/{list_id}")


async def detail(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    pid = int_param(request.match_info["pid"])

    def work(conn):  # type: ignore[no-untyped-def]
        plist = retention_db.get(conn, pid) if pid is not None else None
        if plist is None:
            return None
        rows = retention_db.items(conn, pid, limit=SHOWN)
        return plist, rows, conf.withheld(conn, [r["recording_id"] for r in rows], cleared_for(conn, user))

    found = await app.catalog.call(work)
    if found is None:
        raise web.HTTPNotFound()
    plist, rows, hidden = found
    return await render(request, "purge.html", {
        "p": plist, "rows": rows, "hidden": hidden, "error": error, "shown": SHOWN,
        "mine": approvals.same_person(plist["requested_by"], user.name), "result": request.query.get("done"),
    }, status=status)


async def decide(request: web.Request) -> web.Response:
    return await decide_request(request, retention_db.decide, "pid", detail, "/retention/{}")


async def execute(request: web.Request) -> web.Response:
    """Carry out an approved list (or finish one a crash interrupted)."""
    app = request.app[APPLIANCE]
    user = request[USER]
    pid = int_param(request.match_info["pid"])
    if pid is None:
        raise web.HTTPNotFound()
    try:
        await asyncio.to_thread(retention_db.carry_out, app.catalog, app.vault, pid, actor=user.name,
                                waits_for_hq=replication.waiting_for_hq(app.config))
    except ApplianceError as exc:
        return await detail(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/retention/{pid}?done=1")
