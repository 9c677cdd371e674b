"""Parsing and formatting of byte sizes and rates (``8M``, ``1.5GiB``, ``25MB/s``).

Pure functions, no I/O. Binary suffixes (KiB, MiB, GiB, and the short K, M, G as aria2
and curl read them) are powers of 1024; SI suffixes with a B (KB, MB, GB) are powers of
1000, as on a network link's label.
"""

from __future__ import annotations

import re

from accel.errors import UsageError

__all__ = [
    "format_bytes",
    "format_eta",
    "format_progress",
    "format_rate",
    "parse_rate",
    "parse_size",
]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, *, option: str = "size") -> int:
    """Parse ``8M``, ``1.5GiB``, ``100MB``, ``4096`` into bytes; raise UsageError naming ``option``."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{option}: must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(
            f"{option}: cannot read {text!r} as a size",
            hint="write a number with an optional unit: 4096, 8M, 1.5GiB, 100MB",
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_rate(text: str | int | float, *, option: str = "--limit-rate") -> float:
    """Parse ``25MB/s``, ``10M``, ``500KiB/s`` into bytes per second (must be > 0)."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        body = text.strip()
        for suffix in ("/s", "ps"):
            if body.lower().endswith(suffix):
                body = body[: -len(suffix)]
                break
        value = float(parse_size(body, option=option))
    if value <= 0:
        raise UsageError(f"{option}: must be greater than zero, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """Human size with binary units: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_s: float) -> str:
    """Human rate in binary units, as aria2c and curl print it: ``5.0 MiB/s``.

    The same units as ``--limit-rate 5M`` (5 MiB/s), so a capped download reads as its cap.
    """
    return format_bytes(bytes_per_s) + "/s"


def format_eta(seconds: float | None) -> str:
    """Time left as ``m:ss`` (``h:mm:ss`` past an hour); ``-`` while unknown."""
    if seconds is None:
        return "-"
    s = int(seconds + 0.5)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def format_progress(done: float, total: float | None, speed_bps: float, eta_s: float | None) -> str:
    """The progress figures every text view prints: ``12.0 MiB / 24.0 MiB 5.0 MiB/s ETA 0:02``."""
    size = format_bytes(total) if total is not None else "?"
    return f"{format_bytes(done)} / {size} {format_rate(speed_bps)} ETA {format_eta(eta_s)}"
