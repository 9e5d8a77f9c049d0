"""Who may use what: the role groups the route table (:mod:`appliance.web.routes`) refers to.

Roles come from the regulation (see :data:`appliance.catalog.users.ROLES`). An officer
sees only recordings of his own cameras (checked where recordings are loaded); the IT
admin manages accounts and settings but never sees evidence content; the legal section
reads the audit log and the registers but changes nothing.
"""

from __future__ import annotations

from typing import Union

PUBLIC = "public"          # no login: the slot board, /metrics, static files, the login page
ANY_USER = "any-user"      # every logged-in account (own password, logout)

Access = Union[str, frozenset]

#: recordings: search, view, play, download (an officer: own recordings only)
EVIDENCE = frozenset({"officer", "device_manager", "leader", "bureau_head", "admin"})
#: tagging, cases, burning (设备管理员)
MANAGE = frozenset({"device_manager", "admin"})
#: cases and the disc register, read
CASES_READ = frozenset({"device_manager", "leader", "bureau_head", "legal", "admin"})
#: the audit log (法规科 inspects; IT watches logins and account changes)
AUDIT = frozenset({"leader", "bureau_head", "legal", "it_admin", "admin"})
#: the health page
HEALTH = frozenset({"device_manager", "leader", "bureau_head", "legal", "it_admin", "admin"})
#: accounts and settings
ADMIN = frozenset({"it_admin", "admin"})
#: the registers and reports of the regulation, read: devices and deadlines, exceptions,
#: releases, judicial access and its register, retention, continuity, supervision reports
#: (the unit head checks, art. 18; the legal section inspects, art. 19)
REGISTERS = frozenset({"device_manager", "leader", "bureau_head", "legal", "admin"})
#: asking and explaining: release requests, exceptions, continuity reviews, confidentiality marks
STAFF = frozenset({"device_manager", "leader", "bureau_head", "admin"})
#: approving exceptions (art. 8), releases (art. 16) and purge lists (art. 7): the leaders.
#: The administrator is a technical account and approves nothing.
APPROVE = frozenset({"leader", "bureau_head"})
#: approving judicial access (art. 17: 局主要负责人) and clearing accounts for marks (art. 3)
BUREAU_HEAD = frozenset({"bureau_head"})


def may(access: Access, role: str | None) -> bool:
    """Whether a role (None: nobody logged in) may use a route with ``access``."""
    if access == PUBLIC:
        return True
    if role is None:
        return False
    return access == ANY_USER or (isinstance(access, frozenset) and role in access)
