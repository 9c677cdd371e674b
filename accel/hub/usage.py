"""Usage counts of models, in SQLite (WAL) inside the store, written by one writer.

Owns counting install requests and answering the ranking. Every count is queued in
memory and a single writer task folds whatever is queued into one transaction
(``INSERT ... ON CONFLICT DO UPDATE SET request_count = request_count + n``) on one
dedicated thread, so a burst of a thousand reports costs a handful of commits and none
is lost; since the update adds a delta, several hub processes over one store also add
up. Callers that need durability (POST /api/model-usage) await their batch's commit.
Never knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from accel.schema import RankingEntry

__all__ = ["UsageCounter", "rank"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    model_id TEXT PRIMARY KEY,
    request_count INTEGER NOT NULL DEFAULT 0
)
"""


def rank(counts: dict[str, int], limit: int | None = None) -> list[RankingEntry]:
    """Most requested first, ties broken by model id; ranks are 1, 2, 3, ... in that order."""
    ordered = sorted(((-n, mid) for mid, n in counts.items() if n > 0))
    if limit is not None:
        ordered = ordered[:limit]
    return [
        RankingEntry(model_id=mid, request_count=-neg, rank=i)
        for i, (neg, mid) in enumerate(ordered, start=1)
    ]


class UsageCounter:
    """Counts per model id, persisted in ``db_path``; use inside a running event loop."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accel-usage")
        self._conn: sqlite3.Connection | None = None
        self._pending: Counter[str] = Counter()
        self._waiters: list[asyncio.Future[None]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    # -- lifecycle -----------------------------------------------------------------------
    def _open(self) -> None:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
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

    async def start(self) -> None:
        """Open the database (creating it) and start the writer."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._open)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._writer(), name="accel-usage-writer")

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the database."""
        if self._task is not None:
            await self.flush()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            await loop.run_in_executor(self._pool, self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)

    # -- counting ------------------------------------------------------------------------
    def count(self, model_id: str, n: int = 1) -> asyncio.Future[None]:
        """Queue ``n`` requests for ``model_id``; the future resolves once committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[model_id] += n
        self._waiters.append(fut)
        assert self._wake is not None, "UsageCounter.start() was not awaited"
        self._wake.set()
        return fut

    async def flush(self) -> None:
        """Wait until everything counted so far is committed."""
        if self._pending or self._waiters:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            assert self._wake is not None
            self._wake.set()
            await fut

    def _commit(self, batch: dict[str, int]) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO usage(model_id, request_count) VALUES (?, ?) "
                "ON CONFLICT(model_id) DO UPDATE SET "
                "request_count = request_count + excluded.request_count",
                sorted(batch.items()),
            )
        self.commits += 1

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = dict(self._pending), Counter()
            waiters, self._waiters = self._waiters, []
            try:
                if batch:
                    await loop.run_in_executor(self._pool, self._commit, batch)
            except Exception as exc:
                # Put the counts back: they are retried with the next batch.
                self._pending.update(batch)
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                await asyncio.sleep(0.05)
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    # -- reading -------------------------------------------------------------------------
    def _read_all(self) -> dict[str, int]:
        assert self._conn is not None
        rows = self._conn.execute("SELECT model_id, request_count FROM usage").fetchall()
        return {str(mid): int(n) for mid, n in rows}

    async def counts(self) -> dict[str, int]:
        """Every committed count (after committing what is queued)."""
        await self.flush()
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read_all)

    async def ranking(
        self, limit: int | None = None, known: set[str] | None = None
    ) -> list[RankingEntry]:
        """The ranking, optionally restricted to ``known`` model ids (those in the catalog)."""
        counts = await self.counts()
        if known is not None:
            counts = {k: v for k, v in counts.items() if k in known}
        return rank(counts, limit)
