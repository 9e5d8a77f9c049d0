"""The values the regulation's workflows read from the configuration, in one place.

Each is read through a small function with a documented default, so that the workflows
(:mod:`appliance.catalog.deadlines`, :mod:`appliance.catalog.retention`) never touch the
configuration themselves. ``config.yaml`` documents both keys; the defaults apply where a
configuration object lacks them:

=============================  ==========================  ===================================
value                          configuration key           default
=============================  ==========================  ===================================
end of the working day         ``station.end_of_day``      18:00 local time (art. 15.1)
retention of ordinary          ``retention.months``        6 months, never less (the national
recordings                                                 six-month minimum)
=============================  ==========================  ===================================
"""

from __future__ import annotations

from datetime import time

END_OF_DAY = time(18, 0)
MIN_RETENTION_MONTHS = 6           # the national rule: ordinary recordings kept at least six months
RETENTION_MONTHS = 6


def _get(config: object, section: str, key: str) -> object | None:
    return getattr(getattr(config, section, None), key, None)


def end_of_day(config: object) -> time:
    """``station.end_of_day`` ("HH:MM", local time), else 18:00."""
    value = _get(config, "station", "end_of_day_time")
    if isinstance(value, time):
        return value
    text = _get(config, "station", "end_of_day")
    if isinstance(text, str) and len(text) == 5 and text[2] == ":":
        try:
            return time(int(text[:2]), int(text[3:]))
        except ValueError:
            pass
    return END_OF_DAY


def retention_months(config: object) -> int:
    """``retention.months``, else 6; never below the national six-month minimum."""
    value = _get(config, "retention", "months")
    months = value if isinstance(value, int) and not isinstance(value, bool) else RETENTION_MONTHS
    return max(MIN_RETENTION_MONTHS, months)


def timezone(config: object) -> str:
    return str(_get(config, "station", "timezone") or "Asia/Shanghai")
