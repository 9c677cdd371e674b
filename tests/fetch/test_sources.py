"""The source selection policy (accel/fetch/sources.py): pure, no sockets, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.fetch.sources import (
    QUARANTINE_AFTER,
    TRIAL_REQUESTS,
    SourcePolicy,
    vote_losers,
)

HUB, M1, M2 = "http://hub/f", "http://m1/f", "http://m2/f"


def measured(policy: SourcePolicy, i: int, rate: float) -> SourcePolicy:
    return policy.started(i).finished(i, int(rate), 1.0)


def test_an_untested_mirror_gets_its_trial_chunks_at_once_and_no_more() -> None:
    """A mirror serves the whole file: its first TRIAL_REQUESTS chunks go out at once
    (one at a time left a fast mirror on one connection for its first half second)."""
    p = SourcePolicy.of([HUB, M1])
    p = measured(p, 0, 10e6)
    assert TRIAL_REQUESTS > 1
    for _ in range(TRIAL_REQUESTS):
        assert p.pick(0.0) == 1  # untested: measured before anything else
        p = p.started(1)
    assert p.pick(0.0) == 0  # while it measures, the others take the chunks
    p = p.finished(1, 4 << 20, 0.1)
    assert p[1].rate == pytest.approx((4 << 20) / 0.1)
    assert p.pick(0.0) == 1  # measured (4x faster): ranked like any other


def test_trial_chunks_spread_over_untested_mirrors_within_their_caps() -> None:
    p = measured(SourcePolicy.of([HUB, M1, M2], max_connections=2), 0, 10e6)
    picks = []
    for _ in range(4):
        i = p.pick(0.0)
        assert i is not None
        picks.append(i)
        p = p.started(i)
    assert picks == [1, 2, 1, 2]  # two each: their cap, below TRIAL_REQUESTS
    assert p.pick(0.0) == 0


def test_a_peer_or_a_demoted_source_gets_one_request_at_a_time() -> None:
    p = measured(SourcePolicy.of([HUB, M1], peers=["http://peer/f"]), 0, 10e6)
    assert p[2].trial == 1 and p[1].trial == TRIAL_REQUESTS
    p = measured(p, 1, 80e6).started(1).corrupt(1, 100)  # a bad block: probation
    assert p[1].trial == 1
    assert p.pick(0.0) == 1
    p = p.started(1)
    assert p.pick(0.0) == 0  # on probation: one request until one ends well


def test_first_requests_running_well_rank_their_source_before_they_end() -> None:
    """Ranked by its trial requests' rate so far (a slow mirror is known slow at once),
    but no more requests before one ends well: a fast liar must not take every
    connection before its first block fails."""
    p = measured(SourcePolicy.of([HUB, M1]), 0, 5e6)
    for _ in range(TRIAL_REQUESTS):
        p = p.started(1)
    assert p.pick(0.0) == 0  # M1 is measuring
    p = p.estimated(1, 5 << 20, 0.5)  # 10 MiB/s so far
    assert p[1].rate == pytest.approx((5 << 20) / 0.5)
    assert p[1].measuring and p.pick(0.0) == 0  # ranked, still on trial
    assert p.estimated(1, 1, 1.0)[1].rate == p[1].rate  # a measured source stays as it is
    p = p.finished(1, 4 << 20, 0.4)  # one ended well: it has earned the rest
    assert not p[1].measuring
    p = p.finished(1, 4 << 20, 0.4).finished(1, 4 << 20, 0.4)
    assert p.pick(0.0) == 1  # twice the hub's rate per connection, one running


def test_a_mirror_whose_total_is_capped_gets_the_connections_that_fill_it() -> None:
    """Sixteen connections at 12 MB/s each to a mirror capped at 100 MB/s: the total
    falls short of sixteen times the best rate, so its allowance is cut to what 100
    MB/s needs at 12 MB/s (9) plus one; then, while its total holds up, one more at a
    time. (Sixteen starved some connections for seconds.)"""
    p = SourcePolicy.of([HUB, M1], max_connections=16)
    p = measured(measured(p, 1, 12e6), 0, 10e6)
    assert p[1].allowance == 16  # nothing known about its total yet
    for _ in range(16):
        p = p.started(1)
    p = p.observed(1, 100e6)
    assert p[1].allowance == 10
    for _ in range(6):
        p = p.finished(1, 12 << 20, 1.0)
    assert p[1].active == 10 and p.pick(0.0) == 0  # at its allowance: the hub gets it
    p = p.observed(1, 10 * 11.5e6)  # ten carry nearly ten times the best: one more
    assert p[1].allowance == 11
    p = p.observed(1, 90e6)  # ...and less again: cut
    assert p[1].allowance == 9


def test_a_window_is_counted_against_the_fewest_connections_it_had() -> None:
    """Sixteen connections sent a moment before the window ended, seven all along: the
    total of the window (84 MB/s) is seven connections' worth at 12 MB/s, no cap.
    (Counted against sixteen, the start of every download cut a mirror to 8.)"""
    p = measured(SourcePolicy.of([HUB, M1], max_connections=16), 1, 12e6)
    for _ in range(16):
        p = p.started(1)
    assert p.observed(1, 84e6, connections=7)[1].allowance == 16  # holds up: no cut
    assert p.observed(1, 84e6)[1].allowance == 8  # against sixteen: "capped"


def test_an_allowance_never_goes_below_the_trial_nor_above_the_cap() -> None:
    p = measured(SourcePolicy.of([HUB, M1], max_connections=16), 1, 12e6).started(1)
    assert p.observed(1, 1.0)[1].allowance == TRIAL_REQUESTS
    for _ in range(15):
        p = p.started(1)
    assert p.observed(1, 1e12)[1].allowance == 16
    peer = SourcePolicy.of([HUB], peers=[M1])
    assert peer.observed(1, 1.0)[1].allowance == peer[1].max_connections  # peers: no cut


def test_wanted_is_what_the_sources_could_use_at_once() -> None:
    p = SourcePolicy.of([HUB, M1, M2], max_connections=16)
    assert p.wanted(0.0) == 3 * TRIAL_REQUESTS  # all on trial
    p = measured(measured(p, 0, 12e6), 1, 12e6)
    assert p.wanted(0.0) == 16 + 16 + TRIAL_REQUESTS
    for _ in range(16):
        p = p.started(1)
    p = p.observed(1, 100e6)  # capped at 100 MB/s: 9 + 1
    assert p.wanted(0.0) == 16 + 10 + TRIAL_REQUESTS
    p = measured(p, 2, 1e6)  # a twelfth of the best: gets no chunk, wants none
    assert p.wanted(0.0) == 16 + 10


def test_the_fastest_source_with_a_free_connection_gets_the_next_chunk() -> None:
    p = SourcePolicy.of([HUB, M1, M2], max_connections=2)
    p = measured(measured(measured(p, 0, 15e6), 1, 50e6), 2, 20e6)
    assert p.pick(0.0) == 1
    p = p.started(1).started(1)  # at its cap
    assert p.pick(0.0) == 2
    p = p.started(2).started(2)
    assert p.pick(0.0) == 0
    p = p.started(0).started(0)
    assert p.pick(0.0) is None  # every source at its cap


def test_connections_go_to_sources_in_proportion_to_their_speed() -> None:
    """Equal sources share evenly; one half as fast gets half as many connections."""
    p = SourcePolicy.of([HUB, M1, M2], max_connections=64)
    p = measured(measured(measured(p, 0, 10e6), 1, 10e6), 2, 5e6)
    for _ in range(25):
        i = p.pick(0.0)
        assert i is not None
        p = p.started(i)
    fast_a, fast_b, half = (s.active for s in p.sources)
    assert abs(fast_a - fast_b) <= 1 and abs(2 * half - fast_a) <= 2, (fast_a, fast_b, half)


def test_a_source_much_slower_than_the_best_gets_no_chunk() -> None:
    """A 10x slower source would only make the tail: it gets nothing while the fast
    ones are usable, even at their cap; the last resort still takes a chunk that
    failed elsewhere, and anything when it is all there is."""
    p = SourcePolicy.of([HUB, M1, M2], max_connections=2)
    p = measured(measured(measured(p, 0, 50e6), 1, 50e6), 2, 5e6)
    for _ in range(4):
        i = p.pick(0.0)
        assert i in (0, 1)
        p = p.started(i)
    assert p.pick(0.0) is None  # M2 (a tenth of the best) waits
    slow_hub = measured(measured(SourcePolicy.of([HUB, M1]), 0, 1e6), 1, 50e6)
    assert slow_hub.pick(0.0) == 1
    assert slow_hub.pick(0.0, exclude={1}) == 0
    alone = slow_hub.started(1).refused(1, 0, "404")
    assert alone.pick(0.0) == 0


def test_two_bad_blocks_quarantine_a_mirror_but_never_the_last_resort() -> None:
    p = measured(measured(SourcePolicy.of([HUB, M1]), 1, 50e6), 0, 10e6)
    p = p.started(1).corrupt(1, 1000)
    assert not p[1].quarantined and p[1].rate == pytest.approx(50e6 / 4)  # demoted
    p = p.started(0).started(0)  # the hub busy: the demoted mirror gets a chunk...
    assert p.pick(0.0) == 1
    p = p.started(1)
    assert p.pick(0.0) == 0  # ...but one at a time until one ends well
    p = p.ended(0, 0).ended(0, 0)
    p = p.started(1).corrupt(1, 1000)
    assert p[1].quarantined and p[1].discarded == 2000
    assert p.pick(0.0) == 0
    for _ in range(5):
        p = p.started(0).corrupt(0, 10)
    assert not p[0].quarantined and p.pick(0.0) == 0


def test_failures_in_a_row_rest_a_mirror_and_a_success_forgives() -> None:
    p = measured(measured(SourcePolicy.of([HUB, M1]), 1, 50e6), 0, 10e6)
    p = p.started(1).failed(1, 10, now=100.0)
    assert p.pick(100.0) == 1  # one failure: still the fastest
    p = p.started(1).failed(1, 10, now=100.0)
    assert p.pick(100.5) == 0  # resting
    assert p.pick(101.1) == 1  # the rest is over
    p = p.started(1).finished(1, 1000, 0.001)
    assert p[1].errors == 0


def test_a_mirror_with_another_file_is_quarantined_at_once() -> None:
    p = SourcePolicy.of([HUB, M1]).started(1).refused(1, 0, "HTTP 404")
    assert p[1].quarantined and p[1].reason == "HTTP 404"
    assert p.started(0).refused(0, 0, "HTTP 404")[0].quarantined is False


def test_exclude_skips_a_source_unless_only_the_last_resort_is_left() -> None:
    p = measured(measured(SourcePolicy.of([HUB, M1]), 0, 1e6), 1, 50e6)
    assert p.pick(0.0, exclude={1}) == 0
    assert p.pick(0.0, exclude={0, 1}) == 0  # the last resort is never refused a chunk


def test_duplicate_urls_are_one_source() -> None:
    assert len(SourcePolicy.of([HUB, M1, HUB, M1])) == 2
    with pytest.raises(ValueError):
        SourcePolicy.of([])


def test_vote_losers_need_two_agreeing_answers() -> None:
    assert vote_losers([(0, "a"), (1, "b")]) == []
    assert vote_losers([(0, "a"), (1, "b"), (2, "b")]) == [0]
    assert vote_losers([(0, "a"), (1, "a"), (2, "")]) == []


_event = st.tuples(
    st.sampled_from(["start", "ok", "fail", "corrupt", "refuse", "observe"]),
    st.integers(0, 3),
    st.integers(0, 1 << 22),
    st.floats(0.001, 5.0),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, max_size=80), st.integers(1, 4))
def test_invariants_hold_for_any_history(
    events: list[tuple[str, int, int, float]], cap: int
) -> None:
    """Whatever happens: the last resort is never quarantined nor rested, a pick is a
    usable source under its cap, nothing goes negative, and a source given up stays so."""
    p = SourcePolicy.of([HUB, M1, M2, "http://m3/f"], max_connections=cap)
    now = 0.0
    gone: set[int] = set()
    for kind, i, n, dt in events:
        now += dt
        if kind == "start":
            j = p.pick(now)
            if j is None:
                continue
            s = p[j]
            assert s.usable(now) and s.active < s.max_connections
            p = p.started(j)
        elif kind == "observe":  # its connections brought n * 10 bytes per second
            p = p.observed(i, n * 10.0)
        elif p[i].active > 0:
            if kind == "ok":
                p = p.finished(i, n, dt)
            elif kind == "fail":
                p = p.failed(i, n, now, dt)
            elif kind == "corrupt":
                p = p.corrupt(i, n)
            else:
                p = p.refused(i, n, "404")
        for k, s in enumerate(p.sources):
            assert s.active >= 0 and s.served >= s.discarded >= 0
            if k and s.rate is None:  # an unmeasured mirror: its trial requests at most
                assert s.active <= s.trial
            assert min(s.trial, s.max_connections) <= s.allowance <= s.max_connections
            assert s.rate is None or s.rate >= 0
            if s.quarantined:
                gone.add(k)
        assert not p[0].quarantined and p[0].usable(now)
        assert gone == set(p.quarantined)  # never un-quarantined
        for k in (1, 2, 3):
            if p[k].bad_blocks >= QUARANTINE_AFTER:
                assert p[k].quarantined
        if p[0].active < cap:  # a chunk never lacks a source while the last resort has room
            assert p.pick(now, exclude={1, 2, 3}) == 0
