"""The install state machine (pure): which transitions are allowed, what a reader sees.

``queued -> downloading -> verifying -> ready``; any unfinished state may go to ``paused``
or ``error``; ``paused``/``error`` go back to ``queued`` (resume, retry); ``ready`` goes
back to ``queued`` only for a repair (verify found damage, or an update). A record whose
owner process died while it was queued/downloading/verifying reads as ``paused``: its
bytes are on disk and a rerun resumes. Never does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accel.errors import ModelNotAvailableError
from accel.schema import InstallRecord, InstallState

__all__ = ["ACTIVE", "TRANSITIONS", "can_transition", "effective_state", "not_available"]

ACTIVE: frozenset[str] = frozenset({"queued", "downloading", "verifying"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"downloading", "verifying", "ready", "paused", "error"}),
    "downloading": frozenset({"verifying", "ready", "paused", "error", "queued"}),
    "verifying": frozenset({"ready", "error", "paused", "downloading"}),
    "ready": frozenset({"queued", "verifying", "error"}),
    "paused": frozenset({"queued", "downloading", "error", "paused"}),
    "error": frozenset({"queued", "downloading", "paused", "error"}),
}


def can_transition(old: str, new: str) -> bool:
    """Whether ``old -> new`` is a legal move (staying in place is always legal)."""
    return old == new or new in TRANSITIONS.get(old, frozenset())


def effective_state(
    record: InstallRecord, *, owner_alive: Callable[[int, float | None], bool]
) -> InstallState:
    """The state a reader should believe: an active state whose owner died is ``paused``."""
    if (
        record.state in ACTIVE
        and record.owner_pid is not None
        and not owner_alive(record.owner_pid, record.owner_start)
    ):
        return "paused"
    return record.state


def not_available(
    model_id: str, version: str | None, record: InstallRecord | None, state: str | None
) -> ModelNotAvailableError:
    """The error ``get_model_path`` raises for a record that is not ready."""
    if record is None or state is None:
        return ModelNotAvailableError(model_id, version, "not_installed")
    progress = record.bytes_done / record.bytes_total if record.bytes_total else 0.0
    facts: dict[str, Any] = {"progress": round(min(1.0, progress), 4)}
    if record.error is not None:
        facts["error"] = record.error.model_dump()
        failed = [f.path for f in record.files if f.state == "error"]
        if failed:
            facts["failed_files"] = failed
    return ModelNotAvailableError(model_id, version, state, **facts)
