"""The resume checkpoint ``<dest>.part.json``: which chunks of ``<dest>.part`` are done.

Owns the checkpoint's format, its durable writes, and the rules of resuming: a
checkpoint that does not parse is ignored, one recorded for another remote (size, ETag or
Last-Modified differ) is discarded, and each recorded chunk is re-read and kept only if
its xxh3_128 still matches. It never talks to the network.

On disk (format 2) the checkpoint is a :mod:`accel.fetch.slotfile`: written whole once,
then each save overwrites the spare one of two checksummed slots in place, so a save
needs no new blocks and still succeeds on a full disk, and a torn save leaves the record
before it. New files are sized for the chunk count the download will probably reach,
so the file rarely has to grow (the only step that needs free space). The name still
ends in ``.json`` so every caller and cleanup that knows the checkpoint by name keeps
finding it.

The payload is packed with :mod:`struct`, not JSON: a save runs every second on the
supervisor's thread, and 1,600 chunks (100 GB in 64 MiB chunks) cost ~6 ms through
``asdict`` + ``json`` against ~0.5 ms packed. A format-1 file (JSON, written by an older
accel) still loads, so a rerun after an upgrade resumes; the next save replaces it.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import xxhash

from accel.durable import sweep_dead_temps
from accel.errors import CheckpointError
from accel.fetch import slotfile

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

    A plain dataclass, packed with :mod:`struct` and checked by hand, rather than a
    pydantic model: the supervisor of ``accel get`` counts against the 150 MiB budget of
    the whole process tree, and pydantic alone costs about 10 MiB of it.

    ``format`` is the version of these fields (1 since the first checkpoint); the file
    that holds them has its own (:mod:`accel.fetch.slotfile`, format 2).
    """

    url: str
    size: int
    etag: str | None = None
    last_modified: str | None = None
    chunks: list[DoneChunk] = field(default_factory=list)
    format: int = 1

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        """Parse and type-check a format-1 file (JSON, written before format 2);
        ValueError for anything that is not one."""
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
    """Record ``checkpoint`` durably; OSError if it could not be made durable.

    In place once the file exists (no new blocks: works on a full disk). A failed save
    leaves the previous checkpoint loadable, whatever the failure.
    """
    payload = _encode(checkpoint)
    slotfile.save(checkpoint_path(dest), payload, room=lambda: _room_for(checkpoint, len(payload)))


def load_checkpoint(dest: Path) -> Checkpoint | None:
    """The checkpoint of ``dest``, None if there is none; CheckpointError if unusable."""
    path = checkpoint_path(dest)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        cp = Checkpoint.from_json(raw) if raw[:1] == b"{" else _newest(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise CheckpointError(f"checkpoint {path} is torn or not ours", path=str(path)) from exc
    for c in cp.chunks:
        if c.end <= c.start or c.end > cp.size:
            raise CheckpointError(f"checkpoint {path} has a chunk outside the file", path=str(path))
    return cp


def _newest(raw: bytes) -> Checkpoint:
    for payload in slotfile.records(raw):
        try:
            return _decode(payload)
        except ValueError:
            continue  # its CRC holds yet it is no checkpoint: not ours, try the older one
    raise ValueError("no slot holds a checkpoint")


#: the most a new checkpoint file presizes for chunks it may reach (past it, growth
#: doubles): 4 MiB per slot is ~80,000 chunks
_MAX_ROOM = 4 * 1024 * 1024


def _room_for(checkpoint: Checkpoint, payload_len: int) -> int:
    """Payload bytes a new file's slots should hold: the fixed part and twice the chunks
    the file makes at the longest chunk seen so far (splits near the end add a few
    shorter ones; the factor 2 covers them)."""
    chunks = checkpoint.chunks
    if not chunks or not checkpoint.size:
        return 0
    longest = max(c.end - c.start for c in chunks)
    if longest <= 0:
        return 0
    fixed = len(_encode(replace(checkpoint, chunks=[])))  # URL, validators: once, not per chunk
    per_chunk = -(-(payload_len - fixed) // len(chunks))
    return min(fixed + 2 * per_chunk * -(-checkpoint.size // longest), _MAX_ROOM)


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


# --- the payload: a Checkpoint packed with struct ---------------------------------------

_FIXED = struct.Struct("<QI")  # size, number of chunks
_STR_LEN = struct.Struct("<i")  # -1: None


def _encode(cp: Checkpoint) -> bytes:
    """``size, n, url, etag, last_modified, n x (start, end), n x digest length, digests``.

    Strings are UTF-8 with lone surrogates kept (a URL taken from argv may hold them).
    """
    chunks = cp.chunks
    parts = [_FIXED.pack(cp.size, len(chunks))]
    for s in (cp.url, cp.etag, cp.last_modified):
        if s is None:
            parts.append(_STR_LEN.pack(-1))
        else:
            b = s.encode("utf-8", "surrogatepass")
            parts += (_STR_LEN.pack(len(b)), b)
    digests = [c.xxh3.encode("utf-8", "surrogatepass") for c in chunks]
    n = len(chunks)
    parts.append(struct.pack(f"<{2 * n}Q", *[v for c in chunks for v in (c.start, c.end)]))
    parts.append(struct.pack(f"<{n}I", *map(len, digests)))
    parts += digests
    return b"".join(parts)


def _decode(payload: bytes) -> Checkpoint:
    """The inverse of :func:`_encode`; ValueError for anything else."""
    try:
        size, n = _FIXED.unpack_from(payload)
        if 20 * n > len(payload):  # 20 bytes per chunk at least: a count from garbage
            raise ValueError("more chunks than bytes")
        at = _FIXED.size
        strings: list[str | None] = []
        for _ in range(3):
            (length,) = _STR_LEN.unpack_from(payload, at)
            at += _STR_LEN.size
            if length < 0:
                strings.append(None)
                continue
            if at + length > len(payload):
                raise ValueError("string past the end")
            strings.append(payload[at : at + length].decode("utf-8", "surrogatepass"))
            at += length
        bounds = struct.unpack_from(f"<{2 * n}Q", payload, at)
        at += 16 * n
        lengths = struct.unpack_from(f"<{n}I", payload, at)
        at += 4 * n
        chunks = []
        for i, length in enumerate(lengths):
            if at + length > len(payload):
                raise ValueError("digest past the end")
            digest = payload[at : at + length].decode("utf-8", "surrogatepass")
            at += length
            chunks.append(DoneChunk(bounds[2 * i], bounds[2 * i + 1], digest))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a checkpoint payload: {exc}") from exc
    url, etag, last_modified = strings
    if url is None or at != len(payload):
        raise ValueError("not a checkpoint payload")
    return Checkpoint(url, size, etag, last_modified, chunks)
