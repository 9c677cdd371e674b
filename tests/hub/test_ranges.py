"""accel.hub.ranges: single-range arithmetic and If-Range, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.hub.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", ByteRange(0, 0, SIZE)),
        ("bytes=0-99", ByteRange(0, 99, SIZE)),
        ("bytes=500-", ByteRange(500, 999, SIZE)),
        ("bytes=-100", ByteRange(900, 999, SIZE)),
        ("bytes=-5000", ByteRange(0, 999, SIZE)),
        ("bytes=990-5000", ByteRange(990, 999, SIZE)),
        ("BYTES = 1 - 2", ByteRange(1, 2, SIZE)),
        ("bytes=-0", Unsatisfiable(SIZE)),
        ("bytes=1000-", Unsatisfiable(SIZE)),
        ("bytes=1000-2000", Unsatisfiable(SIZE)),
        ("bytes=5-1", None),  # invalid: ignored
        ("bytes=0-1,5-6", None),  # several ranges: whole file
        ("items=0-1", None),
        ("bytes=-", None),
        ("bytes=abc", None),
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header, SIZE) == expected


def test_empty_file_has_no_satisfiable_range() -> None:
    assert parse_range("bytes=0-", 0) == Unsatisfiable(0)
    assert parse_range("bytes=-1", 0) == Unsatisfiable(0)
    assert parse_range(None, 0) is None


def test_content_range_strings() -> None:
    assert ByteRange(0, 9, 100).content_range == "bytes 0-9/100"
    assert Unsatisfiable(100).content_range == "bytes */100"


@given(st.integers(0, 10**6), st.integers(0, 2 * 10**6), st.integers(0, 2 * 10**6))
def test_satisfiable_ranges_lie_inside_the_file(size: int, a: int, b: int) -> None:
    got = parse_range(f"bytes={a}-{b}", size)
    if b < a:
        assert got is None
    elif a >= size:
        assert got == Unsatisfiable(size)
    else:
        assert isinstance(got, ByteRange)
        assert 0 <= got.start <= got.end < size and got.length == min(b, size - 1) - a + 1


@given(st.integers(0, 10**6), st.integers(0, 2 * 10**6))
def test_suffix_ranges(size: int, n: int) -> None:
    got = parse_range(f"bytes=-{n}", size)
    if n == 0 or size == 0:
        assert got == Unsatisfiable(size)
    else:
        assert isinstance(got, ByteRange)
        assert got.end == size - 1 and got.length == min(n, size)


LM = "Sat, 28 Nov 2026 10:00:00 GMT"


@pytest.mark.parametrize(
    ("if_range", "allowed"),
    [
        (None, True),
        ('"abc"', True),
        ('"abd"', False),
        ('W/"abc"', False),  # weak tags never match
        (LM, True),
        ("Sat, 28 Nov 2026 10:00:01 GMT", False),
        ("not a date", False),
    ],
)
def test_if_range(if_range: str | None, allowed: bool) -> None:
    assert if_range_allows(if_range, '"abc"', LM) is allowed
