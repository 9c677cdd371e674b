"""Usage counts in a SQLite file (WAL): the embedded default, one machine's hub processes.

Owns the SQL of the counts table and keeping every call on one dedicated thread (a
SQLite connection stays on the thread that made it). A failed transaction is rolled
back, so every commit failure is known to have committed nothing ("absent"); batch ids
are not recorded. Several processes over one file add up: each adds deltas.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from accel.errors import UsageDbError
from accel.hub.usage import CommitFailed

__all__ = ["SqliteUsage"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    model_id TEXT PRIMARY KEY,
    request_count INTEGER NOT NULL DEFAULT 0
)
"""


class SqliteUsage:
    """The counts in ``path`` (created with its table on :meth:`open`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accel-usage")
        self._conn: sqlite3.Connection | None = None

    @property
    def description(self) -> str:
        return str(self.path)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        # Two hub workers opening a new store at once: switching to WAL may answer
        # SQLITE_BUSY at once, without the busy timeout; try again for a while.
        for attempt in range(100):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        try:
            await self._run(self._open)
        except sqlite3.Error as exc:
            raise UsageDbError(
                f"cannot open the usage database {self.path}: {exc}", url=str(self.path)
            ) from exc

    def _commit(self, counts: dict[str, int]) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO usage(model_id, request_count) VALUES (?, ?) "
                "ON CONFLICT(model_id) DO UPDATE SET "
                "request_count = request_count + excluded.request_count",
                sorted(counts.items()),
            )

    async def commit(self, batch_id: str, counts: dict[str, int]) -> None:
        try:
            await self._run(lambda: self._commit(counts))
        except (sqlite3.Error, OSError) as exc:
            raise CommitFailed(str(exc), "absent") from exc  # rolled back by `with conn`

    def _read_all(self) -> dict[str, int]:
        assert self._conn is not None
        rows = self._conn.execute("SELECT model_id, request_count FROM usage").fetchall()
        return {str(mid): int(n) for mid, n in rows}

    async def read_all(self) -> dict[str, int]:
        try:
            return await self._run(self._read_all)
        except sqlite3.Error as exc:
            raise UsageDbError(f"cannot read {self.path}: {exc}", url=str(self.path)) from exc

    async def ping(self) -> None:
        def one() -> None:
            assert self._conn is not None
            self._conn.execute("SELECT count(*) FROM usage").fetchone()

        try:
            await self._run(one)
        except sqlite3.Error as exc:
            raise UsageDbError(f"cannot read {self.path}: {exc}", url=str(self.path)) from exc

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)
