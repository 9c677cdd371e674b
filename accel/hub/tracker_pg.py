"""The tracker's live table in PostgreSQL (``--usage-db postgresql://...``): several hubs.

Owns the SQL of ``accel_peers`` (made by migration 3 of
:data:`~accel.hub.usage_pg.MIGRATIONS`, unlogged: see there) and its own small pool of
autocommit connections, apart from the usage counts' so a slow ranking never holds up
a heartbeat. An announce is one statement, so one transaction and one round trip: the
node's rows not in the announce are deleted and the others upserted, all with
``expires_at = now() + ttl``. Times are the database's clock (``now()``), never a hub's:
hubs on several machines agree on what is expired even when their clocks do not.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from accel.errors import UsageDbError
from accel.hub.tracker import PeerSeen
from accel.hub.tracker_table import DEFAULT_MAX_NODES, dedupe_holds
from accel.hub.usage_pg import connect_kwargs, db_error, migrate, redact_url

__all__ = ["PostgresPeers"]

log = logging.getLogger("accel.hub")

_ANNOUNCE = """
WITH new (model_id, version, complete) AS (
    SELECT * FROM unnest(%(models)s::text[], %(versions)s::text[], %(completes)s::float8[])
), gone AS (
    DELETE FROM accel_peers p WHERE p.node_id = %(node)s AND NOT EXISTS (
        SELECT 1 FROM new WHERE new.model_id = p.model_id AND new.version = p.version)
)
INSERT INTO accel_peers
    (node_id, model_id, version, url, zone, complete, holds, expires_at, draw)
SELECT %(node)s, model_id, version, %(url)s, %(zone)s, complete, complete > 0,
       now() + %(ttl)s * interval '1 second', random()
FROM new
ON CONFLICT (node_id, model_id, version) DO UPDATE SET
    url = excluded.url, zone = excluded.zone, complete = excluded.complete,
    holds = excluded.holds, expires_at = excluded.expires_at, draw = excluded.draw
"""

# The groups of accel.hub.tracker.peer_rank (`holds` is complete > 0), each read in
# `draw` order by an index whose leading columns it fixes: no row of another group read.
_GROUPS = ("holds = true AND zone = %(zone)s", "holds = true AND zone <> %(zone)s", "holds = false")


def _window_sql(group: str, side: str) -> str:
    return (
        "SELECT node_id, url, zone, complete FROM accel_peers"
        f" WHERE model_id = %(model)s AND version = %(version)s AND {group}"
        f" AND draw {side} %(start)s AND expires_at > now() AND node_id <> %(exclude)s"
        " ORDER BY draw LIMIT %(k)s"
    )


_WINDOWS = tuple((_window_sql(g, ">="), _window_sql(g, "<")) for g in _GROUPS)


class PostgresPeers:
    """The live peers in the PostgreSQL database ``url``."""

    def __init__(self, url: str, *, max_nodes: int = DEFAULT_MAX_NODES, max_size: int = 4) -> None:
        self.url = url
        self.max_nodes = max_nodes
        self.max_size = max_size
        self._pool: Any = None
        self._next_sweep = 0.0
        self._full = False
        self._rng = random.Random()

    @property
    def description(self) -> str:
        return redact_url(self.url)

    def _error(self, doing: str, exc: BaseException) -> UsageDbError:
        return db_error(self.description, doing, exc)

    async def open(self) -> None:
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        try:
            conn = await psycopg.AsyncConnection.connect(self.url, **connect_kwargs())
        except (psycopg.Error, OSError, ValueError) as exc:
            raise self._error("cannot connect", exc) from exc
        try:
            async with conn:
                await migrate(conn)  # done already when the usage counts opened first
        except psycopg.Error as exc:
            raise self._error("cannot create its tables", exc) from exc
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.max_size,
            kwargs={**connect_kwargs(), "autocommit": True},
            timeout=2.0,  # an announce waits this long for a connection, then is a 503
            reconnect_timeout=0,  # as the usage pool: back as soon as the database is
            open=False,
            name="accel-peers",
        )
        await self._pool.open(wait=False)

    async def _sweep(self, conn: Any, ttl: float) -> None:
        """Delete expired rows and see whether the table is full: once per ``ttl``."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + ttl
        await conn.execute("DELETE FROM accel_peers WHERE expires_at <= now()")
        cur = await conn.execute("SELECT count(DISTINCT node_id) FROM accel_peers")
        row = await cur.fetchone()
        self._full = row is not None and int(row[0]) >= self.max_nodes

    async def announce(
        self,
        node_id: str,
        url: str,
        zone: str,
        holds: Sequence[tuple[str, str, float]],
        *,
        ttl: float,
    ) -> bool:
        rows = dedupe_holds(holds)
        params = {
            "node": node_id,
            "url": url,
            "zone": zone,
            "ttl": ttl,
            "models": [m for m, _, _ in rows],
            "versions": [v for _, v, _ in rows],
            "completes": [c for _, _, c in rows],
        }
        try:
            async with self._pool.connection() as conn:
                await self._sweep(conn, ttl)
                if self._full:
                    cur = await conn.execute(
                        "SELECT 1 FROM accel_peers WHERE node_id = %s LIMIT 1", (node_id,)
                    )
                    if await cur.fetchone() is None:
                        return False
                await conn.execute(_ANNOUNCE, params)
        except Exception as exc:
            raise self._error("cannot record the announce", exc) from exc
        return True

    async def candidates(
        self, model_id: str, version: str, *, zone: str, k: int, exclude: str
    ) -> list[PeerSeen]:
        out: list[PeerSeen] = []
        try:
            async with self._pool.connection() as conn:
                for windows in _WINDOWS:
                    if len(out) >= k:  # choose_peers takes nothing from a later group then
                        break
                    params = {"model": model_id, "version": version, "zone": zone,
                              "exclude": exclude, "start": self._rng.random()}  # fmt: skip
                    found = 0
                    for sql in windows:  # from a random point on, then round from the start
                        cur = await conn.execute(sql, {**params, "k": k - found})
                        rows = await cur.fetchall()
                        out += [PeerSeen(str(n), str(u), str(z), float(c)) for n, u, z, c in rows]
                        found += len(rows)
                        if found >= k:
                            break
        except Exception as exc:
            raise self._error("cannot read the peers", exc) from exc
        return out

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
