"""Typed keys of the web application's state (aiohttp ``AppKey``s, no string keys)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from appliance.daemon import Appliance
    from appliance.burner.jobs import BurnService
    from appliance.web.security import LoginThrottle, WebState

APPLIANCE = web.AppKey("appliance", "Appliance")
STATE = web.AppKey("web_state", "WebState")
THROTTLE = web.AppKey("login_throttle", "LoginThrottle")
BURNS = web.AppKey("burns", "BurnService")
#: the task that keeps the daily list of overdue and not-returned devices
KEEPER = web.AppKey("deadline_keeper", asyncio.Task)
#: the logged-in account of a request (None: nobody)
USER = web.RequestKey("user", object)
