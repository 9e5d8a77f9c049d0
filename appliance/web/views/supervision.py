"""Supervision (articles 5, 6, 18, 19) and the approvals overview.

* ``/approvals``: what waits for a decision, in every register, and the registers' links;
* ``/continuity``: gaps, overlaps and clock jumps between clips, and their review;
* ``/reports``: the supervision report of a period, printable, as CSV and as PDF;
* ``/clearances``: which accounts the bureau head has cleared for which marks (art. 3).
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from appliance.catalog import audit, continuity
from appliance.catalog import confidentiality as conf
from appliance.catalog import exceptions as exceptions_db
from appliance.catalog import judicial as judicial_db
from appliance.catalog import releases as releases_db
from appliance.catalog import reports as reports_db
from appliance.catalog import retention as retention_db
from appliance.catalog import users as users_db
from appliance.errors import ApplianceError
from appliance.regulation import end_of_day, timezone as station_tz
from appliance.timeutil import utcnow
from appliance.web import i18n, tables
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import duration, filesize, int_param, render
from appliance.web.views.devices import docked_serials
from appliance.web.views.recordings import cleared_for


async def approvals_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]

    def work(conn):  # type: ignore[no-untyped-def]
        return {
            "exceptions": exceptions_db.listing(conn, state="pending", limit=100),
            "releases": releases_db.listing(conn, state="pending", limit=100),
            "judicial": [r for r in judicial_db.listing(conn, state="pending", limit=100)],
            "purges": [p for p in retention_db.listing(conn, limit=20) if p["state"] == "pending"],
            "approved_releases": releases_db.listing(conn, state="approved", limit=100),
            "approved_purges": [p for p in retention_db.listing(conn, limit=20)
                                if p["state"] in ("approved", "executing")],
        }

    return await render(request, "approvals.html", await app.catalog.call(work))


# -- continuity ----------------------------------------------------------------------------

async def continuity_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    state = request.query.get("state") or None
    state = state if state in continuity.STATES else None
    device = request.query.get("device", "").strip()[:64] or None

    def work(conn):  # type: ignore[no-untyped-def]
        rows = continuity.flags(conn, state=state, device_serial=device)
        ids = {r["prev_id"] for r in rows} | {r["next_id"] for r in rows}
        counts = dict(conn.execute("SELECT state, COUNT(*) FROM continuity_flags GROUP BY state").fetchall())
        return rows, conf.withheld(conn, ids, cleared_for(conn, user)), counts

    rows, hidden, counts = await app.catalog.call(work)
    return await render(request, "continuity.html", {
        "rows": rows, "hidden": hidden, "state": state or "", "device": device or "", "counts": counts,
        "error": error, "tolerance": continuity.TOLERANCE_S, "max_gap": continuity.MAX_GAP_S,
    }, status=status)


async def review_flag(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    fid = int_param(request.match_info["fid"])
    if fid is None:
        raise web.HTTPNotFound()
    form = await request.post()
    try:
        await app.catalog.call(continuity.review, fid, str(form.get("explanation", "")), actor=user.name)
    except ApplianceError as exc:
        return await continuity_page(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/continuity#flag-{fid}")


# -- supervision reports -------------------------------------------------------------------

def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat((text or "")[:10]) if text else None
    except ValueError:
        return None


def _local(value: str | None, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone(zone).strftime(fmt)
    except ValueError:
        return value


def report_document(t: i18n.Translator, r: reports_db.Report, station: str, tz: str, hidden: dict,
                    head: str) -> tables.Document:
    """The report as sections of rows: the same for the CSV and the PDF."""
    zone = ZoneInfo(tz)
    T = r.totals
    summary = [[t(f"report.total.{k}"), tables.cell(T[k])] for k in (
        "recordings", "hours", "sessions", "quarantined", "failed_sessions", "untagged", "flags", "flags_open",
        "flagged_dockings", "overdue_now", "not_returned_now", "exceptions", "releases", "accesses", "verify_runs",
        "verify_failed", "purged")]
    summary.insert(2, [t("report.total.bytes"), filesize(T["bytes"])])

    def late(items) -> list[list[str]]:  # type: ignore[no-untyped-def]
        return [[d.serial, d.officer_name or "", d.custodian, _local(d.seen_at, zone), f"{d.hours:g}"] for d in items]

    def name(rid: int, path: str) -> str:
        return f"#{rid} {t('mark.withheld')}" if rid in hidden else path

    sections = [
        tables.Section(t("report.summary"), [t("report.item"), t("report.value")], summary),
        tables.Section(t("report.per_officer"), [t("rec.officer"), t("report.recordings"), t("report.hours"),
                                                  t("report.untagged"), t("report.flags"), t("report.flags_open")],
                       [[o["officer"] or t("rec.unassigned"), o["recordings"], o["hours"], o["untagged"], o["flags"],
                         o["flags_open"]] for o in r.officers], t("report.none")),
        tables.Section(t("report.per_device"), [t("dev.serial"), t("dev.model"), t("dev.asset_number"),
                                                 t("dev.status"), t("dev.officer"), t("dev.custodian"),
                                                 t("report.recordings"), t("report.hours"), t("report.dockings"),
                                                 t("report.days_overdue"), t("report.days_not_returned"),
                                                 t("report.flagged_dockings"), t("report.flags")],
                       [[d["serial"], f"{d['brand']} {d['model']}".strip(), d["asset_number"],
                         t(f"dev.status.{d['status']}"), d["officer"], d["custodian"], d["recordings"], d["hours"],
                         d["dockings"], d["days_overdue"], d["days_not_returned"], d["flagged_dockings"], d["flags"]]
                        for d in r.devices], t("report.none")),
        tables.Section(t("dl.overdue") + f" ({len(r.overdue_now)})", [t("dev.serial"), t("dev.officer"),
                       t("dev.custodian"), t("dl.seen"), t("dl.hours")], late(r.overdue_now), t("dl.none")),
        tables.Section(t("dl.not_returned") + f" ({len(r.not_returned_now)})", [t("dev.serial"), t("dev.officer"),
                       t("dev.custodian"), t("dl.seen"), t("dl.hours")], late(r.not_returned_now), t("dl.none")),
        tables.Section(t("report.flags_section"), [t("cont.kind"), t("cont.seconds"), t("dev.serial"),
                                                    t("cont.previous"), t("cont.next"), t("cont.state"),
                                                    t("cont.explanation"), t("cont.reviewed_by")],
                       [[t(f"cont.kind.{f['kind']}"), duration(f["seconds"]), f["device_serial"],
                         name(f["prev_id"], f["prev_path"]), name(f["next_id"], f["next_path"]),
                         t(f"cont.state.{f['state']}"), f["explanation"] or "", f["reviewed_by"] or ""]
                        for f in r.flags], t("report.none")),
        tables.Section(t("report.exceptions"), [t("exc.occurred_at"), t("exc.place"), t("exc.officers"),
                                                 t("exc.reason"), t("appr.state"), t("appr.decided_by")],
                       [[_local(e["occurred_at"], zone), e["place"], e["officers"], e["reason"],
                         t(f"appr.state.{e['state']}"), e["decided_by"] or ""] for e in r.exceptions], t("report.none")),
        tables.Section(t("report.releases"), [t("rel.number"), t("rel.purpose"), t("rel.recipient"),
                                               t("report.recordings"), t("appr.state"), t("appr.decided_by"),
                                               t("rel.exported_at")],
                       [[x["number"], t(f"rel.purpose.{x['purpose']}"), x["recipient"], x["recordings"],
                         t(f"appr.state.{x['state']}"), x["decided_by"] or "", _local(x["exported_at"], zone)]
                        for x in r.releases], t("report.none")),
        tables.Section(t("report.accesses"), [t("jud.viewed_from"), t("jud.viewer"), t("jud.viewer_unit"),
                                               t("jud.reason"), t("jud.number"), t("appr.decided_by")],
                       [[_local(a["started_at"], zone), a["viewer"], a["viewer_unit"], a["reason"], a["number"],
                         a["decided_by"] or ""] for a in r.accesses], t("report.none")),
        tables.Section(t("report.verify"), [t("report.verify_at"), t("report.files"), t("report.problems"),
                                             t("report.pool")],
                       [[_local(v["finished_at"], zone), v["files_checked"], v["problems"], v["pool_health"]]
                        for v in r.verify_runs], t("report.no_verify")),
        tables.Section(t("report.purges"), [t("ret.number"), t("appr.state"), t("ret.purged"), t("appr.decided_by")],
                       [[p["number"], t(f"appr.state.{p['state']}"), p["purged"], p["decided_by"] or ""]
                        for p in r.purges], t("report.none")),
    ]
    subtitle = t("report.subtitle", station=station, since=r.since.isoformat(), until=r.until.isoformat(),
                 at=_local(r.generated_at, zone))
    return tables.Document(t("report.title"), subtitle, sections, [f"{t('report.chain_head')}: {head}"])


async def report_page(request: web.Request) -> web.StreamResponse:
    app = request.app[APPLIANCE]
    user = request[USER]
    tz, eod = station_tz(app.config), end_of_day(app.config)
    today = datetime.now(ZoneInfo(tz)).date()
    until = _day(request.query.get("to")) or today
    since = _day(request.query.get("from")) or (until - timedelta(days=30))
    fmt = request.query.get("format", "")
    t = i18n.translator(i18n.language(request))
    docked = docked_serials(app)
    error = None
    if until < since or (until - since).days >= reports_db.MAX_DAYS:
        error = t("report.bad_period", days=reports_db.MAX_DAYS)
        since, until = until - timedelta(days=30), until

    def work(conn):  # type: ignore[no-untyped-def]
        report = reports_db.supervision(conn, since, until, tz=tz, end_of_day=eod, now=utcnow(), docked=docked)
        ids = {f["prev_id"] for f in report.flags} | {f["next_id"] for f in report.flags}
        hidden = conf.withheld(conn, ids, cleared_for(conn, user))
        audit.append(conn, user.name, "report.supervision", fmt or "html",
                     {"from": since.isoformat(), "to": until.isoformat()})
        return report, hidden, audit.head(conn)

    report, hidden, head = await app.catalog.call(work)
    doc = report_document(t, report, app.config.station.name, tz, hidden, head)
    if fmt in ("csv", "pdf"):
        name = f"supervision-{since.isoformat()}-{until.isoformat()}"
        if fmt == "csv":
            return tables.csv_response(doc, f"{name}.csv")
        return tables.pdf_response(await asyncio.to_thread(tables.to_pdf, doc), f"{name}.pdf")
    return await render(request, "report.html", {
        "r": report, "doc": doc, "head": head, "error": error,
        "form": {"from": since.isoformat(), "to": until.isoformat()},
    }, status=400 if error else 200)


# -- clearances ----------------------------------------------------------------------------

async def clearances_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]

    def work(conn):  # type: ignore[no-untyped-def]
        return users_db.list_users(conn), conf.clearances(conn)

    accounts, granted = await app.catalog.call(work)
    return await render(request, "clearances.html", {
        "accounts": accounts, "granted": {uid: {g["mark"] for g in rows} for uid, rows in granted.items()},
        "details": granted, "marks": conf.MARKS, "by_role": conf.ROLE_CLEARANCE, "error": error,
    }, status=status)


async def change_clearance(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    uid = int_param(str(form.get("user", "")))
    mark = str(form.get("mark", ""))
    try:
        if uid is None:
            raise conf.MarkError("choose an account")
        fn = conf.revoke if form.get("action") == "revoke" else conf.grant
        await app.catalog.call(fn, uid, mark, actor=user.name)
    except ApplianceError as exc:
        return await clearances_page(request, str(exc), 400)
    raise web.HTTPSeeOther("/clearances")
