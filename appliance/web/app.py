"""The aiohttp application: the status API and ``/metrics`` (the full web page comes later)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from appliance import __version__

if TYPE_CHECKING:
    from appliance.daemon import Appliance

APPLIANCE = web.AppKey("appliance", "Appliance")


async def slots(request: web.Request) -> web.Response:
    """Every slot's state and progress, as the slot board shows it."""
    app = request.app[APPLIANCE]
    return web.json_response({"slots": [s.to_json() for s in app.board.all()]},
                             dumps=_dumps)


async def health(request: web.Request) -> web.Response:
    """Liveness and the vault's state, for Ansible's upgrade checks and IT."""
    app = request.app[APPLIANCE]
    space = app.last_space
    return web.json_response({
        "status": "ok", "version": __version__, "station": app.config.station.id,
        "vault": {"backend": app.vault.backend, "health": app.vault_health,
                  "free_bytes": space.free_bytes if space else None},
        "busy": app.busy_slots(),
    })


async def metrics(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    return web.Response(body=app.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _dumps(obj: object) -> str:
    import json
    return json.dumps(obj, ensure_ascii=False)


def make_app(appliance: "Appliance") -> web.Application:
    """The web application for one running appliance."""
    app = web.Application(client_max_size=1 << 20)
    app[APPLIANCE] = appliance
    app.router.add_get("/api/v1/slots", slots)
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/metrics", metrics)
    return app
