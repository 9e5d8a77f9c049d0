"""The route table: every route of the web page, with the roles that may use it.

This table is the one place where access is decided. :func:`appliance.web.app.make_app`
registers exactly these routes, and :func:`appliance.web.security.security_middleware`
looks every request up here: a request whose route is not in the table is refused, a
route for logged-in users refuses a request without a session, a route for some roles
refuses every other role. The security tests are generated from this table.

What an officer may see *within* a route (own recordings only), and which recordings and
cases a confidentiality mark keeps from an account (art. 3), is checked where the
recordings are loaded (:mod:`appliance.web.views.recordings`). That a requester never
decides their own request is checked where decisions are written
(:mod:`appliance.catalog.approvals`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from appliance.web.access import (ADMIN, ANY_USER, APPROVE, AUDIT, BUREAU_HEAD, CASES_READ, EVIDENCE, HEALTH,
                                  MANAGE, PUBLIC, REGISTERS, STAFF, Access)
from appliance.web.views import (admin, auth, board, burning, cases, devices, exceptions, judicial, recordings,
                                 releases, retention, status, supervision)

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
    Route("POST", "/recordings/mark", recordings.mark, STAFF, "recordings.mark"),
    Route("POST", "/recordings/{rid:[0-9]+}/unmark", recordings.unmark, STAFF, "recording.unmark"),
    Route("GET", "/cases", cases.list_page, CASES_READ, "cases"),
    Route("POST", "/cases", cases.create, MANAGE, "cases.create"),
    Route("GET", "/cases/{cid:[0-9]+}", cases.case_page, CASES_READ, "case"),
    Route("POST", "/cases/{cid:[0-9]+}/status", cases.set_status, MANAGE, "case.status"),
    Route("POST", "/cases/{cid:[0-9]+}/untag", cases.untag, MANAGE, "case.untag"),
    Route("POST", "/cases/{cid:[0-9]+}/mark", cases.mark, STAFF, "case.mark"),
    # -- burning and the disc register --------------------------------------------------
    Route("GET", "/burn", burning.burn_page, MANAGE, "burn"),
    Route("POST", "/burn/plan", burning.plan_page, MANAGE, "burn.plan"),
    Route("POST", "/burn/start", burning.start, MANAGE, "burn.start"),
    Route("GET", "/burn/jobs/{jid:[0-9]+}", burning.job_page, MANAGE, "burn.job"),
    Route("GET", "/burn/jobs/{jid:[0-9]+}/events", burning.job_events, MANAGE, "burn.job.events"),
    Route("POST", "/burn/jobs/{jid:[0-9]+}/continue", burning.resume, MANAGE, "burn.job.resume"),
    Route("GET", "/discs", burning.discs_page, CASES_READ, "discs"),
    Route("GET", "/discs/{did:[0-9]+}/form", burning.form_page, CASES_READ, "disc.form"),
    # -- the device registry and its deadlines (art. 4, 9, 11-13, 15.1, 20, 21) ----------
    Route("GET", "/devices", devices.list_page, REGISTERS, "devices"),
    Route("POST", "/devices", devices.add, MANAGE, "devices.add"),
    Route("GET", "/devices/{did:[0-9]+}", devices.device_page, REGISTERS, "device"),
    Route("POST", "/devices/{did:[0-9]+}/details", devices.details, MANAGE, "device.details"),
    Route("POST", "/devices/{did:[0-9]+}/assign", devices.assign, MANAGE, "device.assign"),
    Route("POST", "/devices/{did:[0-9]+}/status", devices.status, MANAGE, "device.status"),
    Route("POST", "/devices/{did:[0-9]+}/log", devices.log_work, MANAGE, "device.log"),
    Route("GET", "/deadlines", devices.deadlines_page, REGISTERS, "deadlines"),
    # -- approvals and registers (art. 7, 8, 16, 17) --------------------------------------
    Route("GET", "/approvals", supervision.approvals_page, REGISTERS, "approvals"),
    Route("GET", "/exceptions", exceptions.list_page, REGISTERS, "exceptions"),
    Route("POST", "/exceptions", exceptions.create, STAFF, "exceptions.create"),
    Route("GET", "/exceptions/{eid:[0-9]+}", exceptions.detail, REGISTERS, "exception"),
    Route("POST", "/exceptions/{eid:[0-9]+}/decide", exceptions.decide, APPROVE, "exception.decide"),
    Route("GET", "/releases", releases.list_page, REGISTERS, "releases"),
    Route("GET", "/releases/new", releases.new_page, STAFF, "releases.new"),
    Route("POST", "/releases", releases.create, STAFF, "releases.create"),
    Route("GET", "/releases/{lid:[0-9]+}", releases.detail, REGISTERS, "release"),
    Route("POST", "/releases/{lid:[0-9]+}/decide", releases.decide, APPROVE, "release.decide"),
    Route("POST", "/releases/{lid:[0-9]+}/export", releases.export, MANAGE, "release.export"),
    Route("GET", "/releases/{lid:[0-9]+}/package", releases.package, MANAGE, "release.package"),
    Route("POST", "/releases/{lid:[0-9]+}/burn", releases.burn, MANAGE, "release.burn"),
    Route("GET", "/judicial", judicial.list_page, REGISTERS, "judicial"),
    Route("GET", "/judicial/new", judicial.new_page, MANAGE, "judicial.new"),
    Route("POST", "/judicial", judicial.create, MANAGE, "judicial.create"),
    Route("GET", "/judicial/register", judicial.register_page, REGISTERS, "judicial.register"),
    Route("GET", "/judicial/{jid:[0-9]+}", judicial.detail, REGISTERS, "judicial.request"),
    Route("POST", "/judicial/{jid:[0-9]+}/decide", judicial.decide, BUREAU_HEAD, "judicial.decide"),
    Route("POST", "/judicial/{jid:[0-9]+}/access", judicial.register_access, MANAGE, "judicial.access"),
    Route("GET", "/retention", retention.overview, REGISTERS, "retention"),
    Route("POST", "/retention", retention.propose, MANAGE, "retention.propose"),
    Route("GET", "/retention/{pid:[0-9]+}", retention.detail, REGISTERS, "purge"),
    Route("POST", "/retention/{pid:[0-9]+}/decide", retention.decide, APPROVE, "purge.decide"),
    Route("POST", "/retention/{pid:[0-9]+}/execute", retention.execute, MANAGE, "purge.execute"),
    Route("GET", "/clearances", supervision.clearances_page, BUREAU_HEAD, "clearances"),
    Route("POST", "/clearances", supervision.change_clearance, BUREAU_HEAD, "clearances.change"),
    # -- supervision (art. 5, 6, 18, 19) ----------------------------------------------------
    Route("GET", "/continuity", supervision.continuity_page, REGISTERS, "continuity"),
    Route("POST", "/continuity/{fid:[0-9]+}/review", supervision.review_flag, STAFF, "continuity.review"),
    Route("GET", "/reports", supervision.report_page, REGISTERS, "reports"),
    # -- supervision and administration -------------------------------------------------
    Route("GET", "/audit", admin.audit_page, AUDIT, "audit"),
    Route("GET", "/health", admin.health_page, HEALTH, "health"),
    Route("GET", "/admin/users", admin.users_page, ADMIN, "users"),
    Route("POST", "/admin/users", admin.add_user, ADMIN, "users.add"),
    Route("POST", "/admin/users/{uid:[0-9]+}", admin.change_user, ADMIN, "user.change"),
    Route("GET", "/admin/settings", admin.settings_page, ADMIN, "settings"),
    Route("POST", "/admin/settings", admin.save_settings, ADMIN, "settings.post"),
)
