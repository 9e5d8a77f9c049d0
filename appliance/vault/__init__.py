"""Where evidence lives: the vault backends, the crash-safe copier, integrity checks."""

from __future__ import annotations

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.vault.base import Vault, VaultSpace


def open_vault(config: Config) -> Vault:
    """The vault backend the configuration names."""
    if config.vault.backend == "directory":
        from appliance.vault.directory import DirectoryVault

        return DirectoryVault(config)
    if config.vault.backend == "zfs":
        try:
            from appliance.vault.zfs import ZfsVault
        except ImportError:
            raise ConfigError("vault.backend: the zfs backend is not available in this build") from None
        return ZfsVault(config)
    raise ConfigError(f"vault.backend: unknown backend {config.vault.backend!r}")


__all__ = ["Vault", "VaultSpace", "open_vault"]
