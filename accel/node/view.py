"""What the dashboard shows, computed from manager records and events (pure).

Owns the one mapping from the ModelManager's status records and events to the flat
"model card" the dashboard renders (state, bytes, per-file bars, speed, ETA, an error in
plain words), plus the node-wide total line. Keeping it here, in Python, means the page's
JavaScript knows a single stable shape and this mapping is tested without a browser.
Never does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from accel.units import format_bytes

__all__ = ["ERROR_WORDS", "describe_error", "model_card", "total_line"]

_DONE_KEYS = ("bytes_done", "done_bytes", "downloaded_bytes", "committed", "bytes", "done")
_TOTAL_KEYS = ("bytes_total", "total_bytes", "size_bytes", "total", "size")
_SPEED_KEYS = ("speed_bps", "bytes_per_s", "speed", "rate_bps")
_ETA_KEYS = ("eta_s", "eta", "eta_seconds")
_STATE_KEYS = ("state", "status")

#: error code -> (headline, what to do), in words a person understands
ERROR_WORDS: dict[str, tuple[str, str]] = {
    "disk_full": ("Disk full", "Free disk space, then press Retry: it resumes where it stopped."),
    "checksum_mismatch": (
        "Checksum mismatch",
        "The downloaded bytes differ from what the hub published. Retry fetches the bad "
        "file again; if it repeats, the copy on the hub is damaged.",
    ),
    "unauthorized": ("The hub refused this node", "Check the node's --token."),
    "not_found": ("Not on the hub", "The hub has no such model or version any more."),
    "hub_error": ("Hub unreachable", "Check that the hub is running, then press Retry."),
    "download_failed": (
        "Network problem",
        "The transfer broke off. Press Retry: finished parts are kept.",
    ),
    "stalled": ("Network stalled", "The hub stopped sending data. Press Retry to resume."),
    "http_status": ("The hub answered with an error", "Press Retry; if it repeats, check the hub."),
    "protocol_violation": ("Broken transfer", "The hub sent a malformed answer. Press Retry."),
    "remote_changed": (
        "The file changed on the hub",
        "It was re-published during the download. Press Retry to fetch the new one.",
    ),
    "lock_timeout": ("Stuck lock", "Another process holds this model; see `accel locks`."),
    "unsafe_path": ("Unsafe file name", "The manifest lists a path outside the model folder."),
}
_NETWORK = ("Network problem", "The transfer failed. Press Retry: finished parts are kept.")


def _first(data: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if k in data and data[k] is not None:
            return data[k]
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def describe_error(error: Any) -> dict[str, str] | None:
    """``{"title", "advice", "detail"}`` for an error dict or message, else ``None``."""
    if not error:
        return None
    if isinstance(error, str):
        code, detail = "", error
    elif isinstance(error, Mapping):
        code = str(error.get("code") or "")
        detail = str(error.get("message") or error.get("error") or "")
        if not detail and isinstance(error.get("detail"), str):
            detail = error["detail"]
    else:
        code, detail = "", str(error)
    title, advice = ERROR_WORDS.get(code, _NETWORK)
    if code == "disk_full" and isinstance(error, Mapping):
        needed, free = _num(error.get("needed")), _num(error.get("free"))
        if needed is not None and free is not None:
            title = f"Disk full: needs {format_bytes(int(needed))}, {format_bytes(int(free))} free"
    return {"title": title, "advice": advice, "detail": detail, "code": code}


def _file_row(path: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "path": path,
        "state": _first(data, _STATE_KEYS),
        "done": _num(_first(data, _DONE_KEYS)) or 0.0,
        "total": _num(_first(data, _TOTAL_KEYS)),
        "speed_bps": _num(_first(data, _SPEED_KEYS)),
        "eta_s": _num(_first(data, _ETA_KEYS)),
        "inflight": _num(data.get("inflight")) or 0.0,
        "error": describe_error(data.get("error") or data.get("last_error")),
    }


def _files(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    files = data.get("files")
    rows: list[dict[str, Any]] = []
    if isinstance(files, Mapping):
        for path, f in files.items():
            if isinstance(f, Mapping):
                rows.append(_file_row(str(path), f))
    elif isinstance(files, list):
        for f in files:
            if isinstance(f, Mapping):
                rows.append(_file_row(str(f.get("path", "?")), f))
    return sorted(rows, key=lambda r: r["path"])


def model_card(
    data: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The dashboard card of one model version from a status record or an event.

    ``previous`` is the card so far: an event that carries only some fields (a
    ``ready`` without byte counts) keeps the rest, and progress never goes backwards
    within one state. A staged update of a ready version (events with ``update: true``,
    a status record with an ``update`` object) shows as the card's ``update`` part: the
    card itself stays ``ready``, as the version stays usable.
    """
    prev = dict(previous or {})
    model = data.get("model")
    nested = model if isinstance(model, Mapping) else {}
    merged: dict[str, Any] = {**nested, **data}
    upd = merged.get("update")
    if upd is True and merged.get("event") != "ready":
        if prev:
            card = dict(prev)
        else:
            ids = {"model_id": merged.get("model_id"), "version": merged.get("version")}
            card = _card({**ids, "state": "ready"}, {})
        card["update"] = _card({**merged, "update": None}, prev.get("update") or {})
        return card
    card = _card(merged, prev)
    if isinstance(upd, Mapping):
        card["update"] = _card(
            {**upd, "model_id": card["model_id"], "version": card["version"]},
            prev.get("update") or {},
        )
    else:
        card["update"] = None
    return card


