"""Recordings: search, the recording page, playing and downloading, tagging.

Playing streams the vault file itself with HTTP range requests (aiohttp's FileResponse),
never a copy. Every search, view, play and download is in the audit log; a play is
logged once per user and recording per five minutes, so seeking in the player (each seek
is a new range request) is one play, while every download is logged.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from aiohttp import web

from appliance.catalog import audit
from appliance.catalog import cases as cases_db
from appliance.catalog import confidentiality as conf
from appliance.catalog import search as search_db
from appliance.errors import ApplianceError, VaultError
from appliance.timeutil import iso
from appliance.web import i18n
from appliance.web.keys import APPLIANCE, STATE, USER
from appliance.web.render import int_param, render
from appliance.web.security import client_ip, safe_next

log = logging.getLogger(__name__)

PAGE_SIZE = 50
_MEDIA_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
                ".ts": "video/mp2t", ".avi": "video/x-msvideo", ".wav": "audio/wav", ".mp3": "audio/mpeg",
                ".aac": "audio/aac", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


def _bound(day: date, zone: ZoneInfo) -> str:
    return iso(datetime.combine(day, time(0), zone))


def _cursor(text: str | None) -> tuple[str, int] | None:
    if not text or "|" not in text or len(text) > 80:
        return None
    at, _, rid = text.rpartition("|")
    try:
        datetime.fromisoformat(at)
    except ValueError:
        return None
    n = int_param(rid)
    return (at, n) if n is not None else None


def cleared_for(conn, user) -> frozenset[str]:  # type: ignore[no-untyped-def]
    """The confidentiality marks (art. 3) this account is cleared for."""
    return conf.clearance(conn, user.id, user.role)


def visible_cases(conn, cleared: frozenset[str], **kwargs) -> list:  # type: ignore[no-untyped-def]
    """Cases whose marks ``cleared`` covers (the others are not listed at all)."""
    found = cases_db.list_cases(conn, **kwargs)
    marks = conf.case_marks(conn, [c.id for c in found])
    return [c for c in found if not marks[c.id] - cleared]


def parse_query(request: web.Request) -> tuple[search_db.Query, dict]:
    """The search form's fields → a catalog query (and the fields as given, for the form)."""
    app = request.app[APPLIANCE]
    user = request[USER]
    q = request.query
    zone = ZoneInfo(app.config.station.timezone)
    since, until = _day(q.get("from")), _day(q.get("to"))
    form = {
        "officer": q.get("officer", ""), "device": q.get("device", "").strip()[:64],
        "from": since.isoformat() if since else "", "to": until.isoformat() if until else "",
        "case": q.get("case", ""), "category": q.get("category", "").strip()[:32],
        "tag": q.get("tag", ""),
    }
    query = search_db.Query(
        officer_id=int_param(form["officer"]), device_serial=form["device"] or None,
        since=_bound(since, zone) if since else None,
        until=_bound(until + timedelta(days=1), zone) if until else None,
        case_id=int_param(form["case"]), category=form["category"] or None, tag_id=int_param(form["tag"]),
        only_officer_id=(user.officer_id if user.officer_id is not None else -1)
        if user.role == "officer" else None,
        cursor=_cursor(q.get("after")), limit=min(int_param(q.get("limit")) or PAGE_SIZE, 200))
    return query, form


async def search_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    query, form = parse_query(request)

    def work(conn):  # type: ignore[no-untyped-def]
        cleared = cleared_for(conn, user)
        page = search_db.search(conn, replace(query, cleared=cleared))
        ids = [r["id"] for r in page.rows]
        labels = cases_db.labels(conn, ids)
        filters = {k: v for k, v in form.items() if v}
        audit.append(conn, user.name, "recording.search", "", {
            "filters": filters, "rows": len(page.rows), "page": bool(query.cursor),
            "withheld_marks": sorted(set(conf.MARKS) - cleared)})
        choices = {
            "officers": search_db.officers(conn) if user.role != "officer" else [],
            "devices": search_db.device_serials(conn) if user.role != "officer" else [],
            "cases": visible_cases(conn, cleared, limit=300),
            "categories": cases_db.categories(conn),
            "tags": cases_db.tag_names(conn),
        }
        return page, labels, choices, conf.marks_of(conn, ids)

    page, labels, choices, marks = await app.catalog.call(work)
    next_url = None
    if page.next_cursor:
        params = {k: v for k, v in form.items() if v}
        params["after"] = f"{page.next_cursor[0]}|{page.next_cursor[1]}"
        next_url = "/recordings?" + urlencode(params)
    first_url = "/recordings?" + urlencode({k: v for k, v in form.items() if v})
    return await render(request, "recordings.html", {
        "rows": page.rows, "labels": labels, "marks": marks, "form": form, "choices": choices,
        "next_url": next_url, "mark_names": conf.MARKS,
        "first_url": first_url, "paged": query.cursor is not None,
        "open_cases": [c for c in choices["cases"] if c.status == "open"],
        "tagged": int_param(request.query.get("tagged")),
    })


