"""The aiohttp application of the local web page.

:func:`make_app` builds it for one running appliance: the routes of the table in
:mod:`appliance.web.routes`, cookie sessions, the access middleware, the Jinja2
templates, the security headers and friendly error pages.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import TYPE_CHECKING

import aiohttp_session
from aiohttp import web

from appliance.web import render
from appliance.web.keys import APPLIANCE, BURNS, KEEPER, STATE, THROTTLE
from appliance.web.routes import ROUTES
from appliance.web.security import (CookieStorage, LoginThrottle, WebState, load_or_create_key,
                                    security_headers, security_middleware)
from appliance.web.views import admin, devices
from appliance.web.views.board import STREAMS, Streams, close_streams
from appliance.burner.jobs import BurnService

if TYPE_CHECKING:
    from appliance.daemon import Appliance

log = logging.getLogger(__name__)

__all__ = ["APPLIANCE", "make_app"]

_TEXT_ONLY = ("/api/", "/metrics", "/static/", "/board/events")


@web.middleware
async def error_pages(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """A 403, 404 or 500 is a page in the station's language for a browser, text for tools."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not _browser(request):
            raise
        return await _error_page(request, exc.status, exc.text or "")
    except Exception:
        log.exception("web: %s %s failed", request.method, request.path)
        if not _browser(request):
            raise web.HTTPInternalServerError(text="internal error; see the appliance log") from None
        return await _error_page(request, 500, "")


def _browser(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "") and not request.path.startswith(_TEXT_ONLY)


async def _error_page(request: web.Request, status: int, text: str) -> web.Response:
    try:
        return await render.render(request, "error.html", {"status": status, "detail": text}, status=status)
    except Exception:
        log.exception("web: the error page itself failed")
        return web.Response(status=status, text=f"{status}")


def make_app(appliance: "Appliance") -> web.Application:
    """The web application for one running appliance."""
    app = web.Application(client_max_size=1 << 20, middlewares=[error_pages])
    app[APPLIANCE] = appliance
    state = WebState()
    app[STATE] = state
    app[THROTTLE] = LoginThrottle()
    app[STREAMS] = Streams()
    app[BURNS] = BurnService(appliance)
    aiohttp_session.setup(app, CookieStorage(load_or_create_key(appliance.config.state_dir)))
    app.middlewares.append(security_middleware)
    render.setup(app, appliance.config.station.timezone)
    for route in ROUTES:
        if route.method == "STATIC":
            resource = app.router.add_static(route.path, render.STATIC, name=route.name,
                                             follow_symlinks=False, append_version=False)
            state.access[(resource, "GET")] = route.access
        else:
            added = app.router.add_route(route.method, route.path, route.handler, name=route.name)
            state.access[(added.resource, route.method)] = route.access
        state.names[route.name] = route.access
    app.on_startup.append(_startup)
    app.on_cleanup.append(_stop_keeper)
    app.on_shutdown.append(close_streams)
    app.on_shutdown.append(_stop_burns)
    app.on_response_prepare.append(security_headers)
    return app


async def _startup(app: web.Application) -> None:
    appliance = app[APPLIANCE]
    app[STATE].settings = await appliance.catalog.call(admin.load_settings)
    admin.apply_settings(app)
    await app[BURNS].recover()
    # the daily list of overdue and not-returned devices, kept at each end of the working day
    app[KEEPER] = asyncio.create_task(devices.keep_daily_lists(appliance), name="deadline-lists")


async def _stop_keeper(app: web.Application) -> None:
    task = app.get(KEEPER)
    if task is not None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _stop_burns(app: web.Application) -> None:
    await app[BURNS].stop()
