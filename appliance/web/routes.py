"""The route table: every route of the web page, with the roles that may use it.

This table is the one place where access is decided. :func:`appliance.web.app.make_app`
registers exactly these routes, and :func:`appliance.web.security.security_middleware`
looks every request up here: a request whose route is not in the table is refused, a
route for logged-in users refuses a request without a session, a route for some roles
refuses every other role. The security tests are generated from this table.

What an officer may see *within* a route (own recordings only) is checked where the
recordings are loaded (:mod:`appliance.web.views.recordings`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from appliance.web.access import (ADMIN, ANY_USER, AUDIT, CASES_READ, EVIDENCE, HEALTH, MANAGE, PUBLIC,
                                  Access)
from appliance.web.views import admin, auth, board, burning, cases, recordings, status

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str          # GET, POST, or STATIC (a folder of static files)
    path: str
    handler: Handler | None
    access: Access
    name: str


ROUTES: tuple[Route, ...] = (
    # -- no login: the slot board, the status API, metrics, static files, login ---------
    Route("GET", "/", board.page, PUBLIC, "board"),
    Route("GET", "/board/events", board.events, PUBLIC, "board.events"),
    Route("GET", "/api/v1/slots", status.slots, PUBLIC, "api.slots"),
    Route("GET", "/api/v1/health", status.health, PUBLIC, "api.health"),
    Route("GET", "/metrics", status.metrics, PUBLIC, "metrics"),
    Route("STATIC", "/static", None, PUBLIC, "static"),
    Route("GET", "/login", auth.login_page, PUBLIC, "login"),
    Route("POST", "/login", auth.login, PUBLIC, "login.post"),
    Route("GET", "/lang/{lang}", auth.set_language, PUBLIC, "lang"),
    # -- every account ------------------------------------------------------------------
    Route("POST", "/logout", auth.logout, ANY_USER, "logout"),
    Route("GET", "/account/password", auth.password_page, ANY_USER, "password"),
    Route("POST", "/account/password", auth.change_password, ANY_USER, "password.post"),
    # -- evidence -----------------------------------------------------------------------
    Route("GET", "/recordings", recordings.search_page, EVIDENCE, "recordings"),
    Route("GET", "/recordings/{rid:[0-9]+}", recordings.recording_page, EVIDENCE, "recording"),
    Route("GET", "/recordings/{rid:[0-9]+}/media", recordings.media, EVIDENCE, "recording.media"),
    Route("POST", "/recordings/tag", recordings.tag, MANAGE, "recordings.tag"),
    Route("GET", "/cases", cases.list_page, CASES_READ, "cases"),
    Route("POST", "/cases", cases.create, MANAGE, "cases.create"),
    Route("GET", "/cases/{cid:[0-9]+}", cases.case_page, CASES_READ, "case"),
    Route("POST", "/cases/{cid:[0-9]+}/status", cases.set_status, MANAGE, "case.status"),
    Route("POST", "/cases/{cid:[0-9]+}/untag", cases.untag, MANAGE, "case.untag"),
    # -- burning and the disc register --------------------------------------------------
    Route("GET", "/burn", burning.burn_page, MANAGE, "burn"),
    Route("POST", "/burn/plan", burning.plan_page, MANAGE, "burn.plan"),
    Route("POST", "/burn/start", burning.start, MANAGE, "burn.start"),
    Route("GET", "/burn/jobs/{jid:[0-9]+}", burning.job_page, MANAGE, "burn.job"),
    Route("GET", "/burn/jobs/{jid:[0-9]+}/events", burning.job_events, MANAGE, "burn.job.events"),
    Route("POST", "/burn/jobs/{jid:[0-9]+}/continue", burning.resume, MANAGE, "burn.job.resume"),
    Route("GET", "/discs", burning.discs_page, CASES_READ, "discs"),
    Route("GET", "/discs/{did:[0-9]+}/form", burning.form_page, CASES_READ, "disc.form"),
    # -- supervision and administration -------------------------------------------------
    Route("GET", "/audit", admin.audit_page, AUDIT, "audit"),
    Route("GET", "/health", admin.health_page, HEALTH, "health"),
    Route("GET", "/admin/users", admin.users_page, ADMIN, "users"),
    Route("POST", "/admin/users", admin.add_user, ADMIN, "users.add"),
    Route("POST", "/admin/users/{uid:[0-9]+}", admin.change_user, ADMIN, "user.change"),
    Route("GET", "/admin/settings", admin.settings_page, ADMIN, "settings"),
    Route("POST", "/admin/settings", admin.save_settings, ADMIN, "settings.post"),
)
