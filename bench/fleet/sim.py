"""The fleet, simulated: N nodes pre-seed one model from a store and from each other.

A flow-level discrete-event simulation. The unit of transfer is a *piece* (a run of
the model's 16 MiB blake3 blocks; :func:`piece_size` picks 16-256 MiB so a model has at
most ~400 pieces: 10,000 nodes x 10 GB is 3.2 million transfers, which one core
simulates in minutes). Each piece in flight is a flow over links: the sender's uplink
(or the store's egress), the receiver's downlink, and the sender's and receiver's zone
uplinks when it leaves its zone (intra-zone links are wide: only the nodes' own caps
bind there). Rates are max-min fair (:mod:`bench.fleet.fairshare`), not packets.

The policies are the ones the node and the hub run, imported, not copied:

- who to read the next piece from: :class:`accel.fetch.sources.SourcePolicy` (one per
  node; the store is its last resort; measured throughput, demotion and quarantine on
  a bad block, rest after failures), with the engine's "rate a first request by its
  progress after 0.5 s" (``estimated``) and its tail race (``sources_race``: the
  slowest running piece fetched again from a source twice as fast, first wins);
- whom a node learns of: :class:`accel.hub.tracker.Tracker` and its
  :func:`~accel.hub.tracker.choose_peers` (K peers, same zone first, shuffled, TTL).
  Nodes learn of peers only through announces and asks, at the intervals given;
- which piece to ask a source for: the injected :data:`bench.fleet.order.ChunkOrder`
  (a clearly marked stand-in until the node's own rule is on main), or, with
  ``real_order``, that rule itself (``accel.fetch.sources_order.assign``, which
  picks source and block together: :mod:`bench.fleet.assign`).

Levers the node does not have (yet), off by default in :class:`FleetConfig`:
``store_connections`` (the store's own per-source cap), ``store_fallback`` (when a
node whose peers offer nothing may read the store), ``store_max_clients`` (a store
that answers so many requests at once and 503s the rest).

Events: a node starts, a piece transfer ends, a node announces, asks the tracker, or
refreshes what its peers hold (``?have``). Rates are recomputed once per *window*: a
window ends when ``batch_fraction`` of the running flows have changed (ended or
started) and at least ``min_step`` has passed; within it each transfer ends at its
exact time, and a transfer started inside it runs at rate 0 until the next window (a
small, pessimistic error; ``batch_fraction=0, min_step=0`` recomputes at every event
and is exact: the tests hold the default within a few percent of it).

The host model (:mod:`bench.fleet.hosts`, off by default: one node per host, CPU never
binding): nodes sharing a host's CPU (hashing and HTTP, as CPU-seconds per GiB), an
install's start-up, the wire's headers, a request's round trip before its first byte.

Not modelled: TCP slow start, the engine's connection tuner (a fixed number of
connections), multi-block requests to peers, the lag of a node's checkpoint (what its
daemon serves) behind its verified blocks, disk speed, node failures, and what an
install does after its last byte (the SHA256 of the suffix its prefix hasher had not
reached, the filesystem-wide ``syncfs`` before ``ready``, the exit: 2.2-2.8 s in the
5-node netns test, where all five share one disk; bench/fleet/timeline.py measures it).
"""

from __future__ import annotations

import heapq
import math
import random
import time

import numpy as np

from accel.fetch.sources import SourcePolicy, SourceState
from accel.hub.tracker import Tracker
from bench.fleet.assign import RealOrder
from bench.fleet.config import FleetConfig, FleetResult, piece_size
from bench.fleet.fairshare import max_min_rates
from bench.fleet.hosts import GiB, cpu_modelled, host_of, hosts, startup_delay
from bench.fleet.order import ChunkOrder, stand_in_random
from bench.fleet.tracking import IndexTracker

__all__ = ["FleetConfig", "FleetResult", "piece_size", "simulate"]

MODEL_ID, VERSION = "fleet/model", "1"
#: the engine rates a source's first request by its progress after this long
_ESTIMATE_AFTER_S = 0.5
_ESTIMATE_MIN_BYTES = 64 * 1024

