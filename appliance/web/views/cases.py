"""Cases and the long-term categories of article 7."""

from __future__ import annotations

from aiohttp import web

from appliance.catalog import audit
from appliance.catalog import cases as cases_db
from appliance.catalog import confidentiality as conf
from appliance.catalog import search as search_db
from appliance.errors import ApplianceError
from appliance.web import i18n
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import int_param, render
from appliance.web.security import client_ip
from appliance.web.views.recordings import _cursor, cleared_for, visible_cases


async def list_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]

    def work(conn):  # type: ignore[no-untyped-def]
        return visible_cases(conn, cleared_for(conn, user)), cases_db.categories(conn)

    cases, categories = await app.catalog.call(work)
    return await render(request, "cases.html", {"cases": cases, "categories": categories,
                                                "error": None,
                                                "form": dict.fromkeys(("number", "title", "category", "notes"), "")})


async def create(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    form = await request.post()
    fields = {k: str(form.get(k, "")) for k in ("number", "title", "category", "notes")}
    try:
        case = await app.catalog.call(cases_db.create_case, fields["number"], fields["title"],
                                      category=fields["category"] or None, notes=fields["notes"],
                                      actor=user.name)
    except ApplianceError as exc:
        def work(conn):  # type: ignore[no-untyped-def]
            return visible_cases(conn, cleared_for(conn, user)), cases_db.categories(conn)

        cases, categories = await app.catalog.call(work)
        return await render(request, "cases.html", {"cases": cases, "categories": categories,
                                                    "error": str(exc), "form": fields}, status=400)
    raise web.HTTPSeeOther(f"/cases/{case.id}")


async def case_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    cid = int_param(request.match_info["cid"])
    if cid is None:
        raise web.HTTPNotFound()
    cursor = _cursor(request.query.get("after"))

    def work(conn):  # type: ignore[no-untyped-def]
        case = cases_db.get_case(conn, cid)
        if case is None:
            return None
        cleared = cleared_for(conn, user)
        missing = conf.case_withheld(conn, cid, cleared)
        if missing:   # art. 3: a marked case is not shown, not even its existence; audited
            audit.append(conn, user.name, "case.refused-confidential", case.number,
                         {"marks": sorted(missing), "ip": client_ip(request)})
            return None
        page = search_db.search(conn, search_db.Query(case_id=cid, cursor=cursor, limit=100, cleared=cleared))
        discs = [dict(r) for r in conn.execute(
            "SELECT j.id AS job_id, j.set_id, j.state AS job_state, d.label, d.state, d.medium,"
            " d.verified_at FROM burn_jobs j LEFT JOIN discs d ON d.job_id = j.id WHERE j.case_id = ?"
            " ORDER BY j.id DESC, d.disc_index", (cid,))]
        marks = [dict(r) for r in conn.execute("SELECT * FROM case_marks WHERE case_id = ? ORDER BY mark", (cid,))]
        return case, page, cases_db.categories(conn), discs, marks, cleared

    found = await app.catalog.call(work)
    if found is None:
        raise web.HTTPNotFound()
    case, page, categories, discs, marks, cleared = found
    return await render(request, "case.html", {
        "case": case, "rows": page.rows, "categories": {c.key: c for c in categories}, "discs": discs,
        "marks": marks, "mark_names": conf.MARKS, "cleared": cleared,
        "next_url": f"/cases/{cid}?after={page.next_cursor[0]}|{page.next_cursor[1]}"
        if page.next_cursor else None})


async def set_status(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    cid = int_param(request.match_info["cid"])
    form = await request.post()
    if cid is None:
        raise web.HTTPNotFound()
    try:
        await app.catalog.call(cases_db.set_case_status, cid, str(form.get("status", "")), actor=user.name)
    except ApplianceError as exc:
        t = i18n.translator(i18n.language(request))
        return await render(request, "message.html", {"title": t("case.failed"), "message": str(exc),
                                                      "back": f"/cases/{cid}"}, status=400)
    raise web.HTTPSeeOther(f"/cases/{cid}")


async def untag(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    user = request[USER]
    cid = int_param(request.match_info["cid"])
    form = await request.post()
    rid = int_param(str(form.get("rid", "")))
    if cid is None or rid is None:
        raise web.HTTPNotFound()
    try:
        await app.catalog.call(cases_db.untag_case, cid, rid, actor=user.name)
    except ApplianceError as exc:
        t = i18n.translator(i18n.language(request))
        return await render(request, "message.html", {"title": t("case.failed"), "message": str(exc),
                                                      "back": f"/cases/{cid}"}, status=400)
    raise web.HTTPSeeOther(f"/cases/{cid}")


async def mark(request: web.Request) -> web.Response:
    """Put a confidentiality mark on a case (art. 3), or take one off (``action=unmark``)."""
    app = request.app[APPLIANCE]
    user = request[USER]
    cid = int_param(request.match_info["cid"])
    form = await request.post()
    if cid is None:
        raise web.HTTPNotFound()
    unmark = form.get("action") == "unmark"

    def work(conn):  # type: ignore[no-untyped-def]
        fn = conf.unmark_case if unmark else conf.mark_case
        cleared = cleared_for(conn, user)
        fn(conn, cid, str(form.get("mark", "")), actor=user.name, cleared=cleared,
           reason=str(form.get("reason", "")).strip())
        return not conf.case_withheld(conn, cid, cleared)

    try:
        still_visible = await app.catalog.call(work)
    except ApplianceError as exc:
        t = i18n.translator(i18n.language(request))
        return await render(request, "message.html", {"title": t("mark.failed"), "message": str(exc),
                                                      "back": f"/cases/{cid}"}, status=400)
    raise web.HTTPSeeOther(f"/cases/{cid}" if still_visible else "/cases")
