"""The ``directory`` backend: the vault's layout on a plain folder.

For a laptop, a trial or the demo. Files are read-only (0444) and committed session
folders are made read-only (0555); there are no snapshots, so :meth:`seal` returns None
and nothing stops root from changing a file: ``appliance verify`` is what catches it.
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.errors import VaultError
from appliance.vault.base import Vault, close_folders
from appliance.vault.layout import CATALOG, DISCS, MEDIA, QUARANTINE


class DirectoryVault(Vault):
    backend = "directory"

    def prepare(self) -> None:
        for sub in (MEDIA, QUARANTINE, CATALOG, DISCS):
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise VaultError(f"{self.root / sub}: cannot create: {exc.strerror}") from None
        if not os.access(self.root / "media", os.W_OK):
            raise VaultError(f"{self.root / 'media'}: not writable")

    def seal(self, session_dir: Path, session_id: str) -> str | None:
        close_folders(session_dir)
        return None

    def health(self) -> str:
        return "ONLINE" if os.access(self.root, os.W_OK) else "READONLY"
