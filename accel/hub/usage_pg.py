"""Usage counts in PostgreSQL (``--usage-db postgresql://...``): one database, several hubs.

Owns the PostgreSQL side of the counts: a psycopg 3 connection pool, the versioned
schema (:data:`MIGRATIONS`, applied once under a transaction-level advisory lock by
whichever hub starts first; the others wait on the lock, then find nothing to do), and
the idempotent commit: each batch's id goes into ``accel_usage_batches`` in the same
transaction as its counts, so a batch sent again after a lost COMMIT answer is counted
once. Every hub reads the same table, so a count committed by one hub is in the
ranking of every hub at its next read. Passwords never leave this module in a message.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from accel.errors import UsageDbError
from accel.hub.usage import CommitFailed, Outcome

__all__ = ["MIGRATIONS", "PostgresUsage", "connect_kwargs", "db_error", "migrate", "redact_url"]

log = logging.getLogger("accel.hub")
# The pool says so at every failed connection attempt; the writer says it once per outage.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

#: (version, what it does, statements). Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "usage counts",
        (
            "CREATE TABLE accel_usage ("
            " model_id text PRIMARY KEY,"
            " request_count bigint NOT NULL CHECK (request_count >= 0))",
        ),
    ),
    (
        2,
        "batch receipts: a batch sent again is counted once",
        (
            "CREATE TABLE accel_usage_batches ("
            " batch_id text PRIMARY KEY,"
            " hub text NOT NULL,"
            " committed_at timestamptz NOT NULL DEFAULT now())",
            "CREATE INDEX accel_usage_batches_committed_at ON accel_usage_batches (committed_at)",
        ),
    ),
    (
        3,
        "the peer tracker's live table (accel/hub/tracker_pg.py)",
        (
            # Unlogged: heartbeats, written hundreds of times a second and worth nothing
            # after a crash (every node announces again within ttl/3), so no WAL for them.
            # `draw`: a random key drawn at each announce; asks read k rows after a random
            # point of it, through these indexes (accel/hub/tracker_table.py says why).
            "CREATE UNLOGGED TABLE accel_peers ("
            " node_id text NOT NULL, model_id text NOT NULL, version text NOT NULL,"
            " url text NOT NULL, zone text NOT NULL, complete double precision NOT NULL,"
            " holds boolean NOT NULL, expires_at timestamptz NOT NULL,"
            " draw double precision NOT NULL, PRIMARY KEY (node_id, model_id, version))",
            "CREATE INDEX accel_peers_by_zone"
            " ON accel_peers (model_id, version, holds, zone, draw)",
            "CREATE INDEX accel_peers_by_draw ON accel_peers (model_id, version, holds, draw)",
        ),
    ),
)

#: pg_advisory_xact_lock key of the migrations ("accel" + "mig" as a number)
MIGRATION_LOCK = 0x616363656C6D6967

#: batch receipts older than this are deleted: a batch is retried for seconds, not hours
_RECEIPT_KEEP = "1 hour"
_PRUNE_EVERY_S = 600.0

_UPSERT = (
    "INSERT INTO accel_usage (model_id, request_count) VALUES (%s, %s) "
    "ON CONFLICT (model_id) DO UPDATE "
    "SET request_count = accel_usage.request_count + excluded.request_count"
)


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host/db``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def db_error(description: str, doing: str, exc: BaseException) -> UsageDbError:
    """One line for a failure of the database named ``description`` (no password)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UsageDbError(f"usage database {description}: {doing}: {reason}", url=description)


