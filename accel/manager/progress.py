"""What a person sees of the installs running in this process (pure, over live values).

Owns the one computation of a running install's progress: its ``ProgressEvent`` (bytes,
speed and ETA per file and for the version, plus the manager's total) and the live
fields ``status()`` lays over its registry record, so the CLI, the node's dashboard and
``status`` show the same figures, all in the model of :mod:`accel.meter` (bytes received
including in flight, never decreasing; speed over a sliding window; ETA from that
speed). Never does I/O and never publishes (the job runner does, at most every
:data:`PROGRESS_EVERY_S`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from accel.manager.events import ProgressEvent, TotalProgress
from accel.meter import eta

if TYPE_CHECKING:
    from accel.manager.install import VersionInstall

__all__ = ["PROGRESS_EVERY_S", "eta", "live_fields", "progress_event", "total_progress"]

#: the shortest interval between two progress events of one install
PROGRESS_EVERY_S = 0.25


def total_progress(insts: Iterable[VersionInstall], now: float | None = None) -> TotalProgress:
    """Every running install together."""
    now = time.monotonic() if now is None else now
    insts = list(insts)
    done = sum(i.bytes_done for i in insts)
    total = sum(i.bytes_total for i in insts)
    speed = sum(i.speed_bps(now) for i in insts)
    return TotalProgress(
        bytes_done=done,
        bytes_total=total,
        speed_bps=round(speed, 1),
        eta_s=eta(total - done, speed),
        active=sum(1 for i in insts if i.state == "downloading"),
    )


def progress_event(
    inst: VersionInstall,
    *,
    total: TotalProgress,
    update: bool,
    now: float | None = None,
    files: set[str] | None = None,
) -> ProgressEvent:
    """One install's progress event (``update``: a staged update of a ready version);
    ``files``: only these files' figures (the ones that changed), else all of them."""
    now = time.monotonic() if now is None else now
    speed = inst.speed_bps(now)
    runs = inst.files.values() if files is None else [inst.files[p] for p in files]
    return ProgressEvent(
        model_id=inst.model_id,
        version=inst.version,
        state=inst.state,
        bytes_done=inst.bytes_done,
        bytes_total=inst.bytes_total,
        speed_bps=round(speed, 1),
        eta_s=eta(inst.bytes_total - inst.bytes_done, speed),
        files=[r.progress(now) for r in runs],
        total=total,
        update=update,
    )


def live_fields(inst: VersionInstall, priority: int) -> dict[str, Any]:
    """What ``status()`` shows of a running install instead of its last registry write."""
    now = time.monotonic()
    speed = inst.speed_bps(now)
    files = []
    for r in inst.files.values():
        st = r.status.model_copy()
        st.bytes_done = r.bytes_done
        files.append(st)
    return {
        "state": inst.state,
        "bytes_done": inst.bytes_done,
        "files": files,
        "speed_bps": round(speed, 1),
        "eta_s": eta(inst.bytes_total - inst.bytes_done, speed),
        "priority": priority,
    }
