"""What one simulated fleet is (:class:`FleetConfig`) and what a run of it measured
(:class:`FleetResult`): values, no simulation (that is :mod:`bench.fleet.sim`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from accel.fetch.sources import DEFAULT_MAX_CONNECTIONS
from accel.hub.tracker import DEFAULT_TTL_S

__all__ = ["BLOCK", "FleetConfig", "FleetResult", "piece_size"]

MiB = 1 << 20
#: the hub's blake3 block (accel.hub.publish.DEFAULT_BLOCK_SIZE): a piece is a run of them
BLOCK = 16 * MiB


def piece_size(model_bytes: int, max_pieces: int = 400) -> int:
    """The simulation's transfer unit: the smallest 16 MiB x 2^k with at most
    ``max_pieces`` pieces (3 GB: 16 MiB; 10 GB: 32 MiB; 100 GB: 256 MiB)."""
    size = BLOCK
    while math.ceil(model_bytes / size) > max_pieces:
        size *= 2
    return size


@dataclass(frozen=True)
class FleetConfig:
    """One simulated fleet. Rates in bytes per second, times in seconds."""

    nodes: int
    model_bytes: int
    peers: bool = True
    piece_bytes: int = 0  # 0: piece_size(model_bytes)
    node_down: float = 25e9 / 8
    node_up: float = 25e9 / 8
    store_egress: float = 40e9 / 8
    #: per store connection (an S3 GET's own limit); inf: none
    store_conn_rate: float = math.inf
    zone_size: int = 250
    #: each zone's uplink to the core, each way (store traffic enters through it too)
    zone_uplink: float = 100e9 / 8
    k: int = 10
    #: sources a node keeps besides the store (peers learned by several asks)
    max_known_peers: int = 20
    ttl: float = DEFAULT_TTL_S
    announce_interval: float = 0.0  # 0: ttl / 3, as the hub tells nodes
    ask_interval: float = 0.0  # 0: the announce interval
    #: the next ask after an answer with fewer than K peers
    ask_retry: float = 1.0
    #: a node asks each peer's ``?have`` this often while downloading, and sooner (at
    #: most every ``have_min_age``) for a peer whose last answer offers it nothing
    have_refresh: float = 0.25
    have_min_age: float = 0.05
    connections: int = 8
    max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS
    #: the store's own per-source cap in a node's policy once peers are on (0: the same
    #: as every source's, max_connections_per_source)
    store_connections: int = 0
    peer_max_clients: int = 32
    #: when a node's peers hold nothing it lacks: "free" gives every free connection to
    #: the store (it never waits on peers alone); "idle" only while no peer transfer of
    #: its own is running (it waits for those, then for the next ?have)
    #: "useful": only while none of its usable peers holds a block it lacks (the store
    #: as the last resort in the strict sense)
    store_fallback: Literal["free", "idle", "useful"] = "free"
    #: the store answers at most this many requests at once (0: no limit); the others
    #: get a 503 and the node leaves the store alone for ``store_retry`` seconds (the
    #: engine's backoff), reading its peers meanwhile
    store_max_clients: int = 0
    store_retry: float = 1.0
    start_spread: float = 1.0
    liars: int = 0
    seed: int = 0
    batch_fraction: float = 0.02
    min_step: float = -1.0  # <0: 1% of a piece's time at a node's fair share
    tracker: Literal["hub", "index"] = "hub"
    # --- the host model (bench/fleet/hosts.py); the defaults leave it out: one node per
    # host, CPU never binding, links carrying payload at their rate, no request latency
    #: nodes per host, consecutive ids (0: all on one host); they share its CPU
    nodes_per_host: int = 1
    #: each host's cores (CPU-seconds per second); 0: CPU is not modelled
    host_cores: float = 0.0
    #: the store (the hub) runs on host 0 and spends that host's CPU on what it sends
    store_on_host: bool = False
    #: CPU-seconds per GiB: an install's on what it receives, a node daemon's on what it
    #: serves to peers, the hub's on what it sends (bench/fleet/cpucost.py measures them)
    cpu_recv: float = 0.0
    cpu_peer_send: float = 0.0
    cpu_store_send: float = 0.0
    #: CPU-seconds of an install's start-up before its first request (process start,
    #: imports, the manifest), shared with the host's other start-ups
    startup_cpu: float = 0.0
    #: payload per byte on the wire (TCP/IP/Ethernet headers: 1448 / 1514 at MTU 1500
    #: with TCP timestamps); every link's cap is multiplied by it
    wire_efficiency: float = 1.0
    #: seconds from a request to its first byte (a loaded round trip)
    request_latency: float = 0.0

    def resolved(self) -> FleetConfig:
        """Defaults filled in (piece size, intervals, the window's minimum)."""
        piece = self.piece_bytes or piece_size(self.model_bytes)
        announce = self.announce_interval or self.ttl / 3
        min_step = self.min_step
        if min_step < 0:
            min_step = 0.01 * piece / (self.node_down / self.connections)
        return replace(
            self,
            piece_bytes=piece,
            announce_interval=announce,
            ask_interval=self.ask_interval or announce,
            min_step=min_step,
        )


@dataclass
class FleetResult:
    """What one run measured."""

    config: FleetConfig
    ready: np.ndarray  # seconds from each node's own start to its last piece
    ready_at: np.ndarray  # absolute time each node was ready
    store_bytes: float
    peer_bytes: float
    discarded_bytes: float
    delivered: np.ndarray  # good bytes each node received
    announces: list[float] = field(default_factory=list)
    asks: list[float] = field(default_factory=list)
    transfers: int = 0
    windows: int = 0
    quarantined: int = 0
    have_asks: int = 0
    races: int = 0
    store_refused: int = 0
    wall_s: float = 0.0

    @property
    def store_x(self) -> float:
        """Store egress in model sizes."""
        return self.store_bytes / self.config.model_bytes

    def pct(self, q: float) -> float:
        return float(np.percentile(self.ready, q))

    def tracker_rate(self) -> tuple[float, float]:
        """(mean, peak 1-second) tracker requests per second while nodes download."""
        times = np.array(self.announces + self.asks)
        if times.size == 0:
            return 0.0, 0.0
        end = float(self.ready_at.max())
        busy = times[times <= end]
        bins = np.bincount(busy.astype(np.int64)) if busy.size else np.zeros(1)
        return float(busy.size / max(end, 1e-9)), float(bins.max())
