"""The one progress model (accel/meter.py): pure, so tested with values and hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from accel.meter import RateMeter, Received, eta
from accel.units import format_eta, format_progress, format_rate


def test_speed_is_bytes_over_the_window_and_decays_when_stalled() -> None:
    m = RateMeter(window_s=2.0)
    assert m.speed(0.0) == 0.0
    for i in range(11):  # 1 MiB every 0.5 s = 2 MiB/s
        m.add(i * 0.5, i << 20)
    assert abs(m.speed(5.0) - 2 * (1 << 20)) < 1
    # nothing arrives for 1 s: half the window holds no bytes, the speed halves
    assert abs(m.speed(6.0) - (1 << 20)) < 1
    assert m.speed(8.0) == 0.0


def test_a_short_run_has_a_speed_at_its_end() -> None:
    m = RateMeter()
    m.add(0.0, 0)
    m.add(0.4, 4 << 20)
    assert abs(m.speed(0.4) - 10 * (1 << 20)) < 1


def test_received_never_goes_backwards_and_stays_within_the_total() -> None:
    r = Received(total=100)
    assert r.see(40) == 40
    assert r.see(10) == 40  # a retried chunk dropped its in-flight bytes
    assert r.see(500) == 100


@given(st.lists(st.tuples(st.floats(0.01, 2.0), st.integers(-(1 << 20), 1 << 22)), max_size=60))
def test_speed_is_never_negative_and_eta_follows_it(steps: list[tuple[float, int]]) -> None:
    m = RateMeter()
    t, done = 0.0, 0
    for dt, delta in steps:
        t += dt
        done = max(0, done + delta)  # the caller's count may dip; the meter must not
        m.add(t, done)
        speed = m.speed(t)
        assert speed >= 0.0
        left = eta(1 << 30, speed)
        assert (left is None) == (speed == 0.0)


def test_binary_units_everywhere() -> None:
    assert format_rate(5 * (1 << 20)) == "5.0 MiB/s"  # what --limit-rate 5M caps at
    assert format_eta(None) == "-" and format_eta(75.4) == "1:15" and format_eta(3725) == "1:02:05"
    assert format_progress(3 << 20, 12 << 20, 1 << 20, 9) == "3.0 MiB / 12.0 MiB 1.0 MiB/s ETA 0:09"