#: race a piece only when its source would end it this many times later than the
#: fastest (accel.fetch.sources_race._SLOWER)
_RACE_SLOWER = 2.0

_START, _ANNOUNCE, _ASK, _REFRESH, _FIRST_BYTE = 0, 1, 2, 3, 4


class _Node:
    __slots__ = (
        "active",
        "border",
        "down",
        "flows",
        "front",
        "got",
        "have",
        "inflight",
        "known",
        "lying",
        "name",
        "nid",
        "offset",
        "policy",
        "race",
        "ready",
        "serving",
        "snap",
        "snap_t",
        "src_node",
        "start",
        "store_active",
        "store_wait",
        "up",
        "zi",
        "zone",
    )

    def __init__(self, nid: int, zi: int, full: int, store_conns: int) -> None:
        self.nid = nid
        self.name = f"n{nid}"
        self.zi = zi
        self.zone = f"z{zi}"
        self.have = 0
        self.inflight = 0
        self.active = 0
        self.serving = 0
        self.ready = -1.0
        self.start = 0.0
        self.lying = False
        self.got = 0
        self.offset = 0
        self.store_active = 0
        self.store_wait = 0.0
        self.flows: set[int] = set()
        self.race = -1  # the duplicate flow of this node's tail race, if one runs
        self.border: object = None  # sources_order.BlockOrder, with the real order
        self.front: int | None = None  # the block after the store's last one
        self.policy = SourcePolicy.of(["store"], max_connections=store_conns)
        self.src_node: list[int] = [-1]  # policy index -> peer node (-1: the store)
        self.snap: list[int] = [full]  # what the node last saw each source hold
        self.snap_t: list[float] = [0.0]  # when
        self.known: set[int] = set()
        self.down = 0
        self.up = 0


def simulate(
    cfg: FleetConfig, *, chunk_order: ChunkOrder = stand_in_random, real_order: bool = False
) -> FleetResult:
    """Run one fleet to the end (every node holds the whole model). ``real_order``: the
    node's own ``accel.fetch.sources_order.assign`` picks source and block (when accel
    has it: :func:`bench.fleet.assign.available`) instead of SourcePolicy.pick and
    ``chunk_order``."""
    return _Sim(cfg.resolved(), chunk_order, real_order).run()