async def _load(request: web.Request, work, what: str) -> object:  # type: ignore[no-untyped-def]
    """Run ``work(conn, rid, found, marks)`` for a recording this user may see; 404 otherwise:
    also for an officer asking for someone else's recording, and for a recording under a
    confidentiality mark (art. 3) the user is not cleared for (its existence is not
    confirmed). The recording page, playing and downloading all come through here: the one
    check of who may see a recording, every refusal audited."""
    app = request.app[APPLIANCE]
    user = request[USER]
    rid = int_param(request.match_info["rid"])
    if rid is None:
        raise web.HTTPNotFound()

    def guarded(conn):  # type: ignore[no-untyped-def]
        found = search_db.media_path(conn, rid)
        if found is None:
            return None
        if user.role == "officer" and (user.officer_id is None or found[2] != user.officer_id):
            audit.append(conn, user.name, "recording.refused", str(rid), {"ip": client_ip(request), "what": what})
            return None
        marks = conf.marks_of(conn, [rid])[rid]
        missing = marks - cleared_for(conn, user)
        if missing:
            audit.append(conn, user.name, "recording.refused-confidential", str(rid),
                         {"ip": client_ip(request), "what": what, "marks": sorted(missing)})
            return None
        return work(conn, rid, found, sorted(marks))

    result = await app.catalog.call(guarded)
    if result is None:
        raise web.HTTPNotFound()
    return result


async def recording_page(request: web.Request) -> web.Response:
    user = request[USER]

    def work(conn, rid, _found, marks):  # type: ignore[no-untyped-def]
        rec = search_db.recording(conn, rid)
        labels = cases_db.labels(conn, [rid])[rid]
        audit.append(conn, user.name, "recording.view", str(rid), {
            "file": rec["rel_path"], "session": rec["session_id"], **({"marks": marks} if marks else {})})
        cleared = cleared_for(conn, user)
        return (rec, labels, visible_cases(conn, cleared, status="open", limit=300), cases_db.categories(conn),
                marks, conf.own_marks(conn, rid))

    rec, labels, open_cases, categories, marks, own_marks = await _load(  # type: ignore[misc]
        request, work, "view")
    media_type = _media_type(rec["rel_path"])
    return await render(request, "recording.html", {
        "rec": rec, "labels": labels, "open_cases": open_cases, "categories": categories,
        "marks": marks, "own_marks": own_marks, "mark_names": conf.MARKS,
        "kind": media_type.split("/")[0], "media_type": media_type,
        "back": safe_next(request.query.get("back"), "/recordings"),
        "tagged": int_param(request.query.get("tagged")),
    })


def _media_type(name: str) -> str:
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot >= 0 else ""
    return _MEDIA_TYPES.get(ext) or mimetypes.guess_type("x" + ext)[0] or "application/octet-stream"


