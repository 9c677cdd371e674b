"""The hub's peer tracker: which nodes hold which versions, and whom to hand to whom.

Owns the live table of announced peers (node id, URL, zone, the versions each holds and
how complete each is), their expiry (an announce is a heartbeat: a node that stops
announcing is gone after ``ttl`` seconds), and the choice of up to K peers for one
asker (:func:`choose_peers`: same zone first, shuffled so that a thousand askers do not
all read from the same first peer, peers with nothing yet last). Pure: values in, values
out, the clock and the random source passed in, so the fleet simulation runs the very
code the hub runs. Never does I/O and never knows about HTTP (``peerapi.py`` does).

:class:`Tracker` is the table of one process (the simulation's, and the reference for
the semantics); a hub keeps its live table in its usage database instead
(:mod:`accel.hub.tracker_table`), so every worker and every hub over that database
shares it, and hands what it reads there to :func:`choose_peers`.

Kraken's tracker hands out peers by a priority policy and Dragonfly's scheduler by a
scored one; ours is deliberately the simplest that spreads load: a node never trusts a
peer's bytes (each block is checked against the hub's blake3 digests), so the tracker
need only make good guesses, never right ones.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_PEERS_ANSWERED",
    "PeerSeen",
    "Tracker",
    "choose_peers",
    "peer_rank",
]

#: seconds an announce keeps a node listed; nodes announce every ``ttl / 3``
DEFAULT_TTL_S = 30.0
#: the most peers one answer carries, whatever the asker asks for
MAX_PEERS_ANSWERED = 50


class _Zoned(Protocol):
    @property
    def zone(self) -> str: ...

    @property
    def complete(self) -> float: ...


P = TypeVar("P", bound=_Zoned)


def peer_rank(complete: float, peer_zone: str, zone: str) -> int:
    """The group of a peer for an asker in ``zone``: 0 same zone and holding something,
    1 another zone and holding something, 2 holding nothing yet."""
    return 2 if complete <= 0 else (0 if peer_zone == zone else 1)


def choose_peers(candidates: Sequence[P], *, zone: str, k: int, rng: random.Random) -> list[P]:
    """Up to ``k`` of ``candidates`` for an asker in ``zone``.

    Order: peers of the asker's zone that hold something, then other zones' that hold
    something, then those that hold nothing yet (they will soon: a fleet pre-seeding
    one model starts with every node at zero). Each group is shuffled, so askers
    spread over the peers instead of all reading from the first one announced.
    """
    if k <= 0:
        return []
    groups: tuple[list[P], list[P], list[P]] = ([], [], [])
    for peer in candidates:
        groups[peer_rank(peer.complete, peer.zone, zone)].append(peer)
    chosen: list[P] = []
    for group in groups:
        if len(chosen) >= k:
            break
        rng.shuffle(group)
        chosen.extend(group[: k - len(chosen)])
    return chosen


@dataclass(frozen=True)
class PeerSeen:
    """One peer as an asker sees it: where to read, its zone, how much of the version it
    holds (0..1, by bytes; 1 = whole and verified)."""

    node_id: str
    url: str
    zone: str
    complete: float


@dataclass
class _Node:
    url: str
    zone: str
    expires: float
    holds: dict[tuple[str, str], float] = field(default_factory=dict)


class Tracker:
    """The live peer table of one hub. Methods take ``now`` (a monotonic clock reading)."""

    def __init__(self, *, ttl: float = DEFAULT_TTL_S, max_nodes: int = 100_000) -> None:
        self.ttl = ttl
        self.max_nodes = max_nodes
        self._nodes: dict[str, _Node] = {}
        # (model id, version) -> node ids holding it: an ask reads one entry, not every
        # node. A dict, not a set: its order is the order of announces, so an ask with a
        # seeded rng answers the same every run (the simulation's need) with no sort.
        self._holders: dict[tuple[str, str], dict[str, None]] = {}
        self._next_sweep = 0.0
        self.announces = 0
        self.asks = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def announce(
        self,
        node_id: str,
        url: str,
        zone: str,
        holds: Iterable[tuple[str, str, float]],
        *,
        now: float,
    ) -> bool:
        """Record (or renew) ``node_id``: it serves at ``url`` and holds, for each
        ``(model_id, version, complete)``, that fraction of the version. An announce
        replaces the node's previous one whole (a version it no longer lists, e.g. one
        removed, is no longer handed out). False when the table is full of other nodes."""
        self.announces += 1
        self._sweep(now)
        old = self._nodes.get(node_id)
        if old is None and len(self._nodes) >= self.max_nodes:
            return False
        if old is not None:
            self._unindex(node_id, old)
        node = _Node(url=url, zone=zone, expires=now + self.ttl)
        for model_id, version, complete in holds:
            key = (model_id, version)
            node.holds[key] = min(1.0, max(0.0, complete))
            self._holders.setdefault(key, {})[node_id] = None
        self._nodes[node_id] = node
        return True

    def withdraw(self, node_id: str) -> None:
        """Forget ``node_id`` now (a node shutting down cleanly says so)."""
        node = self._nodes.pop(node_id, None)
        if node is not None:
            self._unindex(node_id, node)

    def peers(
        self,
        model_id: str,
        version: str,
        *,
        zone: str = "",
        k: int = 10,
        exclude: str = "",
        now: float,
        rng: random.Random,
    ) -> list[PeerSeen]:
        """Up to ``k`` live peers holding ``model_id`` ``version`` for an asker in
        ``zone`` (never the asker itself, ``exclude``), by :func:`choose_peers`."""
        self.asks += 1
        self._sweep(now)
        live: list[PeerSeen] = []
        for node_id in self._holders.get((model_id, version), ()):
            node = self._nodes[node_id]
            if node_id == exclude or node.expires <= now:
                continue
            complete = node.holds[(model_id, version)]
            live.append(PeerSeen(node_id, node.url, node.zone, complete))
        return choose_peers(live, zone=zone, k=min(k, MAX_PEERS_ANSWERED), rng=rng)

    def _unindex(self, node_id: str, node: _Node) -> None:
        for key in node.holds:
            holders = self._holders.get(key)
            if holders is not None:
                holders.pop(node_id, None)
                if not holders:
                    del self._holders[key]

    def _sweep(self, now: float) -> None:
        """Drop expired nodes, at most once per ttl/3: cost spread over many calls."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.ttl / 3
        for node_id in [n for n, node in self._nodes.items() if node.expires <= now]:
            self.withdraw(node_id)
