"""The exception register (article 8): entered by staff, decided by a leader, listed."""

from __future__ import annotations

from aiohttp import web

from appliance.catalog import exceptions as exceptions_db
from appliance.errors import ApplianceError
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import int_param, render
from appliance.web.views.common import decide_request, local_datetime
from appliance.web.views.recordings import cleared_for, visible_cases

FIELDS = ("occurred_at", "place", "officers", "case", "reason_kind", "reason", "onsite_approver")


async def list_page(request: web.Request, error: str | None = None, form: dict | None = None,
                    status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    state = request.query.get("state") or None

    def work(conn):  # type: ignore[no-untyped-def]
        return exceptions_db.listing(conn, state=state), visible_cases(conn, cleared_for(conn, user), limit=300)

    rows, cases = await app.catalog.call(work)
    return await render(request, "exceptions.html", {
        "rows": rows, "cases": cases, "kinds": exceptions_db.REASON_KINDS, "error": error, "state": state or "",
        "form": form or dict.fromkeys(FIELDS, ""),
    }, status=status)


async def create(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    fields = {k: str(form.get(k, "")).strip() for k in FIELDS}
    try:
        occurred = local_datetime(fields["occurred_at"], app.config.station.timezone, "time of the action")
        eid = await app.catalog.call(
            exceptions_db.create, occurred_at=occurred, place=fields["place"], officers=fields["officers"],
            reason_kind=fields["reason_kind"], reason=fields["reason"], actor=user.name,
            case_id=int_param(fields["case"]), onsite_approver=fields["onsite_approver"])
    except ApplianceError as exc:
        return await list_page(request, str(exc), fields, 400)
    raise web.HTTPSeeOther(f"/exceptions/{eid}")


async def detail(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    eid = int_param(request.match_info["eid"])
    row = await app.catalog.call(exceptions_db.get, eid) if eid is not None else None
    if row is None:
        raise web.HTTPNotFound()
    return await render(request, "exception.html", {"e": row, "capacities": exceptions_db.CAPACITIES,
                                                    "error": error}, status=status)


async def decide(request: web.Request) -> web.Response:
    return await decide_request(request, exceptions_db.decide, "eid", detail, "/exceptions/{}", capacity="capacity")
