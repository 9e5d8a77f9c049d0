"""Burning evidence discs: choose, plan, start, watch; the disc register and the record form."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from appliance.burner import MEDIA, form_document, render_html, render_pdf
from appliance.burner.media import human_bytes
from appliance.catalog import audit
from appliance.errors import ApplianceError
from appliance.burner.jobs import BurnChanged, BurnRequestError, disc_for_form, selection
from appliance.catalog import confidentiality as conf
from appliance.web.views.recordings import cleared_for, visible_cases
from appliance.web.keys import APPLIANCE, BURNS, USER
from appliance.web.render import int_param, render
from appliance.web.views.board import STREAMS

KEEPALIVE_S = 15.0


def _ids(values: list[str]) -> list[int]:
    return [n for n in (int_param(str(v)) for v in values) if n is not None][:20000]


async def check_selection(request: web.Request, recording_ids: list[int]) -> None:
    """Refuse a burn of recordings the user may not see (art. 3) or whose files were purged."""
    app = request.app[APPLIANCE]
    user = request[USER]

    def work(conn):  # type: ignore[no-untyped-def]
        hidden = conf.withheld(conn, recording_ids, cleared_for(conn, user))
        if hidden:
            return f"recording {min(hidden)}: not visible to you"
        for start in range(0, len(recording_ids), 500):
            chunk = recording_ids[start:start + 500]
            purged = conn.execute(f"SELECT MIN(id) FROM recordings WHERE purged_at IS NOT NULL AND id IN"
                                  f" ({','.join('?' * len(chunk))})", chunk).fetchone()[0]
            if purged:
                return f"recording {purged} was purged under the retention rules"
        return None

    problem = await app.catalog.call(work)
    if problem:
        raise BurnRequestError(problem)


async def _choices(request: web.Request) -> dict:
    app = request.app[APPLIANCE]
    user = request[USER]
    cases = await app.catalog.call(lambda conn: visible_cases(conn, cleared_for(conn, user), limit=300))
    return {"cases": cases, "media": list(MEDIA.values()), "drives": request.app[BURNS].drives()}


async def burn_page(request: web.Request) -> web.Response:
    rids = _ids(request.query.getall("rid", []))
    return await render(request, "burn.html", {
        **await _choices(request), "rids": rids, "case_id": int_param(request.query.get("case")),
        "error": None, "plan": None, "medium": request.query.get("medium", "dvd"), "drive": ""})


async def plan_page(request: web.Request) -> web.Response:
    """Show the plan (which discs, what on each) before anything is written."""
    app = request.app[APPLIANCE]
    burns = request.app[BURNS]
    form = await request.post()
    rids = _ids(form.getall("rid", []))
    case_id = int_param(str(form.get("case", "")))
    medium_key = str(form.get("medium", "dvd"))
    drive = str(form.get("drive", ""))
    ctx = {**await _choices(request), "rids": rids, "case_id": case_id, "medium": medium_key,
           "drive": drive, "plan": None, "error": None, "human": human_bytes}
    try:
        recs = await app.catalog.call(selection, app.vault.root, case_id=case_id,
                                      recording_ids=[] if case_id else rids)
        await check_selection(request, [r.recording_id for r in recs])
        plan = burns.plan(recs, medium_key, 0)
    except ApplianceError as exc:
        ctx["error"] = str(exc)
        return await render(request, "burn.html", ctx, status=400)
    ctx["plan"] = plan
    return await render(request, "burn.html", ctx)


async def start(request: web.Request) -> web.Response:
    burns = request.app[BURNS]
    user = request[USER]
    form = await request.post()
    rids = _ids(form.getall("rid", []))
    case_id = int_param(str(form.get("case", "")))
    app = request.app[APPLIANCE]
    try:
        recs = await app.catalog.call(selection, app.vault.root, case_id=case_id,
                                      recording_ids=[] if case_id else rids)
        await check_selection(request, [r.recording_id for r in recs])
        job_id = await burns.start(case_id=case_id, recording_ids=[] if case_id else rids,
                                   medium_key=str(form.get("medium", "")), drive=str(form.get("drive", "")),
                                   actor=user.name)
    except ApplianceError as exc:
        ctx = {**await _choices(request), "rids": rids, "case_id": case_id, "medium": form.get("medium", ""),
               "drive": form.get("drive", ""), "plan": None, "error": str(exc)}
        return await render(request, "burn.html", ctx, status=400)
    raise web.HTTPSeeOther(f"/burn/jobs/{job_id}")


async def _job(request: web.Request) -> tuple[dict, list[dict]]:
    app = request.app[APPLIANCE]
    jid = int_param(request.match_info["jid"])

    def work(conn):  # type: ignore[no-untyped-def]
        job = conn.execute("SELECT j.*, c.number AS case_number FROM burn_jobs j"
                           " LEFT JOIN cases c ON c.id = j.case_id WHERE j.id = ?", (jid,)).fetchone()
        if job is None:
            return None
        discs = [dict(r) for r in conn.execute(
            "SELECT d.*, (SELECT COUNT(*) FROM disc_recordings x WHERE x.disc_id = d.id) AS recordings"
            " FROM discs d WHERE d.job_id = ? ORDER BY d.disc_index", (jid,))]
        return dict(job), discs

    found = await app.catalog.call(work)
    if found is None:
        raise web.HTTPNotFound()
    return found


async def job_page(request: web.Request) -> web.Response:
    job, discs = await _job(request)
    live = request.app[BURNS].live.get(job["id"])
    return await render(request, "burn_job.html", {"job": job, "discs": discs,
                                                   "live": live.to_json() if live else None})


async def resume(request: web.Request) -> web.Response:
    job, _discs = await _job(request)
    request.app[BURNS].resume(job["id"])
    raise web.HTTPSeeOther(f"/burn/jobs/{job['id']}")


async def job_events(request: web.Request) -> web.StreamResponse:
    """Live progress of one job (server-sent events)."""
    app = request.app[APPLIANCE]
    burns = request.app[BURNS]
    streams = request.app[STREAMS]
    job, _discs = await _job(request)
    job_id = job["id"]
    loop = asyncio.get_running_loop()
    latest: list[dict] = []
    wake = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, BurnChanged) and event.job_id == job_id:
            loop.call_soon_threadsafe(_note, event.state)

    def _note(state: dict) -> None:
        latest[:] = [state]
        wake.set()

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    unsubscribe = app.bus.subscribe(on_event)
    streams.wakers.add(wake)
    try:
        live = burns.live.get(job_id)
        state = live.to_json() if live else {"job_id": job_id, "state": job["state"], "discs": {}}
        await response.write(_sse(state))
        while not streams.closing:
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            wake.clear()
            if latest:
                await response.write(_sse(latest.pop()))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        unsubscribe()
        streams.wakers.discard(wake)
    return response


def _sse(data: dict) -> bytes:
    return f"event: job\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def discs_page(request: web.Request) -> web.Response:
    """The disc register: every disc, its set, case, state and check."""
    app = request.app[APPLIANCE]
    before = int_param(request.query.get("before"))

    def work(conn):  # type: ignore[no-untyped-def]
        return [dict(r) for r in conn.execute(
            "SELECT d.*, j.set_id, j.created_by, j.created_at, c.id AS case_id, c.number AS case_number,"
            " (SELECT COUNT(*) FROM disc_recordings x WHERE x.disc_id = d.id) AS recordings"
            " FROM discs d JOIN burn_jobs j ON j.id = d.job_id LEFT JOIN cases c ON c.id = j.case_id"
            + (" WHERE d.id < ?" if before else "") + " ORDER BY d.id DESC LIMIT 101",
            (before,) if before else ())]

    discs = await app.catalog.call(work)
    next_url = f"/discs?before={discs[99]['id']}" if len(discs) > 100 else None
    return await render(request, "discs.html", {"discs": discs[:100], "next_url": next_url})


async def form_page(request: web.Request) -> web.StreamResponse:
    """《同步录音录像摄录情况记录表》 of a registered disc, as HTML to print or as PDF."""
    app = request.app[APPLIANCE]
    user = request[USER]
    did = int_param(request.match_info["did"])
    pdf = request.query.get("format") == "pdf"

    def work(conn):  # type: ignore[no-untyped-def]
        found = disc_for_form(conn, did, app.vault.root)
        if found is None:
            return None
        audit.append(conn, user.name, "disc.form", found[2]["label"], {"format": "pdf" if pdf else "html"})
        return found, audit.head(conn)

    result = await app.catalog.call(work)
    if result is None:
        raise web.HTTPNotFound()
    (disc, sessions, row), head = result
    from datetime import datetime
    created = datetime.fromisoformat(row["burned_at"]) if row.get("burned_at") else None
    doc = form_document(disc, sessions, unit_name=app.config.station.name,
                        created_at=created or datetime.now().astimezone(),
                        tz=app.config.station.timezone, audit_chain_head=head,
                        image_sha256=row.get("image_sha256"))
    if pdf:
        body = await asyncio.to_thread(render_pdf, doc)
        return web.Response(body=body, content_type="application/pdf", headers={
            "Content-Disposition": f'inline; filename="{disc.label.file_stem}-form.pdf"'})
    html = render_html(doc)
    # The burner's form is a standalone page with its own inline style and no script.
    return web.Response(text=html, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                   "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"})
