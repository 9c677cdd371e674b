import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.errors import UsageError
from accel.units import format_bytes, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("8M", 8 << 20),
        ("1.5GiB", 3 << 29),
        ("100MB", 100_000_000),
        ("16MiB", 16 << 20),
        ("0", 0),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "8X", "-1", "1..5G", "8 M B"])
def test_parse_size_rejects_with_option_name(text: str) -> None:
    with pytest.raises(UsageError, match="--chunk-size"):
        parse_size(text, option="--chunk-size")


@pytest.mark.parametrize(
    ("text", "expected"), [("25MB/s", 25e6), ("10M", 10 * 2**20), ("500KiB/s", 512000.0)]
)
def test_parse_rate(text: str, expected: float) -> None:
    assert parse_rate(text) == expected


def test_parse_rate_rejects_zero() -> None:
    with pytest.raises(UsageError, match="--limit-rate"):
        parse_rate("0")


@given(st.integers(min_value=0, max_value=2**50))
def test_plain_integers_round_trip(n: int) -> None:
    assert parse_size(str(n)) == n
    assert format_bytes(n)
