"""The tracker's live table in the usage SQLite file (WAL): the hub's default.

Owns the SQL of the ``peers`` table in the file the usage counts use (beside the store,
or ``--usage-db PATH``), so the ``--workers`` of one hub, and hubs on one machine over
one store, hand out each other's announces. Writes go through one connection on one
thread and reads through another (a SQLite connection stays on the thread that made it;
WAL lets the reads go on while another process writes). Times are the wall clock
(``time.time()``): every process sharing a SQLite file runs on one machine.
"""

from __future__ import annotations

import asyncio
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
    "CREATE TABLE IF NOT EXISTS peers ("
    " node_id TEXT NOT NULL, model_id TEXT NOT NULL, version TEXT NOT NULL,"
    " url TEXT NOT NULL, zone TEXT NOT NULL, complete REAL NOT NULL,"
    " expires_at REAL NOT NULL,"
    " PRIMARY KEY (node_id, model_id, version)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS peers_by_version ON peers (model_id, version, expires_at)",
)

_LIVE = "model_id = ? AND version = ? AND expires_at > ? AND node_id <> ?"
# The three groups of accel.hub.tracker.peer_rank, each sampled at random, k at most.
_CANDIDATES = " UNION ALL ".join(
    f"SELECT * FROM (SELECT node_id, url, zone, complete FROM peers WHERE {_LIVE} AND {cond}"
    " ORDER BY random() LIMIT ?)"
    for cond in ("complete > 0 AND zone = ?", "complete > 0 AND zone <> ?", "complete <= 0")
)


class SqlitePeers:
    """The live peers in the SQLite file ``path`` (its table made on :meth:`open`)."""

    def __init__(
        self, path: Path, *, max_nodes: int = DEFAULT_MAX_NODES, busy_timeout_s: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.max_nodes = max_nodes
        self.busy_timeout_s = busy_timeout_s
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accel-peers-w")
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accel-peers-r")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._next_sweep = 0.0
        self._full = False

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
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL is set by the usage counts' open
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        for attempt in range(100):  # workers creating the table at once: BUSY at once
            try:
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
            conn.execute("DELETE FROM peers WHERE expires_at <= ?", (now,))
        (nodes,) = conn.execute("SELECT count(DISTINCT node_id) FROM peers").fetchone()
        self._full = int(nodes) >= self.max_nodes

    def _announce(
        self, node_id: str, url: str, zone: str, holds: list[tuple[str, str, float]], ttl: float
    ) -> bool:
        conn = self._writer
        assert conn is not None, "SqlitePeers.open() was not awaited"
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + ttl
            self._sweep(conn, now)
        if self._full:
            known = conn.execute("SELECT 1 FROM peers WHERE node_id = ? LIMIT 1", (node_id,))
            if known.fetchone() is None:
                return False
        expires = now + ttl
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM peers WHERE node_id = ?", (node_id,))
            conn.executemany(
                "INSERT INTO peers (node_id, model_id, version, url, zone, complete, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(node_id, m, v, url, zone, c, expires) for m, v, c in holds],
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
        live = (model_id, version, time.time(), exclude)
        params = (*live, zone, k, *live, zone, k, *live, k)
        rows = conn.execute(_CANDIDATES, params).fetchall()
        return [PeerSeen(str(n), str(u), str(z), float(c)) for n, u, z, c in rows]

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
