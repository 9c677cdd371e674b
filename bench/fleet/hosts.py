"""The host model: what the nodes' machines add to the network (the calibration's).

The 5-node netns test runs every node (a daemon serving peers and an install), and
the hub, on one 2-core machine: their CPU is one resource they share, each byte an
install receives costs it CPU (HTTP, blake3, the write), each byte a daemon or the hub
sends costs theirs. Here a host is a link like the others, of capacity ``host_cores``
CPU-seconds per second; a flow crosses its receiver's host with weight ``cpu_recv``
(CPU-seconds per byte) and its sender's with ``cpu_peer_send`` or ``cpu_store_send``
(the same host twice when both ends are on it), so at a CPU bottleneck flows share it
as :func:`bench.fleet.fairshare.max_min_rates` shares a weighted link. Also: the
install's start-up CPU before its first request, shared by the host's nodes starting
together; the wire's headers (``wire_efficiency``); and a request's latency.

The CPU figures are whole process trees (an install with its fetch workers, which do
its receiving, blake3 and writes: :mod:`bench.fleet.cpucost`).

The defaults of :class:`~bench.fleet.config.FleetConfig` leave all of it out (one node
per host, CPU never binding), so the large fleets are those of bench/RESULTS.md.
"""

from __future__ import annotations

import math

from bench.fleet.config import FleetConfig

__all__ = ["GiB", "cpu_modelled", "host_of", "hosts", "startup_delay"]

GiB = float(1 << 30)


def cpu_modelled(cfg: FleetConfig) -> bool:
    """The hosts' CPU is a link of the fair share (it has cores to count)."""
    return cfg.host_cores > 0


def hosts(cfg: FleetConfig) -> int:
    """How many hosts the fleet's nodes are on."""
    if cfg.nodes_per_host <= 0:
        return 1
    return max(1, math.ceil(cfg.nodes / cfg.nodes_per_host))


def host_of(cfg: FleetConfig, nid: int) -> int:
    """The host node ``nid`` runs on (consecutive ids share one)."""
    return 0 if cfg.nodes_per_host <= 0 else nid // cfg.nodes_per_host


def startup_delay(cfg: FleetConfig, nid: int) -> float:
    """Seconds from a node's start to its first request: its start-up CPU, at most one
    core, the host's cores shared by its nodes (they start together in the tests)."""
    if cfg.startup_cpu <= 0:
        return 0.0
    if not cpu_modelled(cfg):
        return cfg.startup_cpu
    per = cfg.nodes_per_host if cfg.nodes_per_host > 0 else cfg.nodes
    on_host = min(per, cfg.nodes - host_of(cfg, nid) * per)
    return cfg.startup_cpu * max(1.0, on_host / cfg.host_cores)
