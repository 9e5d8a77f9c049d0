"""Small helpers the workflow pages share: decisions and local times from forms."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from appliance.catalog import approvals
from appliance.catalog.approvals import ApprovalError, SelfApproval
from appliance.errors import ApplianceError
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import int_param

Detail = Callable[[web.Request, str, int], Awaitable[web.StreamResponse]]


def decision_of(form) -> bool:  # type: ignore[no-untyped-def]
    """True to approve, False to refuse; anything else is refused as a bad form."""
    value = form.get("decision")
    if value not in ("approve", "refuse"):
        raise ApprovalError("choose approve or refuse")
    return value == "approve"


def local_datetime(text: str, tz: str, what: str = "time") -> datetime:
    """``2026-11-27T08:15`` (a datetime-local field) as a moment in the station's time zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApprovalError(f"{what}: {text!r} is not a date and time like 2026-11-27 08:15") from None
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))


async def decide_request(request: web.Request, decide: Callable[..., object], key: str,
                         detail: Detail, url: str, **fields: str) -> web.Response:
    """Approve or refuse one request (exception, release, judicial access, purge list).

    ``decide(conn, id, actor=, approve=, reason=, **fields)`` is the register's own catalog
    function; ``fields`` names extra form fields it takes. A requester deciding their own
    request is refused and the attempt audited; any other refusal is shown on the page.
    """
    app = request.app[APPLIANCE]
    user = request[USER]
    rid = int_param(request.match_info[key])
    if rid is None:
        raise web.HTTPNotFound()
    form = await request.post()
    extra = {name: str(form.get(name, "")) for name in fields}
    try:
        await app.catalog.call(decide, rid, actor=user.name, approve=decision_of(form),
                               reason=str(form.get("reason", "")), **extra)
    except SelfApproval as exc:
        await app.catalog.call(approvals.record_refusal, user.name, exc)
        return await detail(request, str(exc), 403)
    except ApplianceError as exc:
        return await detail(request, str(exc), 400)
    raise web.HTTPSeeOther(url.format(rid))
