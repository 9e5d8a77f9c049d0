"""Hash algorithms used for evidence: SHA-256 always, SM3 (GB/T 32905) where configured.

Both come from OpenSSL through :mod:`hashlib`, which releases the GIL on large
buffers, so hashing in worker threads really runs in parallel with the copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.errors import ConfigError

SUPPORTED = ("sha256", "sm3")


@dataclass(frozen=True)
class Digests:
    """The hex digests of one file, by algorithm name."""

    values: dict[str, str]

    @property
    def sha256(self) -> str:
        return self.values["sha256"]

    def get(self, algorithm: str) -> str | None:
        return self.values.get(algorithm)

    def mismatches(self, other: "Digests") -> list[str]:
        """Algorithms present in both whose values differ."""
        return [a for a, v in self.values.items() if a in other.values and other.values[a] != v]


class MultiHasher:
    """Feeds the same bytes to several hash algorithms at once."""

    def __init__(self, algorithms: Sequence[str]) -> None:
        self._hashers = {name: new_hash(name) for name in algorithms}

    def update(self, data: bytes | memoryview) -> None:
        for h in self._hashers.values():
            h.update(data)

    def digests(self) -> Digests:
        return Digests({name: h.hexdigest() for name, h in self._hashers.items()})


def new_hash(algorithm: str) -> "hashlib._Hash":
    """A fresh hash object; SM3 needs an OpenSSL that provides it."""
    if algorithm not in SUPPORTED:
        raise ConfigError(f"unknown hash algorithm {algorithm!r}; supported: {', '.join(SUPPORTED)}")
    try:
        return hashlib.new(algorithm)
    except ValueError:
        raise ConfigError(f"this system's OpenSSL does not provide {algorithm}") from None


def hash_bytes(data: bytes, algorithms: Iterable[str] = ("sha256",)) -> Digests:
    """Digests of an in-memory buffer (manifests, small files)."""
    hasher = MultiHasher(list(algorithms))
    hasher.update(data)
    return hasher.digests()