def connect_kwargs() -> dict[str, Any]:
    # Bounded waits everywhere: a database that stops answering must turn into an error
    # (and a 503 / a retried batch), never into a request or a writer that hangs.
    return {
        "connect_timeout": 5,
        "application_name": "accel-hub",
        "options": "-c statement_timeout=15000 -c lock_timeout=10000",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


async def migrate(conn: Any, *, hub: str = "") -> list[int]:
    """Bring the schema to the newest version; returns the versions this call applied.

    One transaction under an advisory lock: hubs starting together apply each migration
    exactly once, and a hub never sees a half-made schema. A database migrated by a newer
    accel (a version this one does not know) is refused rather than written to.
    """
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS accel_schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_by text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM accel_schema_migrations")
        have = {int(row[0]) for row in await cur.fetchall()}
        newest = MIGRATIONS[-1][0]
        if have and max(have) > newest:
            raise UsageDbError(
                f"the usage database has schema version {max(have)}, newer than this "
                f"accel's {newest}",
                hint="upgrade accel on this hub (every hub of a fleet runs the same version)",
            )
        for version, name, statements in MIGRATIONS:
            if version in have:
                continue
            for sql in statements:
                await conn.execute(sql)
            await conn.execute(
                "INSERT INTO accel_schema_migrations (version, name, applied_by) "
                "VALUES (%s, %s, %s)",
                (version, name, hub),
            )
            applied.append(version)
    if applied:
        log.info("usage database: applied schema migrations %s", applied)
    return applied


class PostgresUsage:
    """The counts in the PostgreSQL database ``url``, through a small connection pool."""

    def __init__(self, url: str, *, hub: str = "", max_size: int = 4) -> None:
        self.url = url
        self.hub = hub or _hub_name()
        self.max_size = max_size
        self._pool: Any = None
        self._pruned = 0.0
        #: the versions the start of this hub applied (empty when another hub had)
        self.migrated: list[int] = []

    @property
    def description(self) -> str:
        return redact_url(self.url)

    def _error(self, doing: str, exc: BaseException) -> UsageDbError:
        return db_error(self.description, doing, exc)

    async def open(self) -> None:
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        try:
            # One direct connection first: its error says why (a pool only says "timeout").
            conn = await psycopg.AsyncConnection.connect(self.url, **connect_kwargs())
        except (psycopg.Error, OSError, ValueError) as exc:
            raise self._error("cannot connect", exc) from exc
        try:
            async with conn:
                self.migrated = await migrate(conn, hub=self.hub)
        except psycopg.Error as exc:
            raise self._error("cannot create its tables", exc) from exc
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.max_size,
            kwargs=connect_kwargs(),
            timeout=2.0,  # a request waits this long for a connection, then fails (503)
            # an attempt that fails gives up at once; the next request starts another, so
            # the pool is back as soon as the database is (no backoff grown over an outage)
            reconnect_timeout=0,
            open=False,
            name="accel-usage",
        )
        await self._pool.open(wait=False)

    async def commit(self, batch_id: str, counts: dict[str, int]) -> None:
        outcome: Outcome = "unknown"
        try:
            async with self._pool.connection() as conn:
                cur = conn.cursor()
                await cur.execute(
                    "INSERT INTO accel_usage_batches (batch_id, hub) VALUES (%s, %s) "
                    "ON CONFLICT (batch_id) DO NOTHING",
                    (batch_id, self.hub),
                )
                if cur.rowcount == 0:
                    await conn.rollback()
                    return  # an earlier attempt's COMMIT landed: counted already
                outcome = "absent"  # from here a failure rolls back a batch not there before
                await cur.executemany(_UPSERT, sorted(counts.items()))
                outcome = "maybe"
                await conn.commit()
        except Exception as exc:
            raise CommitFailed(f"commit failed: {exc}", outcome) from exc
        await self._prune()

    async def _prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned < _PRUNE_EVERY_S:
            return
        self._pruned = now
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "DELETE FROM accel_usage_batches WHERE committed_at < now() - %s::interval",
                    (_RECEIPT_KEEP,),
                )
        except Exception as exc:  # only housekeeping: the next prune tries again
            log.warning("usage database %s: pruning batch receipts: %s", self.description, exc)

    async def read_all(self) -> dict[str, int]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute("SELECT model_id, request_count FROM accel_usage")
                rows = await cur.fetchall()
        except Exception as exc:
            raise self._error("cannot read the counts", exc) from exc
        return {str(mid): int(n) for mid, n in rows}

    async def ping(self) -> None:
        try:
            async with self._pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            raise self._error("unreachable", exc) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _hub_name() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
