"""The status API (``/api/v1/slots``, ``/api/v1/health``) and ``/metrics``: no login.

The slot list is what the public slot board shows (no recordings); health is for
Ansible's upgrade checks; ``/metrics`` is for Prometheus.
"""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from appliance import __version__
from appliance.web.keys import APPLIANCE, BURNS


async def slots(request: web.Request) -> web.Response:
    """Every slot's state and progress, as the slot board shows it."""
    app = request.app[APPLIANCE]
    return web.json_response({"slots": [s.to_json() for s in app.board.all()]}, dumps=_dumps)


async def health(request: web.Request) -> web.Response:
    """Liveness and the vault's state, for Ansible's upgrade checks and IT."""
    app = request.app[APPLIANCE]
    space = app.last_space
    return web.json_response({
        "status": "ok", "version": __version__, "station": app.config.station.id,
        "vault": {"backend": app.vault.backend, "health": app.vault_health,
                  "free_bytes": space.free_bytes if space else None},
        "busy": app.busy_slots(),
        "burning": request.app[BURNS].busy_drives,
        "replication": _replication(app),
    })


def _replication(app) -> dict:  # type: ignore[no-untyped-def]
    """Replication to headquarters, in short (a run made by `appliance replicate --now` included)."""
    from appliance.vault.replication import summary

    replicator = getattr(app, "replicator", None)
    if replicator is None:
        return summary(None)
    replicator.reload()
    return summary(replicator.status)


async def metrics(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    if not app.monitor.authorized(request.headers.get("Authorization")):
        return web.Response(status=401, text="bearer token required\n",
                            headers={"WWW-Authenticate": 'Bearer realm="appliance metrics"'})
    return web.Response(body=app.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)
