"""Small helpers the workflow pages share: decisions and local times from forms."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from appliance.catalog.approvals import ApprovalError


def decision_of(form) -> bool:  # type: ignore[no-untyped-def]
    """True to approve, False to refuse; anything else is refused as a bad form."""
    value = form.get("decision")
    if value not in ("approve", "refuse"):
        raise ApprovalError("choose approve or refuse")
    return value == "approve"


def local_datetime(text: str, tz: str, what: str = "time") -> datetime:
    """``2026-11-27T08:15`` (a datetime-local field) as a moment in the station's time zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApprovalError(f"{what}: {text!r} is not a date and time like 2026-11-27 08:15") from None
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))