class _Sim:
    def __init__(self, cfg: FleetConfig, chunk_order: ChunkOrder, real_order: bool) -> None:
        self.cfg = cfg
        self.order = chunk_order
        #: the order wants, for a peer, the blocks 2+ peers hold (not the union)
        self.rare = getattr(chunk_order, "__name__", "") == "stand_in_rare"
        self.rng = random.Random(cfg.seed)
        n = cfg.nodes
        piece = cfg.piece_bytes
        self.nblocks = nb = math.ceil(cfg.model_bytes / piece)
        self.sizes = [piece] * nb
        self.sizes[-1] = cfg.model_bytes - piece * (nb - 1)
        self.full = (1 << nb) - 1
        zones = max(1, math.ceil(n / cfg.zone_size))
        self.zones = zones
        # links: 0 store egress | 1..n downlinks | n+1..2n uplinks | zone in | zone out |
        # host CPUs (with the host model) | inf
        self.cpu = cpu_modelled(cfg)
        self.width = 6 if self.cpu else 4
        self.caps = np.concatenate(
            [
                np.concatenate(
                    [
                        [cfg.store_egress],
                        np.full(n, cfg.node_down),
                        np.full(n, cfg.node_up),
                        np.full(zones, cfg.zone_uplink),
                        np.full(zones, cfg.zone_uplink),
                    ]
                )
                * cfg.wire_efficiency,
                np.full(hosts(cfg) if self.cpu else 0, cfg.host_cores),
                [np.inf],
            ]
        )
        self.none = len(self.caps) - 1
        self.host0 = 1 + 2 * n + 2 * zones
        self.zin0 = 1 + 2 * n
        self.zout0 = 1 + 2 * n + zones
        store_conns = cfg.max_connections_per_source if cfg.peers else 1 << 16
        if cfg.peers and cfg.store_connections:
            store_conns = cfg.store_connections
        self.nodes = [_Node(i, i // cfg.zone_size, self.full, store_conns) for i in range(n)]
        self.real = RealOrder(nb, piece, cfg.model_bytes) if real_order else None
        for node in self.nodes:
            if self.real is not None and cfg.peers:
                node.policy = self.real.store_policy(store_conns)
                node.border = self.real.block_order(cfg.seed * 100_003 + node.nid)
            node.down = 1 + node.nid
            node.up = 1 + n + node.nid
            node.offset = self.rng.randrange(nb)
        for i in self.rng.sample(range(n), cfg.liars):
            self.nodes[i].lying = True
        self.tracker: Tracker | IndexTracker = (
            Tracker(ttl=cfg.ttl, max_nodes=max(100_000, n))
            if cfg.tracker == "hub"
            else IndexTracker()
        )
        # flows: numpy for what the fair share needs, lists for the rest
        cap = max(1024, n * cfg.connections * 2)
        self.f_links = np.full((cap, self.width), self.none, dtype=np.int64)
        self.f_w = np.ones((cap, self.width)) if self.cpu else None
        #: flows waiting for their first byte (request_latency): flow -> its event's seq
        self.waiting: dict[int, int] = {}
        self.spawn = [0.0] * n
        self.f_rem = np.zeros(cap)
        self.f_rate = np.zeros(cap)
        self.f_cap = np.full(cap, np.inf)
        self.f_alive = np.zeros(cap, dtype=bool)
        self.f_dst = [0] * cap
        self.f_src = [0] * cap
        self.f_peer = [-1] * cap
        self.f_block = [0] * cap
        self.f_t0 = [0.0] * cap
        self.f_size = [0.0] * cap
        self.f_twin = [-1] * cap
        self.t_win = 0.0
        self.store_serving = 0
        self.free = list(range(cap - 1, -1, -1))
        self.freed_later: list[int] = []
        self.measuring: set[int] = set()
        self.heap: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.changes = 0
        self.not_ready = n
        self.res = FleetResult(
            config=cfg,
            ready=np.zeros(n),
            ready_at=np.zeros(n),
            store_bytes=0,
            peer_bytes=0,
            discarded_bytes=0,
            delivered=np.zeros(n, dtype=np.int64),
        )

    # --- events --------------------------------------------------------------------
    def _at(self, t: float, kind: int, nid: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, nid))

    def _announce(self, node: _Node, now: float) -> None:
        complete = node.have.bit_count() / self.nblocks
        self.tracker.announce(
            node.name,
            f"http://{node.name}:7071",
            node.zone,
            [(MODEL_ID, VERSION, complete)],
            now=now,
        )
        self.res.announces.append(now)

    def _ask(self, node: _Node, now: float) -> float:
        """Ask the tracker for peers; the delay until the next ask (sooner when the
        answer held fewer than K: the fleet is still announcing itself)."""
        cfg = self.cfg
        seen = self.tracker.peers(
            MODEL_ID, VERSION, zone=node.zone, k=cfg.k, exclude=node.name, now=now, rng=self.rng
        )
        self.res.asks.append(now)
        added = False
        for p in seen:
            pid = int(p.node_id[1:])
            if pid in node.known or len(node.known) >= cfg.max_known_peers:
                continue
            node.known.add(pid)
            if self.real is not None:
                bits = self.nodes[pid].have
                state = self.real.peer(p.url, cfg.max_connections_per_source, bits)
            else:
                state = SourceState(p.url, max_connections=cfg.max_connections_per_source)
            node.policy = SourcePolicy((*node.policy.sources, state))
            node.src_node.append(pid)
            node.snap.append(self.nodes[pid].have)  # its ?have, asked on learning of it
            node.snap_t.append(now)
            self.res.have_asks += 1
            added = True
        if added:
            self._fill(node, now)
        return cfg.ask_interval if len(seen) >= cfg.k else cfg.ask_retry

    def _refresh(self, node: _Node, now: float) -> None:
        snap = node.snap
        nodes = self.nodes
        for i, pid in enumerate(node.src_node):
            if pid >= 0:
                snap[i] = nodes[pid].have
                node.snap_t[i] = now
        if self.real is not None:
            node.policy = self.real.with_haves(node.policy, snap)
        self.res.have_asks += len(snap) - 1
        self._fill(node, now)

    def _handle(self, kind: int, nid: int, now: float) -> None:
        node = self.nodes[nid]
        cfg = self.cfg
        if kind == _START:
            node.start = self.spawn[nid]
            if cfg.peers:
                self._announce(node, now)
                delay = self._ask(node, now)
                self._at(now + cfg.announce_interval, _ANNOUNCE, nid)
                self._at(now + delay, _ASK, nid)
                self._at(now + cfg.have_refresh, _REFRESH, nid)
            self._fill(node, now)
        elif kind == _ANNOUNCE:
            self._announce(node, now)
            self._at(now + cfg.announce_interval, _ANNOUNCE, nid)
        elif kind == _ASK:
            if node.ready < 0:
                self._at(now + self._ask(node, now), _ASK, nid)
        elif kind == _REFRESH and node.ready < 0:
            self._refresh(node, now)
            self._at(now + cfg.have_refresh, _REFRESH, nid)

    # --- transfers -----------------------------------------------------------------
    def _fill(self, node: _Node, now: float) -> None:
        """Give the node's free connections pieces, as the engine would: the source
        by SourcePolicy.pick, the piece by the chunk order among what it holds; with
        nothing left to ask for, race the slowest running piece on the fastest source."""
        if self.real is not None and self.cfg.peers:
            self._fill_real(node, now)
            return
        cfg = self.cfg
        idle_only = cfg.peers and cfg.store_fallback == "idle"
        useful_only = cfg.peers and cfg.store_fallback == "useful"
        while node.active < cfg.connections:
            want = self.full & ~node.have & ~node.inflight
            if not want:
                if node.race < 0 and len(node.policy.sources) > 1:
                    self._maybe_race(node, now)
                return
            exclude: list[int] = []
            while True:
                i = node.policy.pick(now, exclude)
                if i is None:
                    return
                cand = want & node.snap[i]
                pid = node.src_node[i]
                if not cand and pid >= 0 and now - node.snap_t[i] >= cfg.have_min_age:
                    node.snap[i] = self.nodes[pid].have  # ask its ?have again
                    node.snap_t[i] = now
                    self.res.have_asks += 1
                    cand = want & node.snap[i]
                if cand and pid >= 0 and self.nodes[pid].serving >= cfg.peer_max_clients:
                    # the peer is at --peer-max-clients: a 503, a failure in a row
                    node.policy = node.policy.started(i).failed(i, 0, now)
                    cand = 0
                if cand and pid < 0 and cfg.store_max_clients:
                    if now < node.store_wait:
                        cand = 0
                    elif self.store_serving >= cfg.store_max_clients:
                        node.policy = node.policy.started(i).failed(i, 0, now)
                        node.store_wait = now + cfg.store_retry
                        self.res.store_refused += 1
                        cand = 0
                if cand and pid < 0 and exclude and useful_only:
                    policy = node.policy
                    if any(
                        want & node.snap[j] and policy.sources[j].usable(now)
                        for j in range(1, len(node.snap))
                    ):
                        return  # a peer will do: wait for it, not the store
                if cand:
                    break
                if i in exclude:  # the last resort offered again: nothing left to try
                    return
                exclude.append(i)
                if idle_only and node.active > node.store_active:
                    return
            seen = 0
            if pid < 0:
                for held in node.snap[1:]:
                    seen |= held
            elif self.rare:  # the blocks two or more of its peers hold
                once = 0
                for held in node.snap[1:]:
                    seen |= once & held
                    once |= held
            block = self.order(cand, self.nblocks, self.rng, pid < 0, seen, node.offset)
            self._start(node, i, pid, block, self.sizes[block], now)

    def _fill_real(self, node: _Node, now: float) -> None:
        """The same with the node's own rule: ``sources_order.assign`` picks source
        and block together from the policy's bitmaps (refreshed as ``?have`` is)."""
        cfg = self.cfg
        real = self.real
        assert real is not None
        while node.active < cfg.connections:
            want = self.full & ~node.have & ~node.inflight
            if not want:
                if node.race < 0 and len(node.policy.sources) > 1:
                    self._maybe_race(node, now)
                return
            got = real.choose(node.policy, want, now, node.border, node.front, node.nid)
            if got is None:
                return
            i, block = got
            pid = node.src_node[i]
            if pid >= 0 and self.nodes[pid].serving >= cfg.peer_max_clients:
                node.policy = node.policy.started(i).failed(i, 0, now)
                continue
            if pid < 0:
                node.front = block + 1
            self._start(node, i, pid, block, self.sizes[block], now)

    def _left(self, f: int, now: float) -> float:
        """Bytes flow ``f`` has still to send at ``now`` (inside the current window)."""
        return max(0.0, float(self.f_rem[f] - self.f_rate[f] * (now - self.t_win)))

    def _maybe_race(self, node: _Node, now: float) -> None:
        """The engine's tail race (accel.fetch.sources_race), one at a time: the running
        piece its source would end last, if the fastest other source that holds it
        would end it in under half the time, is fetched again from there; the first
        to end wins and the other is cancelled (its bytes discarded)."""
        best: tuple[float, int, int] | None = None
        policy = node.policy
        for f in node.flows:
            elapsed = now - self.f_t0[f]
            if elapsed < 0.2:
                continue
            size = self.f_size[f]
            left = self._left(f, now)
            own = (size - left) / elapsed
            bit = 1 << self.f_block[f]
            src = self.f_src[f]
            skip = {src} | {j for j, held in enumerate(node.snap) if not held & bit}
            fast = policy.fastest(now, exclude=skip)
            if fast is None:
                continue
            t_fast = policy.seconds_for(fast, int(left))
            if t_fast is None:
                continue
            t_slow = left / own if own > 0 else math.inf
            if t_slow <= _RACE_SLOWER * t_fast:
                continue
            if best is None or t_slow - t_fast > best[0]:
                best = (t_slow - t_fast, f, fast)
        if best is None:
            return
        _, f, fast = best
        dup = self._start(node, fast, node.src_node[fast], self.f_block[f], self._left(f, now), now)
        node.race = dup
        self.f_twin[dup] = f
        self.f_twin[f] = dup
        self.res.races += 1

    def _start(self, node: _Node, i: int, pid: int, block: int, nbytes: float, now: float) -> int:
        if not self.free:
            self._grow()
        f = self.free.pop()
        node.policy = node.policy.started(i)
        if node.policy.sources[i].rate is None:
            self.measuring.add(f)
        node.active += 1
        node.inflight |= 1 << block
        node.flows.add(f)
        row = self.f_links[f]
        row[1] = node.down
        if pid < 0:
            node.store_active += 1
            self.store_serving += 1
            row[0] = 0
            row[2] = self.zin0 + node.zi
            row[3] = self.none
            self.f_cap[f] = self.cfg.store_conn_rate
        else:
            peer = self.nodes[pid]
            peer.serving += 1
            row[0] = peer.up
            if peer.zi != node.zi:
                row[2] = self.zout0 + peer.zi
                row[3] = self.zin0 + node.zi
            else:
                row[2] = self.none
                row[3] = self.none
            self.f_cap[f] = np.inf
        if self.f_w is not None:
            self._on_hosts(f, node.nid, pid)
        self.f_rem[f] = nbytes
        self.f_size[f] = nbytes
        self.f_rate[f] = 0.0
        self.f_alive[f] = True
        if self.cfg.request_latency > 0:  # no byte before a round trip
            self.f_alive[f] = False
            self._at(now + self.cfg.request_latency, _FIRST_BYTE, f)
            self.waiting[f] = self.seq
        self.f_dst[f] = node.nid
        self.f_src[f] = i
        self.f_peer[f] = pid
        self.f_block[f] = block
        self.f_t0[f] = now
        self.f_twin[f] = -1
        self.changes += 1
        self.res.transfers += 1
        return f

    def _on_hosts(self, f: int, nid: int, pid: int) -> None:
        """The host model: flow ``f`` also uses its receiver's and sender's CPU."""
        cfg = self.cfg
        assert self.f_w is not None
        row = self.f_links[f]
        w = self.f_w[f]
        row[4] = self.host0 + host_of(cfg, nid)
        w[4] = cfg.cpu_recv / GiB
        if pid >= 0:
            row[5] = self.host0 + host_of(cfg, pid)
            w[5] = cfg.cpu_peer_send / GiB
        elif cfg.store_on_host:
            row[5] = self.host0
            w[5] = cfg.cpu_store_send / GiB
        else:
            row[5] = self.none
            w[5] = 1.0

    def _first_byte(self, f: int, seq: int) -> None:
        """Flow ``f``'s request has had its round trip: its bytes start to flow."""
        if self.waiting.get(f) == seq:
            del self.waiting[f]
            self.f_alive[f] = True
            self.changes += 1

    def _end(self, f: int, sent: float) -> None:
        """Flow ``f`` stops having sent ``sent`` bytes: its slot, counts, egress."""
        node = self.nodes[self.f_dst[f]]
        self.f_alive[f] = False
        self.waiting.pop(f, None)
        self.freed_later.append(f)
        self.measuring.discard(f)
        node.flows.discard(f)
        self.changes += 1
        node.active -= 1
        pid = self.f_peer[f]
        if pid < 0:
            node.store_active -= 1
            self.store_serving -= 1
            self.res.store_bytes += sent
        else:
            self.nodes[pid].serving -= 1
            self.res.peer_bytes += sent

    def _complete(self, f: int, now: float) -> None:
        node = self.nodes[self.f_dst[f]]
        i = self.f_src[f]
        pid = self.f_peer[f]
        block = self.f_block[f]
        nbytes = self.f_size[f]
        twin = self.f_twin[f]
        self._end(f, nbytes)
        if pid >= 0 and self.nodes[pid].lying:
            # its bytes fail the block's blake3: thrown away, the source demoted
            q_before = node.policy.sources[i].quarantined
            node.policy = node.policy.corrupt(i, int(nbytes))
            self.res.discarded_bytes += nbytes
            if node.policy.sources[i].quarantined and not q_before:
                self.res.quarantined += 1
            if twin < 0:
                node.inflight &= ~(1 << block)
            else:  # the race's other half goes on alone
                self.f_twin[twin] = -1
                node.race = -1
            self._fill(node, now)
            return
        if twin >= 0:
            # the race is won: the other request is cancelled, what it sent of the
            # raced range thrown away (the original keeps the prefix it sent before)
            sent = self.f_size[twin] - self._left(twin, now)
            wasted = sent if node.race == twin else max(0.0, sent - (self.f_size[twin] - nbytes))
            node.policy = node.policy.ended(self.f_src[twin], int(sent), kept=False)
            self._end(twin, sent)
            self.res.discarded_bytes += wasted
            node.race = -1
        elif node.race == f:
            node.race = -1
        node.policy = node.policy.finished(i, int(nbytes), now - self.f_t0[f])
        node.inflight &= ~(1 << block)
        node.have |= 1 << block
        node.got += self.sizes[block]
        if node.have == self.full:
            node.ready = now
            self.not_ready -= 1
            self.res.ready_at[node.nid] = now
            self.res.ready[node.nid] = now - node.start
        else:
            self._fill(node, now)

    def _grow(self) -> None:
        old = len(self.f_rem)
        new = old * 2
        self.f_links = np.concatenate(
            [self.f_links, np.full((old, self.width), self.none, dtype=np.int64)]
        )
        if self.f_w is not None:
            self.f_w = np.concatenate([self.f_w, np.ones((old, self.width))])
        self.f_rem = np.concatenate([self.f_rem, np.zeros(old)])
        self.f_rate = np.concatenate([self.f_rate, np.zeros(old)])
        self.f_cap = np.concatenate([self.f_cap, np.full(old, np.inf)])
        self.f_alive = np.concatenate([self.f_alive, np.zeros(old, dtype=bool)])
        for lst in (self.f_dst, self.f_src, self.f_peer, self.f_block, self.f_twin):
            lst.extend([0] * old)
        self.f_t0.extend([0.0] * old)
        self.f_size.extend([0.0] * old)
        self.free.extend(range(new - 1, old - 1, -1))

    def _estimate(self, now: float) -> None:
        for f in list(self.measuring):
            if now - self.f_t0[f] < _ESTIMATE_AFTER_S:
                continue
            got = self.f_size[f] - self.f_rem[f]
            if got >= _ESTIMATE_MIN_BYTES:
                node = self.nodes[self.f_dst[f]]
                node.policy = node.policy.estimated(self.f_src[f], int(got), now - self.f_t0[f])
                self.measuring.discard(f)

    # --- the loop ------------------------------------------------------------------
    def run(self) -> FleetResult:
        cfg = self.cfg
        wall0 = time.perf_counter()
        for node in self.nodes:
            self.spawn[node.nid] = t0 = self.rng.uniform(0.0, cfg.start_spread)
            self._at(t0 + startup_delay(cfg, node.nid), _START, node.nid)
        t = 0.0
        heap = self.heap
        while self.not_ready:
            idx = np.flatnonzero(self.f_alive)
            if idx.size == 0:
                if not heap:
                    raise RuntimeError("the fleet stalled: nothing running, nothing due")
                t = max(t, heap[0][0])
                fin = np.empty(0)
                t_stop = t
            else:
                weights = None if self.f_w is None else self.f_w[idx]
                rates = max_min_rates(self.f_links[idx], self.caps, self.f_cap[idx], weights)
                self.f_rate[idx] = rates
                with np.errstate(divide="ignore"):
                    fin = t + self.f_rem[idx] / rates
                m = max(1, int(cfg.batch_fraction * idx.size))
                t_m = float(np.partition(fin, m - 1)[m - 1]) if m < idx.size else float(fin.max())
                t_stop = max(t + cfg.min_step, t_m)
            self.res.windows += 1
            self.t_win = t
            m = max(1, int(cfg.batch_fraction * idx.size))
            ends = np.flatnonzero(fin <= t_stop)
            ends = ends[np.argsort(fin[ends], kind="stable")]
            end_t = fin[ends].tolist()
            end_f = idx[ends].tolist()
            self.changes = 0
            t_last = t
            ci = 0
            cut = False
            while True:
                tc = end_t[ci] if ci < len(end_t) else math.inf
                tt = heap[0][0] if heap else math.inf
                te = tc if tc <= tt else tt
                if te > t_stop:
                    break
                if self.changes >= m and te > t + cfg.min_step:
                    cut = True
                    break
                if tc <= tt:
                    f = end_f[ci]
                    ci += 1
                    if not self.f_alive[f]:  # cancelled in this window (a lost race)
                        continue
                    self._complete(f, tc)
                else:
                    _, seq, kind, nid = heapq.heappop(heap)
                    if kind == _FIRST_BYTE:
                        self._first_byte(nid, seq)
                    else:
                        self._handle(kind, nid, tt)
                t_last = te
                if not self.not_ready:
                    break
            t_end = t_last if (cut or not self.not_ready) else max(t_stop, t_last)
            if idx.size:
                still = idx[self.f_alive[idx]]
                self.f_rem[still] = np.maximum(
                    self.f_rem[still] - self.f_rate[still] * (t_end - t), 0.0
                )
            t = t_end
            if self.measuring:
                self._estimate(t)
            self.free.extend(self.freed_later)
            self.freed_later.clear()
        res = self.res
        res.delivered = np.array([node.got for node in self.nodes], dtype=np.int64)
        res.wall_s = time.perf_counter() - wall0
        return res
