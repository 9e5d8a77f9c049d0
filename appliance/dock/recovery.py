"""Start-up: find the sessions a crash or power cut left unfinished and resolve them.

A session whose catalog commit happened is completed (sealed again, which is idempotent)
and marked done, without clock sync or wipe since its camera may be gone. Any other is
marked interrupted: its verified files stay, its temporary files are removed, and the
next docking of the camera resumes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.catalog import sessions as cat
from appliance.catalog.db import Catalog
from appliance.vault.base import Vault
from appliance.vault.copier import remove_partials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    """What start-up did with one unfinished session."""

    session_id: str
    was: str
    now: str
    partials_removed: int


def recover_unfinished(catalog: Catalog, vault: Vault) -> list[Recovered]:
    """Resolve every session left in an active state. Blocking: call it before serving."""
    out = []
    for s in catalog.run(cat.unfinished):
        folder = vault.root / s.vault_dir
        removed = remove_partials(folder) if folder.exists() else []
        committed = catalog.run(lambda c, sid=s.id: c.execute(
            "SELECT manifest_sha256 FROM sessions WHERE id = ?", (sid,)).fetchone()[0])
        if committed:
            snapshot = vault.seal(folder, s.id)
            catalog.run(cat.record_snapshot, s.id, snapshot)
            catalog.run(cat.set_state, s.id, "done",
                        "completed after a restart; camera clock not set and camera not wiped")
            now = "done"
        else:
            catalog.run(cat.set_state, s.id, "interrupted", f"daemon restarted during '{s.state}'")
            now = "interrupted"
        log.warning("recovered session %s: %s -> %s (%d temporary files removed)",
                    s.id, s.state, now, len(removed))
        out.append(Recovered(s.id, s.state, now, len(removed)))
    return out
