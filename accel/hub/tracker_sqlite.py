"""The tracker's live table in the usage SQLite file (WAL): the hub's default.

Owns the SQL of the ``tracker_peers`` table in the file the usage counts use (beside the store,
or ``--usage-db PATH``), so the ``--workers`` of one hub, and hubs on one machine over
one store, hand out each other's announces. Writes go through one connection on one
thread and reads through another (a SQLite connection stays on the thread that made it;
WAL lets the reads go on while another process writes). Times are the wall clock
(``time.time()``): every process sharing a SQLite file runs on one machine.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from accel.errors import UsageDbError
from accel.hub.tracker import PeerSeen
from accel.hub.tracker_table import DEFAULT_MAX_NODES, dedupe_holds

__all__ = ["SqlitePeers"]

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tracker_peers ("
    " node_id TEXT NOT NULL, model_id TEXT NOT NULL, version TEXT NOT NULL,"
    " url TEXT NOT NULL, zone TEXT NOT NULL, complete REAL NOT NULL,"
    " holds INTEGER NOT NULL, expires_at REAL NOT NULL, draw REAL NOT NULL,"
    " PRIMARY KEY (node_id, model_id, version)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS tracker_peers_by_zone"
    " ON tracker_peers (model_id, version, holds, zone, draw)",
    "CREATE INDEX IF NOT EXISTS tracker_peers_by_draw"
    " ON tracker_peers (model_id, version, holds, draw)",
)

# The groups of accel.hub.tracker.peer_rank (`holds` is complete > 0), each read in
# `draw` order by an index whose leading columns it fixes: no row of another group read.
_GROUPS = (
    ("tracker_peers_by_zone", "holds = 1 AND zone = ?"),
    ("tracker_peers_by_draw", "holds = 1 AND zone <> ?"),
    ("tracker_peers_by_draw", "holds = 0"),
)


def _window_sql(index: str, group: str, side: str) -> str:
    return (
        f"SELECT node_id, url, zone, complete FROM tracker_peers INDEXED BY {index}"
        f" WHERE model_id = ? AND version = ? AND {group} AND draw {side} ?"
        " AND expires_at > ? AND node_id <> ? ORDER BY draw LIMIT ?"
    )


_WINDOWS = tuple((_window_sql(i, g, ">="), _window_sql(i, g, "<")) for i, g in _GROUPS)


class SqlitePeers:
    """The live peers in the SQLite file ``path`` (its table made on :meth:`open`)."""

    def __init__(
        self,
        path: Path,
        *,
        max_nodes: int = DEFAULT_MAX_NODES,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        #: the wall clock (tests pass their own, to compare with the in-memory Tracker)
        self.clock = clock
        self.max_nodes = max_nodes
        self.busy_timeout_s = busy_timeout_s
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accel-peers-w")
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accel-peers-r")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._next_sweep = 0.0
        self._full = False
        self._rng = random.Random()

    @property
    def description(self) -> str:
        return str(self.path)

    def _error(self, doing: str, exc: BaseException) -> UsageDbError:
        return UsageDbError(f"the usage database {self.path}: {doing}: {exc}", url=str(self.path))

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T], doing: str) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except (sqlite3.Error, OSError) as exc:
            raise self._error(doing, exc) from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        for attempt in range(100):  # workers making the file at once: BUSY at once
            try:
                # WAL (the usage counts' open sets it too): asks go on during a write
                conn.execute("PRAGMA journal_mode=WAL")
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    for sql in _SCHEMA:
                        conn.execute(sql)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)
        self._writer = conn

    def _open_reader(self) -> None:
        self._reader = self._connect()

    async def open(self) -> None:
        await self._run(self._writes, self._open_writer, "cannot make the peers table")
        await self._run(self._reads, self._open_reader, "cannot open")

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete expired rows and see whether the table is full: once per ``ttl``."""
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM tracker_peers WHERE expires_at <= ?", (now,))
        (nodes,) = conn.execute("SELECT count(DISTINCT node_id) FROM tracker_peers").fetchone()
        self._full = int(nodes) >= self.max_nodes

    def _announce(
        self, node_id: str, url: str, zone: str, holds: list[tuple[str, str, float]], ttl: float
    ) -> bool:
        conn = self._writer
        assert conn is not None, "SqlitePeers.open() was not awaited"
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + ttl
            self._sweep(conn, now)
        if self._full:
            known = conn.execute(
                "SELECT 1 FROM tracker_peers WHERE node_id = ? LIMIT 1", (node_id,)
            )
            if known.fetchone() is None:
                return False
        expires = now + ttl
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM tracker_peers WHERE node_id = ?", (node_id,))
            conn.executemany(
                "INSERT INTO tracker_peers"
                " (node_id, model_id, version, url, zone, complete, holds, expires_at, draw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (node_id, m, v, url, zone, c, int(c > 0), expires, self._rng.random())
                    for m, v, c in holds
                ],
            )
        return True

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
        return await self._run(
            self._writes,
            lambda: self._announce(node_id, url, zone, rows, ttl),
            "cannot record the announce",
        )

    def _candidates(
        self, model_id: str, version: str, zone: str, k: int, exclude: str
    ) -> list[PeerSeen]:
        conn = self._reader
        assert conn is not None, "SqlitePeers.open() was not awaited"
        now = self.clock()
        out: list[PeerSeen] = []
        for rank, windows in enumerate(_WINDOWS):
            if len(out) >= k:  # choose_peers takes nothing from a later group then
                break
            start = self._rng.random()
            found = 0
            for sql in windows:  # from a random point on, then round from the start
                params = (model_id, version, *((zone,) if rank < 2 else ()), start, now, exclude)
                rows = conn.execute(sql, (*params, k - found)).fetchall()
                out += [PeerSeen(str(n), str(u), str(z), float(c)) for n, u, z, c in rows]
                found += len(rows)
                if found >= k:
                    break
        return out

    async def candidates(
        self, model_id: str, version: str, *, zone: str, k: int, exclude: str
    ) -> list[PeerSeen]:
        return await self._run(
            self._reads,
            lambda: self._candidates(model_id, version, zone, k, exclude),
            "cannot read the peers",
        )

    async def close(self) -> None:
        for pool, attr in ((self._writes, "_writer"), (self._reads, "_reader")):
            conn: sqlite3.Connection | None = getattr(self, attr)
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(pool, conn.close)
                setattr(self, attr, None)
            pool.shutdown(wait=True)