def _card(merged: Mapping[str, Any], prev: Mapping[str, Any]) -> dict[str, Any]:
    event = merged.get("event")
    state = _first(merged, _STATE_KEYS)
    if state is None:
        state = {
            "ready": "ready",
            "failed": "error",
            "removed": "removed",
            "progress": "downloading",
        }.get(str(event), prev.get("state"))
    # A progress event carries only the files that changed: merge them by path.
    by_path = {f["path"]: f for f in prev.get("files", [])}
    by_path.update({f["path"]: f for f in _files(merged)})
    files = sorted(by_path.values(), key=lambda r: r["path"])
    done = _num(_first(merged, _DONE_KEYS))
    total = _num(_first(merged, _TOTAL_KEYS))
    if done is None and files and event != "ready":
        done = sum(f["done"] for f in files)
    if total is None and files and all(f["total"] is not None for f in files):
        total = sum(f["total"] for f in files)
    total = total if total is not None else prev.get("total")
    done = done if done is not None else prev.get("done", 0.0)
    if state == "ready" and total is not None:
        done = total
    elif state == prev.get("state") and done is not None and prev.get("done") is not None:
        done = max(done, prev["done"])
    error = describe_error(merged.get("error") or merged.get("last_error"))
    if error is None and state == "error":
        error = prev.get("error") or describe_error("the install failed")
    if state != "error":
        error = None
    return {
        "key": f"{merged.get('model_id')}@{merged.get('version')}",
        "model_id": merged.get("model_id"),
        "version": merged.get("version"),
        "state": state,
        "done": done or 0.0,
        "total": total,
        # Bytes received by chunks not yet verified: shown apart, as they may be refetched.
        "inflight": sum(f.get("inflight", 0.0) for f in files) if state == "downloading" else 0.0,
        "speed_bps": _num(_first(merged, _SPEED_KEYS)) if state == "downloading" else 0.0,
        "eta_s": _num(_first(merged, _ETA_KEYS)) if state == "downloading" else None,
        "priority": merged.get("priority", prev.get("priority", 0)),
        "path": merged.get("path", prev.get("path")),
        "files": files,
        "error": error,
    }


def total_line(cards: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Node-wide totals over the versions (and staged updates) in flight: bytes, speed, ETA."""
    inflight = ("queued", "downloading", "verifying")
    parts = [u for c in cards for u in (c, c.get("update")) if isinstance(u, Mapping)]
    active = [c for c in parts if c.get("state") in inflight]
    done = sum(float(c.get("done") or 0) for c in active)
    total = sum(float(c.get("total") or 0) for c in active)
    speed = sum(float(c.get("speed_bps") or 0) for c in active)
    eta = (total - done) / speed if speed > 0 and total >= done else None
    return {"active": len(active), "done": done, "total": total, "speed_bps": speed, "eta_s": eta}
