"""The accelerator: multiprocess chunked downloads, verified and resumable.

Public contract (used by the CLI and the ModelManager)::

    async with Engine(connections="auto", limit_rate=None) as engine:
        result = await engine.download(url, dest, expected=Expected(size=..., sha256=...))

    result = await adownload(url, dest)      # a private Engine for one file
    result = download(url, dest)             # the blocking form

``Engine`` (and the functions) are imported lazily: worker processes import this package
on spawn and must not pay for the supervisor's imports (pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accel.fetch.types import DownloadResult, Expected, ProgressEvent

if TYPE_CHECKING:
    from accel.fetch.engine import Engine, adownload, download

__all__ = ["DownloadResult", "Engine", "Expected", "ProgressEvent", "adownload", "download"]


def __getattr__(name: str) -> Any:
    if name in ("Engine", "adownload", "download"):
        from accel.fetch import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'accel.fetch' has no attribute {name!r}")
