"""What a person sees of the installs running in this process (pure, over live values).

Owns the one computation of a running install's progress: its ``ProgressEvent`` (bytes,
speed and ETA per file and for the version, plus the manager's total) and the live
fields ``status()`` lays over its registry record, so the CLI, the node's dashboard and
``status`` show the same figures. Never does I/O and never publishes (the job runner
does, at most every :data:`PROGRESS_EVERY_S`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from accel.manager.events import ProgressEvent, TotalProgress

if TYPE_CHECKING:
    from accel.manager.install import VersionInstall

__all__ = ["PROGRESS_EVERY_S", "eta", "live_fields", "progress_event", "total_progress"]

#: the shortest interval between two progress events of one install
PROGRESS_EVERY_S = 0.25


def eta(remaining: int, speed_bps: float) -> float | None:
    """Seconds left at the current speed (``None`` while nothing moves)."""
    return round(remaining / speed_bps, 2) if speed_bps > 0 else None


def total_progress(insts: Iterable[VersionInstall]) -> TotalProgress:
    """Every running install together."""
    insts = list(insts)
    done = sum(i.bytes_done for i in insts)
    total = sum(i.bytes_total for i in insts)
    speed = sum(i.speed_bps for i in insts)
    return TotalProgress(
        bytes_done=done,
        bytes_total=total,
        speed_bps=round(speed, 1),
        eta_s=eta(total - done, speed),
        active=sum(1 for i in insts if i.state == "downloading"),
    )


def progress_event(inst: VersionInstall, *, total: TotalProgress, update: bool) -> ProgressEvent:
    """One install's progress event (``update``: a staged update of a ready version)."""
    speed = inst.speed_bps
    return ProgressEvent(
        model_id=inst.model_id,
        version=inst.version,
        state=inst.state,
        bytes_done=inst.bytes_done,
        bytes_total=inst.bytes_total,
        speed_bps=round(speed, 1),
        eta_s=eta(inst.bytes_total - inst.bytes_done, speed),
        files=[r.progress() for r in inst.files.values()],
        total=total,
        update=update,
    )


def live_fields(inst: VersionInstall, priority: int) -> dict[str, Any]:
    """What ``status()`` shows of a running install instead of its last registry write."""
    speed = inst.speed_bps
    return {
        "state": inst.state,
        "bytes_done": inst.bytes_done,
        "files": [r.status.model_copy() for r in inst.files.values()],
        "speed_bps": round(speed, 1),
        "eta_s": eta(inst.bytes_total - inst.bytes_done, speed),
        "priority": priority,
    }
