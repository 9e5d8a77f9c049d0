"""The catalog: SQLite in WAL mode, stored inside the vault.

One connection, used from one worker thread: the event loop hands work to it with
:meth:`Catalog.call` and never blocks on SQLite itself. Command-line tools use the
same object synchronously with :meth:`Catalog.run`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from appliance.catalog.schema import MIGRATIONS
from appliance.errors import CatalogError, VaultFullError

P = ParamSpec("P")
T = TypeVar("T")


class Catalog:
    """The station's catalog database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                         timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise CatalogError(f"{path}: cannot open: {exc}") from None
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # Evidence: a committed transaction must survive a power cut, not only a crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise CatalogError(
                f"{self.path}: schema version {version} is newer than this software "
                f"({len(MIGRATIONS)}); refusing to touch it")
        for number in range(version, len(MIGRATIONS)):
            with self.transaction() as conn:
                self._apply(conn, number)

    def _apply(self, conn: sqlite3.Connection, number: int) -> None:
        for statement in _split_sql(MIGRATIONS[number]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): all of it or none of it."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``fn(conn, *args)`` in one transaction, in the calling thread.

        The catalog shares the vault's disk: SQLite's "disk is full" is the vault being full.
        """
        try:
            with self.transaction() as conn:
                return fn(conn, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise VaultFullError(f"{self.path}: {exc}") from None
            raise

    async def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``fn(conn, *args)`` in one transaction on the catalog thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.run(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            self._conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, current = [], []
    for line in script.splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return [s for s in statements if s.strip(" ;\n")]
