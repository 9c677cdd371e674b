"""The install state machine (pure)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from accel.manager.manager import version_key
from accel.manager.states import ACTIVE, TRANSITIONS, can_transition, effective_state, not_available
from accel.schema import FileError, FileStatus, InstallRecord

STATES = list(TRANSITIONS)


def _rec(state: str, owner: int | None = 1) -> InstallRecord:
    return InstallRecord(
        model_id="m",
        version="1",
        state=state,
        path="/x",
        bytes_total=100,
        bytes_done=40,  # type: ignore[arg-type]
        owner_pid=owner,
        files=[
            FileStatus(
                path="a",
                bytes_total=100,
                sha256="0",
                state="error",
                error=FileError(code="checksum_mismatch", message="bad"),
            )
        ],
        error=FileError(code="checksum_mismatch", message="bad") if state == "error" else None,
    )


def test_happy_path_and_forbidden_moves() -> None:
    path = ["queued", "downloading", "verifying", "ready"]
    assert all(can_transition(a, b) for a, b in itertools.pairwise(path))
    assert not can_transition("ready", "downloading")
    assert not can_transition("paused", "ready")  # never ready without verifying
    assert not can_transition("error", "ready")


@given(st.sampled_from(STATES), st.booleans())
def test_only_active_states_of_dead_owners_read_as_paused(state: str, alive: bool) -> None:
    seen = effective_state(_rec(state), owner_alive=lambda _p, _s: alive)
    if state in ACTIVE and not alive:
        assert seen == "paused"
    else:
        assert seen == state


def test_not_available_carries_reason_progress_and_failed_files() -> None:
    assert not_available("m", "1", None, None).reason == "not_installed"
    err = not_available("m", "1", _rec("error"), "error")
    assert err.reason == "error" and err.progress == 0.4 and err.failed_files == ["a"]
    assert err.error["code"] == "checksum_mismatch"


@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=4),
    st.lists(st.integers(0, 30), min_size=1, max_size=4),
)
def test_version_key_orders_numerically(a: list[int], b: list[int]) -> None:
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    assert (version_key(va) < version_key(vb)) == (a < b)
