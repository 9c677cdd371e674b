"""Usage counts of models: one folding writer per hub over a database (SQLite or PostgreSQL).

Owns counting install requests and answering the ranking. Every count is queued in
memory and a single writer task folds whatever is queued into one batch, committed in
one transaction (``request_count = request_count + n``), so a burst of a thousand
reports costs a handful of commits and none is lost; since the update adds a delta,
several hub processes (``--workers``) or several hubs over one database add up.

Where the counts live is a :class:`UsageDb`: :class:`~accel.hub.usage_sqlite.SqliteUsage`
(the embedded default, a file) or :class:`~accel.hub.usage_pg.PostgresUsage` (one
database for several hubs). The writer does not know which.

Exactness when the database fails: each batch has an id, and a database that can be
asked (PostgreSQL) records it in the same transaction, so a batch whose COMMIT may or
may not have landed is sent again under the same id and counted once. A report that
waits for its commit (``POST /api/model-usage``, :meth:`UsageCounter.report`) and is not
committed within its timeout is taken back out of the batch, only when the batch is
known not to have been committed, and fails with :class:`~accel.errors.UsageDbError`: a
report answered 200 is counted exactly once, a report answered 503 not at all. Counts
nobody waits for (manifest fetches) stay queued until they are committed. Never knows
about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from accel.errors import UsageDbError
from accel.schema import RankingEntry

__all__ = ["CommitFailed", "UsageCounter", "UsageDb", "open_usage_db", "rank"]

log = logging.getLogger("accel.hub")

#: What a failed commit taught the writer about its batch: "absent" (the database said
#: it is not committed, nor was it before), "unknown" (nothing learned: e.g. no
#: connection), "maybe" (the COMMIT was sent and its answer lost).
Outcome = Literal["absent", "unknown", "maybe"]


class CommitFailed(Exception):
    """A batch was not (or maybe not) committed; ``outcome`` says what is known."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome: Outcome = outcome


class UsageDb(Protocol):
    """Where the counts live. Every method may be slow (run off the event loop inside)."""

    @property
    def description(self) -> str:
        """What to show a person (no password)."""
        ...

    async def open(self) -> None:
        """Connect (and create or migrate the schema); a UsageDbError line if it cannot."""
        ...

    async def commit(self, batch_id: str, counts: dict[str, int]) -> None:
        """Add ``counts`` in one transaction, once per ``batch_id``; raises CommitFailed."""
        ...

    async def read_all(self) -> dict[str, int]:
        """Every committed count; raises UsageDbError."""
        ...

    async def ping(self) -> None:
        """One round trip; raises UsageDbError when the database cannot be reached."""
        ...

    async def close(self) -> None: ...


def open_usage_db(spec: str | Path) -> UsageDb:
    """``postgresql://...`` (or ``postgres://``) names a PostgreSQL database; anything else
    is the path of a SQLite file."""
    text = str(spec)
    if text.startswith(("postgresql://", "postgres://")):
        from accel.hub.usage_pg import PostgresUsage

        return PostgresUsage(text)
    from accel.hub.usage_sqlite import SqliteUsage

    return SqliteUsage(Path(text))


def rank(counts: dict[str, int], limit: int | None = None) -> list[RankingEntry]:
    """Most requested first, ties broken by model id; ranks are 1, 2, 3, ... in that order."""
    ordered = sorted(((-n, mid) for mid, n in counts.items() if n > 0))
    if limit is not None:
        ordered = ordered[:limit]
    return [
        RankingEntry(model_id=mid, request_count=-neg, rank=i)
        for i, (neg, mid) in enumerate(ordered, start=1)
    ]


@dataclass
class _Waiter:
    """Someone awaiting a commit: a report (``model_id``, ``n``, may be taken back after
    ``deadline``) or a flush (``model_id`` None: no count of its own)."""

    fut: asyncio.Future[None]
    model_id: str | None = None
    n: int = 0
    deadline: float | None = None


@dataclass
class _Batch:
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    counts: Counter[str] = field(default_factory=Counter)
    waiters: list[_Waiter] = field(default_factory=list)
    #: a COMMIT of this id may have landed: it must be sent again as it is
    maybe_committed: bool = False


