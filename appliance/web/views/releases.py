"""Release approval (article 16): request → a leader decides → export (package, disc) → recorded."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.burner import MEDIA
from appliance.catalog import approvals, audit
from appliance.catalog import confidentiality as conf
from appliance.catalog import releases as releases_db
from appliance.errors import ApplianceError
from appliance.vault.export import write_package
from appliance.web.keys import APPLIANCE, BURNS, USER
from appliance.web.render import int_param, render
from appliance.web.security import client_ip
from appliance.web.views.common import decide_request
from appliance.web.views.recordings import cleared_for, visible_cases

EXPORTS = "exports"


def _ids(values: list) -> list[int]:
    return [n for n in (int_param(str(v)) for v in values) if n is not None][:5000]


async def list_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    state = request.query.get("state") or None
    rows = await app.catalog.call(releases_db.listing, state=state if state in releases_db.STATES else None)
    return await render(request, "releases.html", {"rows": rows, "state": state or "",
                                                   "states": releases_db.STATES})


async def new_page(request: web.Request, error: str | None = None, form: dict | None = None,
                   status: int = 200) -> web.Response:
    """The request form for the recordings ticked in the search (``rid``) or a case (``case``)."""
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
    return await render(request, "release_new.html", {
        "rows": rows, "cases": cases, "case_id": case_id, "purposes": releases_db.PURPOSES, "error": error,
        "form": {k: source.get(k, "") for k in ("purpose", "recipient", "reason", "want_disc")},
    }, status=status)


async def create(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    rids = _ids(form.getall("rid", []))
    case_id = int_param(str(form.get("case", "")))
    fields = {k: str(form.get(k, "")).strip() for k in ("purpose", "recipient", "reason", "want_disc")}

    def work(conn):  # type: ignore[no-untyped-def]
        return releases_db.create(conn, rids, purpose=fields["purpose"], recipient=fields["recipient"],
                                  reason=fields["reason"], actor=user.name, cleared=cleared_for(conn, user),
                                  case_id=case_id, want_disc=fields["want_disc"] == "1")

    try:
        lid = await app.catalog.call(work)
    except ApplianceError as exc:
        return await new_page(request, str(exc), {**fields, "rids": rids, "case": case_id or ""}, 400)
    raise web.HTTPSeeOther(f"/releases/{lid}")


async def detail(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    lid = int_param(request.match_info["lid"])

    def work(conn):  # type: ignore[no-untyped-def]
        release = releases_db.get(conn, lid) if lid is not None else None
        if release is None:
            return None
        recs = releases_db.recordings(conn, lid)
        hidden = conf.withheld(conn, [r["id"] for r in recs], cleared_for(conn, user))
        return release, recs, hidden

    found = await app.catalog.call(work)
    if found is None:
        raise web.HTTPNotFound()
    release, recs, hidden = found
    burns = request.app[BURNS]
    return await render(request, "release.html", {
        "r": release, "recs": recs, "hidden": hidden, "error": error, "media": list(MEDIA.values()),
        "drives": burns.drives(), "total": sum(r["size"] for r in recs),
        "mine": approvals.same_person(release["requested_by"], user.name),
    }, status=status)


async def decide(request: web.Request) -> web.Response:
    return await decide_request(request, releases_db.decide, "lid", detail, "/releases/{}")


async def export(request: web.Request) -> web.Response:
    """Write the release package: the files with their hashes, verified against the catalog."""
    app = request.app[APPLIANCE]
    user = request[USER]
    lid = int_param(request.match_info["lid"])
    if lid is None:
        raise web.HTTPNotFound()

    def prepare(conn):  # type: ignore[no-untyped-def]
        release, recs = releases_db.exportable(conn, lid, cleared_for(conn, user))
        return release, recs, audit.head(conn)

    try:
        release, recs, head = await app.catalog.call(prepare)
        meta = {
            "release": release["number"], "station": app.config.station.id, "unit": app.config.station.name,
            "purpose": release["purpose"], "recipient": release["recipient"], "reason": release["reason"],
            "requested_by": release["requested_by"], "requested_at": release["requested_at"],
            "approved_by": release["decided_by"], "approved_at": release["decided_at"],
            "approval_reason": release["decision_reason"], "exported_by": user.name, "audit_chain_head": head,
        }
        path, digest, size = await asyncio.to_thread(write_package, app.vault, app.config.state_dir / EXPORTS,
                                                     release["number"], recs, meta)
        await app.catalog.call(releases_db.record_export, lid, actor=user.name, file=path.name, sha256=digest,
                               size=size)
    except (ApplianceError, OSError) as exc:
        return await detail(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/releases/{lid}")


async def package(request: web.Request) -> web.StreamResponse:
    """Download the package of an exported release (each download audited)."""
    app = request.app[APPLIANCE]
    user = request[USER]
    lid = int_param(request.match_info["lid"])
    if lid is None:
        raise web.HTTPNotFound()

    def work(conn):  # type: ignore[no-untyped-def]
        releases_db.exportable(conn, lid, cleared_for(conn, user))
        return releases_db.record_download(conn, lid, actor=user.name, ip=client_ip(request))

    try:
        release = await app.catalog.call(work)
    except ApplianceError:
        raise web.HTTPNotFound() from None
    path = app.config.state_dir / EXPORTS / release["export_file"]
    if not path.is_file():
        raise web.HTTPNotFound(text="the package is gone from the state folder: export it again")
    return web.FileResponse(path, headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="{release["export_file"]}"'})


async def burn(request: web.Request) -> web.Response:
    """Burn an approved release to disc, through the disc register's burn jobs."""
    app = request.app[APPLIANCE]
    user = request[USER]
    lid = int_param(request.match_info["lid"])
    if lid is None:
        raise web.HTTPNotFound()
    form = await request.post()
    try:
        _release, recs = await app.catalog.call(
            lambda conn: releases_db.exportable(conn, lid, cleared_for(conn, user)))
        job_id = await request.app[BURNS].start(
            case_id=None, recording_ids=[r["id"] for r in recs], medium_key=str(form.get("medium", "")),
            drive=str(form.get("drive", "")), actor=user.name)
        await app.catalog.call(releases_db.attach_burn, lid, job_id, actor=user.name)
    except ApplianceError as exc:
        return await detail(request, str(exc), 400)
    raise web.HTTPSeeOther(f"/burn/jobs/{job_id}")
