"""The device registry (articles 4, 9, 11, 12, 20, 21) and its deadlines (articles 13, 15.1).

``/devices`` lists every camera with its status, holder, custodian and whether it is
overdue or not returned now; ``/devices/N`` is one camera's file: its fixed-asset facts,
assignment history, status history, maintenance log and dockings. ``/deadlines`` is the
daily list (printable, CSV, PDF). At each end of the working day the list of that day is
kept in the catalog with the slots as they are then (:func:`keep_daily_lists`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from aiohttp import web

from appliance.catalog import audit, deadlines, registry
from appliance.catalog import search as search_db
from appliance.errors import ApplianceError
from appliance.regulation import end_of_day, timezone as station_tz
from appliance.timeutil import utcnow
from appliance.web import i18n, tables
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import int_param, render

log = logging.getLogger(__name__)


def docked_serials(app) -> frozenset[str]:  # type: ignore[no-untyped-def]
    """Serials of the cameras in a slot right now (neither overdue nor missing)."""
    return frozenset(t.serial for t in app.board.all() if t.state != "empty" and t.serial)


def _t(request: web.Request) -> i18n.Translator:
    return i18n.translator(i18n.language(request))


async def list_page(request: web.Request, error: str | None = None, form: dict | None = None,
                    status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    now = utcnow()
    docked = docked_serials(app)
    tz, eod = station_tz(app.config), end_of_day(app.config)

    def work(conn):  # type: ignore[no-untyped-def]
        return (registry.list_devices(conn), {d.serial for d in deadlines.overdue_devices(conn, now, docked=docked)},
                {d.serial for d in deadlines.not_returned_devices(conn, now, eod, tz=tz, docked=docked)})

    devices, overdue, missing = await app.catalog.call(work)
    return await render(request, "devices.html", {
        "devices": devices, "overdue": overdue, "missing": missing, "docked": docked,
        "statuses": registry.DEVICE_STATUSES, "error": error, "done": request.query.get("done"),
        "form": form or dict.fromkeys(("serial", "brand", "model", "asset_number", "purchase_date", "custodian",
                                       "officer", "notes"), ""),
    }, status=status)


async def add(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    fields = {k: str(form.get(k, "")).strip() for k in ("serial", "brand", "model", "asset_number",
                                                         "purchase_date", "custodian", "officer", "notes")}

    def work(conn):  # type: ignore[no-untyped-def]
        if registry.get_device(conn, fields["serial"]) is not None:
            raise registry.RegistryError(f"{fields['serial']}: registered already; change it on its page")
        return registry.add_device(conn, fields["serial"], officer=fields["officer"] or None, model=fields["model"],
                                   brand=fields["brand"], actor=user.name, asset_number=fields["asset_number"],
                                   purchase_date=fields["purchase_date"] or None, custodian=fields["custodian"],
                                   notes=fields["notes"])

    try:
        device = await app.catalog.call(work)
    except ApplianceError as exc:
        return await list_page(request, str(exc), fields, 400)
    raise web.HTTPSeeOther(f"/devices/{device.id}")


async def device_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    did = int_param(request.match_info["did"])
    now = utcnow()
    docked = docked_serials(app)
    tz, eod = station_tz(app.config), end_of_day(app.config)

    def work(conn):  # type: ignore[no-untyped-def]
        device = registry.get_device_by_id(conn, did) if did is not None else None
        if device is None:
            return None
        return (device, registry.assignments(conn, did), registry.device_log(conn, did),
                registry.dockings(conn, did), [name for _id, name in search_db.officers(conn)],
                device.serial in {d.serial for d in deadlines.overdue_devices(conn, now, docked=docked)},
                device.serial in {d.serial for d in deadlines.not_returned_devices(conn, now, eod, tz=tz,
                                                                                     docked=docked)})

    found = await app.catalog.call(work)
    if found is None:
        raise web.HTTPNotFound()
    device, assignments, log_rows, dockings, officers, overdue, missing = found
    return await render(request, "device.html", {
        "device": device, "assignments": assignments, "log": log_rows, "dockings": dockings, "officers": officers,
        "overdue": overdue, "missing": missing, "in_slot": device.serial in docked, "error": error,
        "statuses": registry.DEVICE_STATUSES, "kinds": registry.WORK_KINDS,
        "today": datetime.now(ZoneInfo(tz)).date().isoformat(),
        "done": request.query.get("done"),
    }, status=status)


async def _change(request: web.Request, fn, done: str) -> web.Response:  # type: ignore[no-untyped-def]
    app = request.app[APPLIANCE]
    did = int_param(request.match_info["did"])
    if did is None:
        raise web.HTTPNotFound()
    form = await request.post()
    user = request[USER]
    try:
        await app.catalog.call(lambda conn: fn(conn, did, form, user.name))
    except ApplianceError as exc:
        return await device_page(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/devices/{did}?done={done}")


async def details(request: web.Request) -> web.Response:
    def fn(conn, did, form, actor):  # type: ignore[no-untyped-def]
        registry.update_details(conn, did, actor=actor, **{k: str(form.get(k, "")).strip() for k in (
            "brand", "model", "asset_number", "purchase_date", "custodian", "notes")})
    return await _change(request, fn, "details")


async def assign(request: web.Request) -> web.Response:
    def fn(conn, did, form, actor):  # type: ignore[no-untyped-def]
        registry.assign(conn, did, str(form.get("officer", "")).strip() or None, actor=actor,
                        reason=str(form.get("reason", "")).strip())
    return await _change(request, fn, "assign")


async def status(request: web.Request) -> web.Response:
    def fn(conn, did, form, actor):  # type: ignore[no-untyped-def]
        registry.set_status(conn, did, str(form.get("status", "")), actor=actor, reason=str(form.get("reason", "")))
    return await _change(request, fn, "status")


async def log_work(request: web.Request) -> web.Response:
    def fn(conn, did, form, actor):  # type: ignore[no-untyped-def]
        registry.log_work(conn, did, str(form.get("kind", "")), day=str(form.get("day", "")).strip() or None,
                          text=str(form.get("text", "")), performed_by=str(form.get("performed_by", "")), actor=actor)
    return await _change(request, fn, "log")


# -- deadlines -----------------------------------------------------------------------------

def newest_ended_day(now: datetime, tz: str, eod) -> date:  # type: ignore[no-untyped-def]
    local = now.astimezone(ZoneInfo(tz))
    return local.date() if local.time() >= eod else local.date() - timedelta(days=1)


def _deadline_document(t: i18n.Translator, listed: deadlines.DailyList, station: str, tz: str) -> tables.Document:
    zone = ZoneInfo(tz)

    def rows(items: list[deadlines.LateDevice]) -> list[list[str]]:
        return [[d.serial, f"{d.brand} {d.model}".strip(), d.asset_number, d.officer_name or "", d.custodian,
                 datetime.fromisoformat(d.seen_at).astimezone(zone).strftime("%Y-%m-%d %H:%M"), f"{d.hours:g}"]
                for d in items]

    headers = [t("dev.serial"), t("dev.model"), t("dev.asset_number"), t("dev.officer"), t("dev.custodian"),
               t("dl.seen"), t("dl.hours")]
    subtitle = t("dl.subtitle", day=listed.day.isoformat(), at=listed.at.strftime("%H:%M"), station=station)
    return tables.Document(t("dl.title"), subtitle, [
        tables.Section(t("dl.overdue") + f" ({len(listed.overdue)})", headers, rows(listed.overdue), t("dl.none")),
        tables.Section(t("dl.not_returned") + f" ({len(listed.not_returned)})", headers, rows(listed.not_returned),
                       t("dl.none")),
    ], [t("dl.kept" if listed.stored else "dl.reconstructed")])


async def deadlines_page(request: web.Request) -> web.StreamResponse:
    app = request.app[APPLIANCE]
    user = request[USER]
    now = utcnow()
    tz, eod = station_tz(app.config), end_of_day(app.config)
    docked = docked_serials(app)
    last_day = newest_ended_day(now, tz, eod)
    try:
        day = date.fromisoformat(request.query.get("day", "")[:10]) if request.query.get("day") else last_day
    except ValueError:
        day = last_day
    day = min(day, last_day)
    fmt = request.query.get("format", "")

    def work(conn):  # type: ignore[no-untyped-def]
        listed = deadlines.daily_list(conn, day, end_of_day=eod, tz=tz)
        if fmt in ("csv", "pdf"):
            audit.append(conn, user.name, "deadlines.export", day.isoformat(), {"format": fmt})
        return (listed, deadlines.overdue_devices(conn, now, docked=docked),
                deadlines.not_returned_devices(conn, now, eod, tz=tz, docked=docked))

    listed, overdue_now, missing_now = await app.catalog.call(work)
    t = _t(request)
    if fmt in ("csv", "pdf"):
        doc = _deadline_document(t, listed, app.config.station.name, tz)
        name = f"deadlines-{day.isoformat()}"
        if fmt == "csv":
            return tables.csv_response(doc, f"{name}.csv")
        return tables.pdf_response(await asyncio.to_thread(tables.to_pdf, doc), f"{name}.pdf")
    return await render(request, "deadlines.html", {
        "listed": listed, "overdue_now": overdue_now, "missing_now": missing_now, "day": day, "last_day": last_day,
        "end_of_day": eod.strftime("%H:%M"), "prev_day": day - timedelta(days=1),
        "next_day": day + timedelta(days=1) if day < last_day else None,
    })


async def keep_daily_lists(appliance) -> None:  # type: ignore[no-untyped-def]
    """At each end of the working day, keep that day's list (with the slots as they are then)."""
    tz, eod = station_tz(appliance.config), end_of_day(appliance.config)
    while True:
        now = datetime.now(timezone.utc)
        local = now.astimezone(ZoneInfo(tz))
        target = datetime.combine(local.date(), eod, ZoneInfo(tz))
        if target <= now:
            target += timedelta(days=1)
        # sleep in steps, so a clock set forward or back is noticed within the hour
        await asyncio.sleep(min(3600.0, max(1.0, (target - now).total_seconds())))
        if datetime.now(timezone.utc) < target:
            continue
        try:
            await appliance.catalog.call(deadlines.store_daily_list, target.astimezone(ZoneInfo(tz)).date(),
                                         end_of_day=eod, tz=tz, docked=docked_serials(appliance))
        except Exception:
            log.exception("deadlines: the daily list of %s could not be kept", target.date())