class UsageCounter:
    """Counts per model id in ``db`` (a UsageDb, or a SQLite file's path); use inside a
    running event loop."""

    def __init__(self, db: UsageDb | Path | str, *, report_timeout_s: float = 5.0) -> None:
        self.db: UsageDb = open_usage_db(db) if isinstance(db, str | Path) else db
        self.report_timeout_s = report_timeout_s
        self._pending = _Batch()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        #: the last commit's failure, None once a commit went through
        self.failing: BaseException | None = None

    @property
    def db_path(self) -> Path | None:
        """The SQLite file, when the counts are in one."""
        path = getattr(self.db, "path", None)
        return path if isinstance(path, Path) else None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the database (creating it) and start the writer."""
        await self.db.open()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._writer(), name="accel-usage-writer")

    async def close(self, *, flush_timeout_s: float = 10.0) -> None:
        """Commit what is queued (waiting at most ``flush_timeout_s``), stop, close."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self.flush(), flush_timeout_s)
            except (TimeoutError, UsageDbError):
                lost = sum(self._pending.counts.values())
                log.warning("usage database %s: %d counts not committed", self.db.description, lost)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.db.close()

    # -- counting ------------------------------------------------------------------------
    def _queue(self, waiter: _Waiter) -> asyncio.Future[None]:
        if waiter.model_id is not None:
            self._pending.counts[waiter.model_id] += waiter.n
        self._pending.waiters.append(waiter)
        assert self._wake is not None, "UsageCounter.start() was not awaited"
        self._wake.set()
        return waiter.fut

    def count(self, model_id: str, n: int = 1) -> asyncio.Future[None]:
        """Queue ``n`` requests for ``model_id``; the future resolves once committed.

        Never taken back: a count nobody waits for stays queued until the database
        takes it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return self._queue(_Waiter(fut, model_id, n))

    async def report(self, model_id: str, n: int = 1) -> None:
        """Count ``n`` requests and return once committed; if that takes longer than
        ``report_timeout_s`` because the database fails, raise UsageDbError and count
        nothing (so the reporter can send it again)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + self.report_timeout_s
        await self._queue(_Waiter(fut, model_id, n, deadline))

    async def flush(self) -> None:
        """Wait until everything counted so far is committed."""
        if self._pending.counts or self._pending.waiters:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            await self._queue(_Waiter(fut))

    def _take(self) -> _Batch:
        batch, self._pending = self._pending, _Batch()
        return batch

    def _rebatch(self, batch: _Batch) -> _Batch:
        """After a failure known to have committed nothing: give up the reports past their
        deadline (they are not counted), fold in what was queued since, under a new id."""
        now = asyncio.get_running_loop().time()
        kept: list[_Waiter] = []
        for w in batch.waiters:
            if w.deadline is not None and now >= w.deadline and w.model_id is not None:
                batch.counts[w.model_id] -= w.n
                if not w.fut.done():
                    w.fut.set_exception(
                        UsageDbError(
                            f"the usage database {self.db.description} did not take this "
                            f"report within {self.report_timeout_s:g} s: it was not counted "
                            f"({self.failing})",
                            hint="send the report again",
                            url=self.db.description,
                        )
                    )
            else:
                kept.append(w)
        fresh = self._take()
        counts = batch.counts + fresh.counts  # Counter addition drops zeros
        return _Batch(counts=counts, waiters=kept + fresh.waiters)

    async def _writer(self) -> None:
        assert self._wake is not None
        batch: _Batch | None = None
        failures = 0
        while True:
            if batch is None:
                await self._wake.wait()
                self._wake.clear()
                batch = self._take()
            try:
                if batch.counts:
                    await self.db.commit(batch.id, dict(batch.counts))
            except CommitFailed as exc:
                if self.failing is None:
                    log.warning("usage database %s: %s", self.db.description, exc)
                self.failing = exc
                failures += 1
                if exc.outcome == "maybe":
                    batch.maybe_committed = True
                elif exc.outcome == "absent":
                    batch.maybe_committed = False
                if not batch.maybe_committed:
                    batch = self._rebatch(batch)
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)))
                continue
            if batch.counts:  # an empty batch (all its reports given up) proved nothing
                if self.failing is not None:
                    log.warning("usage database %s: committing again", self.db.description)
                self.failing, failures = None, 0
                self.commits += 1
            for w in batch.waiters:
                if not w.fut.done():
                    w.fut.set_result(None)
            batch = None

    # -- reading -------------------------------------------------------------------------
    async def counts(self, *, flush_timeout_s: float = 2.0) -> dict[str, int]:
        """Every committed count, after committing what this hub has queued (waiting at
        most ``flush_timeout_s`` for that: a failing database is a UsageDbError)."""
        try:
            await asyncio.wait_for(self.flush(), flush_timeout_s)
        except TimeoutError:
            raise UsageDbError(
                f"the usage database {self.db.description} does not commit ({self.failing})",
                url=self.db.description,
            ) from None
        return await self.db.read_all()

    async def ranking(
        self, limit: int | None = None, known: set[str] | None = None
    ) -> list[RankingEntry]:
        """The ranking, optionally restricted to ``known`` model ids (those in the catalog)."""
        counts = await self.counts()
        if known is not None:
            counts = {k: v for k, v in counts.items() if k in known}
        return rank(counts, limit)

    async def ping(self) -> None:
        """Raise UsageDbError when the database cannot be reached now."""
        await self.db.ping()