async def media(request: web.Request) -> web.StreamResponse:
    """The vault file itself, with HTTP range requests (seeking) and audit."""
    app = request.app[APPLIANCE]
    state = request.app[STATE]
    user = request[USER]
    download = request.query.get("download") == "1"

    def work(conn, rid, found, marks):  # type: ignore[no-untyped-def]
        vault_path, rel_path, _officer, purged_at = found
        if purged_at:
            return "purged"
        details = {"file": rel_path, "ip": client_ip(request), **({"marks": marks} if marks else {})}
        if download:
            audit.append(conn, user.name, "recording.download", str(rid), details)
        elif state.play_is_new(user.id, rid):
            audit.append(conn, user.name, "recording.play", str(rid),
                         {**details, "range": request.headers.get("Range", "")[:64]})
        return vault_path, rel_path

    loaded = await _load(request, work, "download" if download else "play")
    if loaded == "purged":
        raise web.HTTPGone(text="the recording was purged under the retention rules; its record is kept")
    vault_path, rel_path = loaded  # type: ignore[misc]
    try:
        path = app.vault.absolute(vault_path)
    except VaultError:
        log.error("recording %s: catalog path %r escapes the vault", request.match_info["rid"], vault_path)
        raise web.HTTPNotFound() from None
    if not path.is_file():
        raise web.HTTPNotFound(text="the file is missing from the vault: run `appliance verify`")
    name = rel_path.rsplit("/", 1)[-1]
    headers = {"Content-Type": _media_type(name)}
    if download:
        ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
        headers["Content-Disposition"] = (f'attachment; filename="{ascii_name}"; '
                                          f"filename*=UTF-8''{quote(name, safe='')}")
    else:
        headers["Content-Disposition"] = "inline"
    return web.FileResponse(path, chunk_size=256 * 1024, headers=headers)


async def tag(request: web.Request) -> web.Response:
    """Tag one or many recordings to a case, a category and/or a tag (device manager)."""
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    ids = [n for n in (int_param(str(v)) for v in form.getall("rid", [])) if n is not None]
    case_id = int_param(str(form.get("case", "")))
    category = str(form.get("category", "")).strip() or None
    tag_name = str(form.get("tag", "")).strip() or None
    back = safe_next(str(form.get("back", "")), "/recordings")
    t = i18n.translator(i18n.language(request))
    def work(conn):  # type: ignore[no-untyped-def]
        cleared = cleared_for(conn, user)
        hidden = conf.withheld(conn, ids, cleared)
        if hidden:
            raise cases_db.CaseError(f"recording {min(hidden)}: not visible to you")
        if case_id is not None and conf.case_withheld(conn, case_id, cleared):
            raise cases_db.CaseError(f"case {case_id}: not visible to you")
        return cases_db.tag_recordings(conn, ids, actor=user.name, case_id=case_id, category=category, tag=tag_name)

    try:
        added = await app.catalog.call(work)
    except ApplianceError as exc:
        return await render(request, "message.html", {"title": t("tag.failed"), "message": str(exc),
                                                      "back": back}, status=400)
    sep = "&" if "?" in back else "?"
    raise web.HTTPSeeOther(f"{back}{sep}tagged={added}")


async def mark(request: web.Request) -> web.Response:
    """Put a confidentiality mark (art. 3) on one or many recordings."""
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    ids = [n for n in (int_param(str(v)) for v in form.getall("rid", [])) if n is not None]
    back = safe_next(str(form.get("back", "")), "/recordings")
    t = i18n.translator(i18n.language(request))

    def work(conn):  # type: ignore[no-untyped-def]
        return conf.mark_recordings(conn, ids, str(form.get("mark", "")), actor=user.name,
                                    cleared=cleared_for(conn, user), reason=str(form.get("reason", "")).strip())

    try:
        added = await app.catalog.call(work)
    except ApplianceError as exc:
        return await render(request, "message.html", {"title": t("mark.failed"), "message": str(exc),
                                                      "back": back}, status=400)
    sep = "&" if "?" in back else "?"
    raise web.HTTPSeeOther(f"{back}{sep}marked={added}")


async def unmark(request: web.Request) -> web.Response:
    """Take a recording's own mark off: only someone cleared for it, with a reason."""
    app = request.app[APPLIANCE]
    user = request[USER]
    rid = int_param(request.match_info["rid"])
    form = await request.post()
    t = i18n.translator(i18n.language(request))
    if rid is None:
        raise web.HTTPNotFound()

    def work(conn):  # type: ignore[no-untyped-def]
        conf.unmark_recording(conn, rid, str(form.get("mark", "")), actor=user.name,
                              cleared=cleared_for(conn, user), reason=str(form.get("reason", "")))

    try:
        await app.catalog.call(work)
    except ApplianceError as exc:
        return await render(request, "message.html", {"title": t("mark.failed"), "message": str(exc),
                                                      "back": f"/recordings/{rid}"}, status=400)
    raise web.HTTPSeeOther(f"/recordings/{rid}")
