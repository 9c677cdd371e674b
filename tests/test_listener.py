"""accel.listener: the limits value and the open files limit (in this process, restored)."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from accel.listener import SPARE_DESCRIPTORS, Limits, raise_open_files_limit


@pytest.fixture
def nofile() -> Iterator[tuple[int, int]]:
    """This process's RLIMIT_NOFILE, put back after the test."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_limits_defaults_and_validation() -> None:
    assert Limits() == Limits(header_timeout_s=30.0, max_connections=10_000)
    for bad in ({"header_timeout_s": 0}, {"header_timeout_s": -1}, {"max_connections": 0}):
        with pytest.raises(ValueError):
            Limits(**bad)  # type: ignore[arg-type]


def test_soft_limit_is_raised_to_what_the_cap_needs(nofile: tuple[int, int]) -> None:
    _, hard = nofile
    need = 2000 + SPARE_DESCRIPTORS
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    assert raise_open_files_limit(2000) == 2000
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (need, hard)
    # Already enough: left alone.
    assert raise_open_files_limit(100) == 100
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (need, hard)


def test_a_cap_above_the_hard_limit_is_clamped_with_a_warning(
    nofile: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, hard = nofile
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here: nothing to clamp to")
    with caplog.at_level(logging.WARNING, logger="accel.listener"):
        room = raise_open_files_limit(hard * 2)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert room == hard - SPARE_DESCRIPTORS
    assert "leaves room for" in caplog.text
