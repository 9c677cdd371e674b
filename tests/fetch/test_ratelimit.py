"""The token bucket on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.fetch.ratelimit import TokenBucket


def run(bucket: TokenBucket, sizes: list[int], start: float = 0.0) -> list[float]:
    """Consume each size as soon as allowed; return the grant times."""
    tat, now = 0.0, start
    times = []
    for n in sizes:
        tat, delay = bucket.consume(tat, now, n)
        now += delay
        times.append(now)
    return times


def test_burst_passes_at_once_then_rate_holds() -> None:
    b = TokenBucket(rate=1000, burst=500)
    times = run(b, [100] * 5, start=10.0)
    assert times == [10.0] * 5  # 500 bytes of burst, no waiting
    more = run(b, [100] * 25, start=10.0)
    # 2500 bytes at 1000 B/s with 500 of burst: the last grant comes at 2.0 s
    assert more[-1] == pytest.approx(12.0)


def test_debt_is_never_forgiven() -> None:
    b = TokenBucket(rate=100, burst=10)
    tat, delay = b.consume(0.0, 0.0, 1000)  # one huge read
    assert delay == pytest.approx(9.9)
    tat, delay = b.consume(tat, 1.0, 10)  # caller came back early: still pays
    assert delay == pytest.approx(9.0)


def test_for_rate_gives_a_quarter_second_burst() -> None:
    assert TokenBucket.for_rate(4e6).burst == 1e6
    assert TokenBucket.for_rate(1000).burst == 64 * 1024


def test_invalid_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


@given(
    rate=st.floats(1e3, 1e9),
    sizes=st.lists(st.integers(1, 1 << 20), min_size=1, max_size=200),
    idle=st.floats(0, 100),
)
def test_grants_never_exceed_rate_times_time_plus_burst(
    rate: float, sizes: list[int], idle: float
) -> None:
    b = TokenBucket.for_rate(rate)
    times = run(b, sizes, start=idle)
    granted = 0
    for n, t in zip(sizes, times, strict=True):
        granted += n
        assert granted <= rate * (t - idle) + b.burst + n + 1e-6 * granted
