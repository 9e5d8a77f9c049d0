"""Time as the appliance records it: aware UTC datetimes, stored as ISO 8601 text."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo


def utcnow() -> datetime:
    """The station clock, in UTC."""
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """ISO 8601 with offset, microseconds kept: sorts as text in the catalog."""
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def from_ns(ns: int) -> datetime:
    """A file time in nanoseconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(ns / 1e9, timezone.utc)


def local(dt: datetime, tz_name: str) -> datetime:
    """The same moment in the station's time zone (for folder names and forms)."""
    return dt.astimezone(ZoneInfo(tz_name))


def camera_time(ns: int, tz_name: str) -> datetime:
    """A camera file time as the moment it names.

    A camera's clock is a wall clock without a time zone and FAT stores exactly that; the
    mount presents it as if it were UTC (``tz=UTC``). The station's time zone says what
    moment that wall clock meant.
    """
    wall = datetime.fromtimestamp(ns / 1e9, timezone.utc).replace(tzinfo=None)
    return wall.replace(tzinfo=ZoneInfo(tz_name))
