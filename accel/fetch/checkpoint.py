"""The resume checkpoint ``<dest>.part.json``: which chunks of ``<dest>.part`` are done.

Owns the checkpoint's format (a checked dataclass, JSON on disk), its atomic write (temp file, fsync,
rename, fsync of the directory: a crash leaves the old or the new checkpoint, never a
torn one), and the rules of resuming: a checkpoint that does not parse is ignored, one
recorded for another remote (size, ETag or Last-Modified differ) is discarded, and each
recorded chunk is re-read and kept only if its xxh3_128 still matches. It never talks
to the network.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from accel.durable import atomic_write_bytes, sweep_dead_temps
from accel.errors import CheckpointError

__all__ = [
    "Checkpoint",
    "DoneChunk",
    "checkpoint_path",
    "load_checkpoint",
    "part_path",
    "remove_checkpoint",
    "revalidate",
    "save_checkpoint",
    "xxh3_of_range",
]

_READ = 1024 * 1024


@dataclass(frozen=True)
class DoneChunk:
    """A finished byte range ``[start, end)`` and the xxh3_128 of its bytes."""

    start: int
    end: int
    xxh3: str


@dataclass
class Checkpoint:
    """What a rerun needs to trust the bytes already in ``<dest>.part``.

    A plain dataclass with explicit validation (``from_json``) rather than a pydantic
    model: the supervisor of ``accel get`` counts against the 150 MiB budget of the
    whole process tree, and pydantic alone costs about 10 MiB of it.
    """

    url: str
    size: int
    etag: str | None = None
    last_modified: str | None = None
    chunks: list[DoneChunk] = field(default_factory=list)
    format: int = 1

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        """Parse and type-check; ValueError for anything that is not a checkpoint."""
        obj = json.loads(raw)
        if not isinstance(obj, dict) or obj.get("format") != 1:
            raise ValueError("not a version-1 checkpoint")
        url, size = obj.get("url"), obj.get("size", -1)
        etag, last_modified = obj.get("etag"), obj.get("last_modified")
        if not isinstance(url, str) or not _is_count(size):
            raise ValueError("url or size missing")
        if not (etag is None or isinstance(etag, str)):
            raise ValueError("bad etag")
        if not (last_modified is None or isinstance(last_modified, str)):
            raise ValueError("bad last_modified")
        raw_chunks = obj.get("chunks")
        if not isinstance(raw_chunks, list):
            raise ValueError("chunks missing")
        chunks = []
        for c in raw_chunks:
            if not isinstance(c, dict) or set(c) != {"start", "end", "xxh3"}:
                raise ValueError("bad chunk")
            start, end, digest = c["start"], c["end"], c["xxh3"]
            if not (_is_count(start) and _is_count(end) and isinstance(digest, str)):
                raise ValueError("bad chunk")
            chunks.append(DoneChunk(start, end, digest))
        return cls(url, size, etag, last_modified, chunks)

    def same_remote(self, size: int, etag: str | None, last_modified: str | None) -> bool:
        """True when the remote file is (as far as HTTP can tell) the one recorded."""
        if size != self.size:
            return False
        if etag and self.etag and not etag.startswith("W/"):
            return etag == self.etag
        if last_modified and self.last_modified:
            return last_modified == self.last_modified
        # No validator at all on either side: the size is all we have.
        return not (etag or self.etag or last_modified or self.last_modified)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def checkpoint_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def save_checkpoint(dest: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically; raise OSError (never rename) if fsync fails."""
    atomic_write_bytes(checkpoint_path(dest), checkpoint.to_json())


def load_checkpoint(dest: Path) -> Checkpoint | None:
    """The checkpoint of ``dest``, None if there is none; CheckpointError if unusable."""
    path = checkpoint_path(dest)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        cp = Checkpoint.from_json(raw)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} is torn or not ours", path=str(path)) from exc
    for c in cp.chunks:
        if c.end <= c.start or c.end > cp.size:
            raise CheckpointError(f"checkpoint {path} has a chunk outside the file", path=str(path))
    return cp


def remove_checkpoint(dest: Path, *, sweep: bool = True) -> None:
    """Remove the checkpoint, and with ``sweep`` the temp files of checkpoint writers
    killed mid-write, which nothing else removes. The sweep scans the folder: skip it
    when no writer ran."""
    final = checkpoint_path(dest)
    with contextlib.suppress(FileNotFoundError):
        final.unlink()
    if sweep:
        sweep_dead_temps(final)


def xxh3_of_range(fd: int, start: int, end: int) -> str:
    """xxh3_128 (hex) of the bytes ``[start, end)`` of an open file."""
    h = xxhash.xxh3_128()
    buf = bytearray(min(_READ, max(1, end - start)))
    view = memoryview(buf)
    pos = start
    while pos < end:
        n = os.preadv(fd, [view[: min(len(buf), end - pos)]], pos)
        if n <= 0:
            break
        h.update(view[:n])
        pos += n
    return h.hexdigest() if pos == end else ""


def revalidate(dest: Path, cp: Checkpoint) -> list[DoneChunk]:
    """The recorded chunks whose bytes in ``<dest>.part`` still match their xxh3."""
    try:
        fd = os.open(part_path(dest), os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        if os.fstat(fd).st_size != cp.size:
            return []
        return [c for c in cp.chunks if xxh3_of_range(fd, c.start, c.end) == c.xxh3]
    finally:
        os.close(fd)
