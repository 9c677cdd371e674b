"""The values of the accelerator's public contract: what we expect, what we report.

Frozen dataclasses, importable without pydantic (worker processes import this package).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from accel.schema import ChunkDigests

__all__ = ["DownloadResult", "EventKind", "Expected", "ProgressEvent", "SourceFigure"]

EventKind = Literal[
    "started",
    "progress",
    "chunk_retry",
    "source_quarantined",
    "verified",
    "already_complete",
    "done",
    "error",
]


@dataclass(frozen=True)
class SourceFigure:
    """One source of a download with several, as progress and results report it.

    ``bytes`` counts everything it sent, ``discarded`` what was thrown away (a failed
    block, a dead connection's partial chunk, a lost race); ``rate_bps`` is its
    measured throughput per connection (0: not measured yet).
    """

    url: str
    bytes: int = 0
    discarded: int = 0
    rate_bps: float = 0.0
    active: int = 0
    chunks: int = 0
    errors: int = 0
    bad_blocks: int = 0
    quarantined: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "url": self.url.split("?", 1)[0],
            "bytes": self.bytes,
            "discarded": self.discarded,
            "rate_bps": round(self.rate_bps, 1),
            "active": self.active,
            "chunks": self.chunks,
            "errors": self.errors,
            "bad_blocks": self.bad_blocks,
            "quarantined": self.quarantined,
        }


@dataclass(frozen=True)
class Expected:
    """What we know about the remote file before fetching it.

    ``size`` and ``sha256`` are checked before the rename; ``chunks`` (the manifest's
    blake3 block digests) lets each chunk be verified as it arrives, so a corrupt block
    is refetched instead of failing the whole file at the end.
    """

    size: int | None = None
    sha256: str | None = None
    chunks: ChunkDigests | None = None


@dataclass(frozen=True)
class DownloadResult:
    """A finished download; ``verified`` when an expected digest checked its bytes.

    Without an expected SHA256 or blake3 blocks the bytes are "complete": every answer
    was held to the validators the server gave (ETag, else Last-Modified and size),
    which cannot catch every replacement (Last-Modified has one-second resolution).
    """

    path: Path
    size: int
    sha256: str
    elapsed_s: float
    bytes_fetched: int
    resumed_bytes: int
    ranged: bool
    connections: int = 0
    retries: int = 0
    verify_tail_s: float = 0.0
    verified: bool = True
    #: the file was there already and verified (by its record or a re-hash): nothing fetched
    already_complete: bool = False
    #: per source, when the download had several (``--mirror``, manifest mirrors)
    sources: tuple[SourceFigure, ...] = ()


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a download, for progress bars and NDJSON.

    ``committed`` counts bytes of finished chunks and only ever goes up; ``inflight``
    counts bytes received by chunks still running (a failed attempt drops them from
    ``inflight``, never from ``committed``).
    """

    kind: EventKind
    url: str
    dest: Path
    total: int | None = None
    committed: int = 0
    inflight: int = 0
    speed_bps: float = 0.0
    eta_s: float | None = None
    message: str = ""
    #: per source, when the download has several
    sources: tuple[SourceFigure, ...] = ()

    def to_dict(self) -> dict[str, object]:
        extra: dict[str, object] = {}
        if self.sources:
            extra["sources"] = [s.to_dict() for s in self.sources]
        return {
            "event": self.kind,
            "url": self.url,
            "dest": str(self.dest),
            "total": self.total,
            "committed": self.committed,
            "inflight": self.inflight,
            "speed_bps": round(self.speed_bps, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 2),
            "message": self.message,
            **extra,
        }
