"""Cases and the long-term categories of article 7."""

from __future__ import annotations

from aiohttp import web

from appliance.catalog import cases as cases_db
from appliance.catalog import search as search_db
from appliance.errors import ApplianceError
from appliance.web import i18n
from appliance.web.keys import APPLIANCE, USER
from appliance.web.render import int_param, render
from appliance.web.views.recordings import _cursor


async def list_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]

    def work(conn):  # type: ignore[no-untyped-def]
        return cases_db.list_cases(conn), cases_db.categories(conn)

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
            return cases_db.list_cases(conn), cases_db.categories(conn)

        cases, categories = await app.catalog.call(work)
        return await render(request, "cases.html", {"cases": cases, "categories": categories,
                                                    "error": str(exc), "form": fields}, status=400)
    raise web.HTTPSeeOther(f"/cases/{case.id}")


async def case_page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    cid = int_param(request.match_info["cid"])
    if cid is None:
        raise web.HTTPNotFound()
    cursor = _cursor(request.query.get("after"))

    def work(conn):  # type: ignore[no-untyped-def]
        case = cases_db.get_case(conn, cid)
        if case is None:
            return None
        page = search_db.search(conn, search_db.Query(case_id=cid, cursor=cursor, limit=100))
        discs = [dict(r) for r in conn.execute(
            "SELECT j.id AS job_id, j.set_id, j.state AS job_state, d.label, d.state, d.medium,"
            " d.verified_at FROM burn_jobs j LEFT JOIN discs d ON d.job_id = j.id WHERE j.case_id = ?"
            " ORDER BY j.id DESC, d.disc_index", (cid,))]
        return case, page, cases_db.categories(conn), discs

    found = await app.catalog.call(work)
    if found is None:
        raise web.HTTPNotFound()
    case, page, categories, discs = found
    return await render(request, "case.html", {
        "case": case, "rows": page.rows, "categories": {c.key: c for c in categories}, "discs": discs,
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
