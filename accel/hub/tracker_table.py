"""The tracker's live table, shared by every hub process over one usage database.

Owns the interface of the shared peer table (:class:`PeerTable`) and which one a hub
opens (:func:`open_peer_table`): the same store its usage counts use, so whatever shares
the counts shares the peers. That is the store's SQLite file by default
(:class:`~accel.hub.tracker_sqlite.SqlitePeers`: the ``--workers`` of one hub, and
hubs on one machine over one store directory) or PostgreSQL with ``--usage-db
postgresql://...`` (:class:`~accel.hub.tracker_pg.PostgresPeers`: several hubs behind a
load balancer). A node that announced to one process is then handed out by every other.

A row per (node id, model id, version): url, zone, completeness and ``expires_at``.
An announce replaces the node's rows whole, in one transaction. Expiry is in the
queries (``expires_at > now``), so a node that stopped announcing is gone after its TTL
whoever answers; expired rows are deleted now and then (at most once per TTL per
process), only to keep the table small.

An ask must stay cheap with 10,000 holders of one version, so it never reads them all:
each row carries ``draw``, a random number drawn again at every announce, and each of
:func:`~accel.hub.tracker.choose_peers`' three groups (same zone holding something,
other zones holding something, holding nothing yet: :func:`~accel.hub.tracker.peer_rank`,
which the SQL must follow) is read as the ``k`` rows after a random point in ``draw``
order (round to the start if short), through an index: O(k) per ask. A later group is
read only while the earlier ones hold fewer than ``k`` (choose_peers would take none of
it). Those candidates go to ``choose_peers``, which orders and shuffles them. Within one
heartbeat a holder's chance to be in a window is k/n give or take 1/sqrt(k) of it (the
gaps between draws); draws change every ``ttl / 3``, so over a few heartbeats every
holder is handed out as often as any other.
Never knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from accel.hub.tracker import PeerSeen

__all__ = ["DEFAULT_MAX_NODES", "PeerTable", "dedupe_holds", "open_peer_table"]

#: the most nodes a table lists; past it, new nodes are refused (known ones renew)
DEFAULT_MAX_NODES = 100_000


class PeerTable(Protocol):
    """Where the live peers are. Methods raise :class:`~accel.errors.UsageDbError` when the
    database cannot be used now."""

    @property
    def description(self) -> str:
        """What to show a person (no password)."""
        ...

    async def open(self) -> None:
        """Connect (the schema is made here or by the usage database's migrations)."""
        ...

    async def announce(
        self,
        node_id: str,
        url: str,
        zone: str,
        holds: Sequence[tuple[str, str, float]],
        *,
        ttl: float,
    ) -> bool:
        """Replace ``node_id``'s rows by ``holds`` ((model id, version, complete 0..1),
        no key twice), each listed for ``ttl`` s; one transaction. False when the table
        is full of other nodes."""
        ...

    async def candidates(
        self, model_id: str, version: str, *, zone: str, k: int, exclude: str
    ) -> list[PeerSeen]:
        """Up to ``k`` live holders of each of choose_peers' groups in rank order (a later
        group only while the earlier ones hold fewer than ``k``), never ``exclude``."""
        ...

    async def close(self) -> None: ...


def dedupe_holds(
    holds: Sequence[tuple[str, str, float]],
) -> list[tuple[str, str, float]]:
    """One entry per (model id, version), the last one listed winning (as the in-memory
    table does), completeness clamped to 0..1; sorted, so concurrent writers take row
    locks in one order."""
    last: dict[tuple[str, str], float] = {}
    for model_id, version, complete in holds:
        last[(model_id, version)] = min(1.0, max(0.0, complete))
    return [(m, v, c) for (m, v), c in sorted(last.items())]


def open_peer_table(spec: str | Path, *, max_nodes: int = DEFAULT_MAX_NODES) -> PeerTable:
    """The table in the usage database ``spec``: a ``postgresql://`` (or ``postgres://``)
    URL, or else the path of a SQLite file."""
    text = str(spec)
    if text.startswith(("postgresql://", "postgres://")):
        from accel.hub.tracker_pg import PostgresPeers

        return PostgresPeers(text, max_nodes=max_nodes)
    from accel.hub.tracker_sqlite import SqlitePeers

    return SqlitePeers(Path(text), max_nodes=max_nodes)
