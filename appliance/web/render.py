"""Rendering pages: Jinja2 (autoescaped) with the translator, the user and the CSRF token.

Every template gets ``t`` (the one translation function), ``lang``, ``user``,
``csrf_token``, ``can(route_name)`` (the route table's answer for this user, so a page
never offers a link the server would refuse), the station and the version.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import get_session

from appliance import __version__
from appliance.web import i18n
from appliance.web.keys import APPLIANCE, STATE, USER
from appliance.web.security import csrf_token, may

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def setup(app: web.Application, tz_name: str) -> None:
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    zone = ZoneInfo(tz_name)
    env.filters["localtime"] = lambda v, fmt="%Y-%m-%d %H:%M:%S": _localtime(v, zone, fmt)
    env.filters["filesize"] = filesize
    env.filters["duration"] = duration
    env.filters["drift"] = drift
    env.filters["rate"] = lambda v: f"{(v or 0) / 1e6:.1f} MB/s"


def _localtime(value: object, zone: ZoneInfo, fmt: str) -> str:
    if not value:
        return ""
    try:
        dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if dt.tzinfo is None:
        return dt.strftime(fmt)
    return dt.astimezone(zone).strftime(fmt)


def filesize(n: object) -> str:
    if n is None:
        return ""
    size = float(n)  # type: ignore[arg-type]
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(n)


def duration(seconds: object) -> str:
    if seconds is None:
        return ""
    s = int(round(float(seconds)))  # type: ignore[arg-type]
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def drift(seconds: float) -> str:
    """A camera clock's drift: seconds when small, hours and minutes when large."""
    if abs(seconds) < 120:
        return f"{seconds:+.1f} s"
    sign = "+" if seconds > 0 else "−"
    minutes = int(abs(seconds) // 60)
    h, m = divmod(minutes, 60)
    return f"{sign}{h} h {m:02d} min ({seconds:+.0f} s)" if h else f"{sign}{m} min ({seconds:+.0f} s)"


async def render(request: web.Request, template: str, context: dict | None = None,
                 status: int = 200) -> web.Response:
    app = request.app[APPLIANCE]
    state = request.app[STATE]
    session = await get_session(request)
    lang = i18n.language(request)
    user = request.get(USER)
    ctx = {
        "t": i18n.translator(lang), "lang": lang, "user": user, "csrf_token": csrf_token(session),
        "can": lambda name: name in state.names and may(state.names[name], user),
        "station": app.config.station, "version": __version__, "path": request.path,
        "path_qs": request.path_qs,
    }
    ctx.update(context or {})
    response = aiohttp_jinja2.render_template(template, request, ctx, status=status)
    response.headers["Content-Language"] = i18n.HTML_LANG[lang]
    return response


def int_param(value: str | None) -> int | None:
    """A decimal id from a form or query, or None (never an exception)."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 18:
        return None
    return int(value.strip())
