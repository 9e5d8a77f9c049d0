"""Judicial access (article 17): request → the bureau head decides → the custodian registers
each viewing → the access register (printable, CSV, PDF)."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from appliance.catalog import approvals, audit
from appliance.catalog import confidentiality as conf
from appliance.catalog import judicial as judicial_db
from appliance.errors import ApplianceError
from appliance.timeutil import iso
from appliance.web import i18n, tables
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import int_param, render
from appliance.web.views.common import decide_request, local_datetime
from appliance.web.views.recordings import cleared_for, visible_cases

NEW_FIELDS = ("authority_kind", "authority", "letter_ref", "purpose")
ACCESS_FIELDS = ("viewer", "viewer_unit", "viewer_id", "reason", "started_at", "ended_at", "notes")


def _ids(values: list) -> list[int]:
    return [n for n in (int_param(str(v)) for v in values) if n is not None][:5000]


async def list_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    rows = await app.catalog.call(judicial_db.listing)
    return await render(request, "judicial.html", {"rows": rows})


async def new_page(request: web.Request, error: str | None = None, form: dict | None = None,
                   status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    source = form or {}
    rids = _ids(source.get("rids") or request.query.getall("rid", []))
    case_id = int_param(str(source.get("case") or request.query.get("case", "")))

    def work(conn):  # type: ignore[no-untyped-def]
        cleared = cleared_for(conn, user)
        shown = sorted(set(rids) - set(conf.withheld(conn, rids, cleared)))
        rows = []
        if shown:
            q = ",".join("?" * len(shown))
            rows = [dict(r) for r in conn.execute(
                f"SELECT r.id, r.rel_path, r.camera_mtime, r.size, r.device_serial, o.name AS officer_name"
                f" FROM recordings r LEFT JOIN officers o ON o.id = r.officer_id WHERE r.id IN ({q})"
                f" AND r.purged_at IS NULL ORDER BY r.camera_mtime", shown)]
        return rows, visible_cases(conn, cleared, limit=300)

    rows, cases = await app.catalog.call(work)
    return await render(request, "judicial_new.html", {
        "rows": rows, "cases": cases, "case_id": case_id, "kinds": judicial_db.AUTHORITY_KINDS, "error": error,
        "form": {k: source.get(k, "") for k in NEW_FIELDS},
    }, status=status)


async def create(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    rids = _ids(form.getall("rid", []))
    case_id = int_param(str(form.get("case", "")))
    fields = {k: str(form.get(k, "")).strip() for k in NEW_FIELDS}

    def work(conn):  # type: ignore[no-untyped-def]
        return judicial_db.create(conn, rids, authority_kind=fields["authority_kind"], authority=fields["authority"],
                                  purpose=fields["purpose"], actor=user.name, cleared=cleared_for(conn, user),
                                  letter_ref=fields["letter_ref"], case_id=case_id)

    try:
        jid = await app.catalog.call(work)
    except ApplianceError as exc:
        return await new_page(request, str(exc), {**fields, "rids": rids, "case": case_id or ""}, 400)
    raise web.HTTPSeeOther(f"/judicial/{jid}")


async def detail(request: web.Request, error: str | None = None, status: int = 200,
                 form: dict | None = None) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    jid = int_param(request.match_info["jid"])

    def work(conn):  # type: ignore[no-untyped-def]
        row = judicial_db.get(conn, jid) if jid is not None else None
        if row is None:
            return None
        recs = judicial_db.recordings(conn, jid)
        return row, recs, judicial_db.accesses(conn, jid), conf.withheld(conn, [r["id"] for r in recs],
                                                                         cleared_for(conn, user))

    found = await app.catalog.call(work)
    if found is None:
        raise web.HTTPNotFound()
    row, recs, accesses, hidden = found
    now = datetime.now(ZoneInfo(app.config.station.timezone)).strftime("%Y-%m-%dT%H:%M")
    return await render(request, "judicial_request.html", {
        "j": row, "recs": recs, "accesses": accesses, "hidden": hidden, "error": error, "now": now,
        "mine": approvals.same_person(row["requested_by"], user.name),
        "form": form or dict.fromkeys(ACCESS_FIELDS, ""),
    }, status=status)


async def decide(request: web.Request) -> web.Response:
    return await decide_request(request, judicial_db.decide, "jid", detail, "/judicial/{}")


async def register_access(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    jid = int_param(request.match_info["jid"])
    if jid is None:
        raise web.HTTPNotFound()
    form = await request.post()
    fields = {k: str(form.get(k, "")).strip() for k in ACCESS_FIELDS}
    tz = app.config.station.timezone
    try:
        started = local_datetime(fields["started_at"], tz, "viewed from")
        ended = local_datetime(fields["ended_at"], tz, "until") if fields["ended_at"] else None
        await app.catalog.call(judicial_db.register_access, jid, viewer=fields["viewer"],
                               viewer_unit=fields["viewer_unit"], reason=fields["reason"], started_at=started,
                               ended_at=ended, actor=user.name, viewer_id=fields["viewer_id"], notes=fields["notes"])
    except ApplianceError as exc:
        return await detail(request, str(exc), 400, fields)
    raise web.HTTPSeeOther(f"/judicial/{jid}")


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat((text or "")[:10]) if text else None
    except ValueError:
        return None


def register_document(t: i18n.Translator, rows: list[dict], station: str, period: str, tz: str,
                      head: str) -> tables.Document:
    zone = ZoneInfo(tz)
    lang = 0 if t.lang == "zh" else 1

    def when(value: str | None) -> str:
        return datetime.fromisoformat(value).astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else ""

    headers = [c[1 + lang] for c in judicial_db.REGISTER_COLUMNS]
    data = [[when(r[c]) if c.endswith("_at") else tables.cell(r[c]) for c, _zh, _en in judicial_db.REGISTER_COLUMNS]
            for r in rows]
    return tables.Document(t("jud.register_title"), f"{station} · {period}",
                           [tables.Section(t("jud.register_section", n=len(rows)), headers, data, t("jud.no_access"))],
                           [f"{t('report.chain_head')}: {head}"])


async def register_page(request: web.Request) -> web.StreamResponse:
    """The access register of article 17: printable (HTML), CSV and PDF."""
    app = request.app[APPLIANCE]
    user = request[USER]
    tz = app.config.station.timezone
    zone = ZoneInfo(tz)
    since, until = _day(request.query.get("from")), _day(request.query.get("to"))
    fmt = request.query.get("format", "")
    lo = iso(datetime.combine(since, time(0), zone)) if since else None
    hi = iso(datetime.combine(until + timedelta(days=1), time(0), zone)) if until else None

    def work(conn):  # type: ignore[no-untyped-def]
        rows = judicial_db.register(conn, since=lo, until=hi)
        audit.append(conn, user.name, "judicial.register", fmt or "html",
                     {"from": since.isoformat() if since else None, "to": until.isoformat() if until else None,
                      "rows": len(rows)})
        return rows, audit.head(conn)

    rows, head = await app.catalog.call(work)
    t = i18n.translator(i18n.language(request))
    period = (f"{since.isoformat() if since else '…'} – {until.isoformat() if until else '…'}"
              if since or until else t("common.all"))
    if fmt in ("csv", "pdf"):
        doc = register_document(t, rows, app.config.station.name, period, tz, head)
        if fmt == "csv":
            return tables.csv_response(doc, "judicial-access-register.csv")
        return tables.pdf_response(await asyncio.to_thread(tables.to_pdf, doc), "judicial-access-register.pdf")
    return await render(request, "judicial_register.html", {
        "rows": rows, "head": head, "columns": judicial_db.REGISTER_COLUMNS, "period": period,
        "form": {"from": since.isoformat() if since else "", "to": until.isoformat() if until else ""},
    })
