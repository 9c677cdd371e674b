"""The peer tracker's table and choice (accel/hub/tracker.py), pure: a clock and a random
source passed in, no I/O."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from accel.hub.tracker import MAX_PEERS_ANSWERED, PeerSeen, Tracker, choose_peers

V = ("m", "1")


def _announce(
    t: Tracker, node: str, *, zone: str = "a", complete: float = 1.0, now: float = 0.0
) -> None:
    t.announce(node, f"http://{node}:1", zone, [(*V, complete)], now=now)


def _ids(peers: list[PeerSeen]) -> list[str]:
    return [p.node_id for p in peers]


def test_an_announced_node_is_handed_out_until_its_ttl_ends() -> None:
    t = Tracker(ttl=30)
    _announce(t, "n1", now=0)
    rng = random.Random(1)
    assert _ids(t.peers(*V, now=29.9, rng=rng)) == ["n1"]
    assert t.peers(*V, now=30.0, rng=rng) == []  # expired: not handed out
    _announce(t, "n1", now=31)  # a heartbeat brings it back
    assert _ids(t.peers(*V, now=32, rng=rng)) == ["n1"]


def test_the_asker_never_gets_itself_and_other_versions_are_apart() -> None:
    t = Tracker()
    _announce(t, "n1")
    _announce(t, "n2")
    t.announce("n3", "http://n3:1", "a", [("m", "2", 1.0)], now=0)
    got = t.peers(*V, exclude="n1", now=1, rng=random.Random(0))
    assert _ids(got) == ["n2"]
    assert _ids(t.peers("m", "2", now=1, rng=random.Random(0))) == ["n3"]


def test_an_announce_replaces_the_last_one_whole() -> None:
    t = Tracker()
    t.announce("n1", "http://n1:1", "a", [("m", "1", 1.0), ("m", "2", 0.5)], now=0)
    t.announce("n1", "http://n1:2", "b", [("m", "2", 0.75)], now=1)  # m@1 removed
    rng = random.Random(0)
    assert t.peers("m", "1", now=2, rng=rng) == []
    assert t.peers("m", "2", now=2, rng=rng) == [PeerSeen("n1", "http://n1:2", "b", 0.75)]
    t.withdraw("n1")
    assert t.peers("m", "2", now=2, rng=rng) == [] and len(t) == 0


def test_same_zone_first_then_other_zones_then_peers_holding_nothing() -> None:
    t = Tracker()
    for i in range(5):
        _announce(t, f"far{i}", zone="b")
        _announce(t, f"near{i}", zone="a")
        _announce(t, f"empty{i}", zone="a", complete=0.0)
    got = _ids(t.peers(*V, zone="a", k=12, now=1, rng=random.Random(3)))
    assert sorted(got[:5]) == [f"near{i}" for i in range(5)]
    assert sorted(got[5:10]) == [f"far{i}" for i in range(5)]
    assert len(got) == 12 and all(n.startswith("empty") for n in got[10:])
    assert len(t.peers(*V, k=1000, now=1, rng=random.Random(0))) == 15
    for i in range(60):
        _announce(t, f"more{i}")
    assert len(t.peers(*V, k=1000, now=1, rng=random.Random(0))) == MAX_PEERS_ANSWERED


def test_askers_spread_over_the_peers_instead_of_all_taking_the_first() -> None:
    t = Tracker()
    for i in range(10):
        _announce(t, f"n{i}")
    rng = random.Random(7)
    first = Counter(t.peers(*V, k=3, now=1, rng=rng)[0].node_id for _ in range(5000))
    assert set(first) == {f"n{i}" for i in range(10)}
    assert max(first.values()) < 2 * min(first.values())  # ~500 each, not 5000 on one


def test_a_full_table_refuses_new_nodes_but_renews_known_ones_and_sweeps_the_dead() -> None:
    t = Tracker(ttl=3, max_nodes=2)
    _announce(t, "n1", now=0)
    _announce(t, "n2", now=0)
    assert not t.announce("n3", "http://n3:1", "a", [], now=1)
    assert t.announce("n1", "http://n1:1", "a", [], now=1)
    # both expire by now=5; the sweep frees the table and the next node gets in
    assert t.announce("n3", "http://n3:1", "a", [(*V, 1.0)], now=5)
    assert len(t) == 1 and _ids(t.peers(*V, now=5, rng=random.Random(0))) == ["n3"]


def test_completeness_is_clamped_to_zero_one() -> None:
    t = Tracker()
    t.announce("n1", "http://n1:1", "a", [(*V, 7.0)], now=0)
    t.announce("n2", "http://n2:1", "a", [(*V, -1.0)], now=0)
    got = {p.node_id: p.complete for p in t.peers(*V, now=0, rng=random.Random(0))}
    assert got == {"n1": 1.0, "n2": 0.0}


_node = st.tuples(
    st.sampled_from([f"n{i}" for i in range(12)]),
    st.sampled_from(["a", "b", "c"]),
    st.floats(0, 1),
    st.floats(0, 100),  # when it announced
)


@given(
    announces=st.lists(_node, max_size=40),
    zone=st.sampled_from(["a", "b", "z"]),
    k=st.integers(0, 20),
    now=st.floats(0, 140),
    seed=st.integers(0, 2**16),
)
def test_every_answer_is_live_unique_bounded_and_ordered(
    announces: list[tuple[str, str, float, float]], zone: str, k: int, now: float, seed: int
) -> None:
    t = Tracker(ttl=30)
    last: dict[str, tuple[str, float, float]] = {}
    for node, z, complete, at in sorted(announces, key=lambda a: a[3]):
        t.announce(node, f"http://{node}:1", z, [(*V, complete)], now=at)
        last[node] = (z, complete, at)
    got = t.peers(
        *V,
        zone=zone,
        k=k,
        exclude="n0",
        now=max([now, *(a[3] for a in announces)]),
        rng=random.Random(seed),
    )
    end = max([now, *(a[3] for a in announces)])
    live = {n for n, (_, _, at) in last.items() if at + 30 > end and n != "n0"}
    assert len(got) == min(k, len(live), MAX_PEERS_ANSWERED)
    assert len({p.node_id for p in got}) == len(got) and {p.node_id for p in got} <= live
    ranks = [2 if p.complete <= 0 else (0 if p.zone == zone else 1) for p in got]
    assert ranks == sorted(ranks)


def test_choose_peers_takes_any_zoned_values() -> None:
    peers = [PeerSeen(str(i), "u", "a" if i % 2 else "b", 1.0) for i in range(6)]
    assert choose_peers(peers, zone="a", k=0, rng=random.Random(0)) == []
    got = choose_peers(peers, zone="a", k=3, rng=random.Random(0))
    assert {p.zone for p in got} == {"a"}
