"""The resume checkpoint ``<dest>.part.json``: which chunks of ``<dest>.part`` are done.

Owns the checkpoint's format, its durable writes, and the rules of resuming: a
checkpoint that does not parse is ignored, one recorded for another remote (size, ETag or
Last-Modified differ) is discarded, and each recorded chunk is re-read and kept only if
its xxh3_128 still matches. It never talks to the network.

Why two slots: a checkpoint written as temp file + rename needs new blocks every time,
so on a full disk (ENOSPC) it failed and the progress since the last one was lost, the
very moment a user most needs the resume. So the file (format 2) is preallocated once
and then rewritten in place::

    offset 0        header, 4 KiB: magic b"\x89ACCELCP", format u32 = 2, slot size u32,
                    xxh3_64 of those 16 bytes; zeros to 4 KiB. Written only by the
                    atomic temp + rename path, never in place.
    4 KiB           slot 0, ``slot size`` bytes (a multiple of 4 KiB)
    4 KiB + slot    slot 1
    each slot:      seq u64, length u32, 4 zero bytes, xxh3_64 over (seq, length,
                    payload) u64, payload (``length`` bytes), then stale bytes

(all little-endian). A save writes the whole record into the slot that does *not* hold
the newest valid record (pwrite, then fdatasync) with the next sequence number; a load
takes the valid slot with the highest one. A crash mid-write can only tear the slot
being written, whose checksum then fails, and the other slot still holds the record
before it: DESIGN's "old or new, never a mix" holds per slot. Slots are page-aligned so
a torn page never spans both. The blocks are written (zeros) at creation rather than
``fallocate``d: overwriting written blocks needs no new space on ext4, xfs or tmpfs,
where an unwritten extent may still need a metadata block when first written.

A record too large for its slot grows the file: a new, larger file goes through the
atomic temp + rename path (:func:`accel.durable.atomic_write_bytes`), the only step
that can meet ENOSPC, and then the old file is left as it was. Slots are sized at
creation for the chunk count the file will probably reach, so growth is rare.

The payload is packed with :mod:`struct`, not JSON: a save runs every second on the
supervisor's thread, and 1,600 chunks (100 GB in 64 MiB chunks) cost ~6 ms through
``asdict`` + ``json`` against well under 1 ms packed. A format-1 file (JSON, from an
older accel) still loads, so a rerun after an upgrade resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
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
    """Record ``checkpoint`` durably; OSError if it could not be made durable.

    In place into the spare slot once the file exists (no new blocks: works on a full
    disk). A failed save leaves the previous record loadable, whatever the failure.
    """
    path = checkpoint_path(dest)
    payload = _encode(checkpoint)
    with _lock_for(path):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            _create(path, checkpoint, payload, seq=1)
            return
        try:
            found = _open_slots(fd)
            if found is not None:
                slot_size, newest = found
                seq = newest[0] + 1 if newest is not None else 1
                if _SLOT_HEAD.size + len(payload) <= slot_size:
                    target = 0 if newest is None or newest[1] == 1 else 1
                    record = _record(seq, payload)
                    _pwrite_all(fd, record, _HEADER_SIZE + target * slot_size)
                    os.fdatasync(fd)
                    return
            else:
                seq = 1  # a format-1 (JSON) or foreign file: replaced whole
        finally:
            os.close(fd)
        _create(path, checkpoint, payload, seq=seq)


def load_checkpoint(dest: Path) -> Checkpoint | None:
    """The checkpoint of ``dest``, None if there is none; CheckpointError if unusable."""
    path = checkpoint_path(dest)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        cp = Checkpoint.from_json(raw) if raw[:1] == b"{" else _newest_in(raw)
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


# --- the two-slot file (format 2) ------------------------------------------------------

_MAGIC = b"\x89ACCELCP"
_FORMAT = 2
_HEADER = struct.Struct("<8sII")  # magic, format, slot size; then its xxh3_64 (u64)
_HEADER_SIZE = 4096  # the header's page: a slot write never touches it
_PAGE = 4096
_SLOT_HEAD = struct.Struct("<QI4xQ")  # seq, payload length, pad, xxh3_64
_SEQ_LEN = struct.Struct("<QI")
#: a new file's slots hold at least this much (~1,300 chunks)
_MIN_SLOT = 64 * 1024
#: the most a new file presizes for the chunks it may reach (past it, growth doubles)
_MAX_PRESIZE = 4 * 1024 * 1024

# Saves of one checkpoint are serialized within the process: the supervisor's final
# save can run while a periodic one is still in its thread, and two writers picking the
# same spare slot would tear it (never both slots, but the newer record would be lost).
# Striped rather than one lock per path, so a long-lived engine keeps no lock per file.
_LOCKS = tuple(threading.Lock() for _ in range(64))


def _lock_for(path: Path) -> threading.Lock:
    return _LOCKS[hash(str(path)) % len(_LOCKS)]


def _record(seq: int, payload: bytes) -> bytes:
    """One slot's bytes: its head (seq, length, checksum) and the payload."""
    digest = xxhash.xxh3_64_intdigest(_SEQ_LEN.pack(seq, len(payload)) + payload)
    return _SLOT_HEAD.pack(seq, len(payload), digest) + payload


def _slot_record(slot: bytes | memoryview) -> tuple[int, bytes] | None:
    """``(seq, payload)`` of a slot whose checksum holds, None for a torn or empty one."""
    if len(slot) < _SLOT_HEAD.size:
        return None
    seq, length, digest = _SLOT_HEAD.unpack_from(slot)
    end = _SLOT_HEAD.size + length
    if seq == 0 or end > len(slot):
        return None
    payload = bytes(slot[_SLOT_HEAD.size : end])
    if xxhash.xxh3_64_intdigest(_SEQ_LEN.pack(seq, length) + payload) != digest:
        return None
    return seq, payload


def _header(slot_size: int) -> bytes:
    head = _HEADER.pack(_MAGIC, _FORMAT, slot_size)
    return head + struct.pack("<Q", xxhash.xxh3_64_intdigest(head))


def _slot_size_of(header: bytes) -> int | None:
    """The slot size a format-2 header declares, None if it is not one."""
    if len(header) < _HEADER.size + 8:
        return None
    magic, fmt, slot_size = _HEADER.unpack_from(header)
    (digest,) = struct.unpack_from("<Q", header, _HEADER.size)
    if magic != _MAGIC or fmt != _FORMAT or digest != xxhash.xxh3_64_intdigest(header[:16]):
        return None
    if slot_size < _PAGE or slot_size % _PAGE:
        return None
    return int(slot_size)


def _newest_in(raw: bytes) -> Checkpoint:
    """The checkpoint in the newest valid slot of a whole format-2 file; ValueError if none."""
    slot_size = _slot_size_of(raw[:_HEADER_SIZE])
    if slot_size is None:
        raise ValueError("not a checkpoint file")
    if len(raw) != _HEADER_SIZE + 2 * slot_size:
        # Never resized in place: a file of another length was cut or is not ours.
        raise ValueError("checkpoint file of the wrong length")
    view = memoryview(raw)
    best: tuple[int, Checkpoint] | None = None
    for i in (0, 1):
        at = _HEADER_SIZE + i * slot_size
        found = _slot_record(view[at : at + slot_size])
        if found is None or (best is not None and found[0] <= best[0]):
            continue
        try:
            best = (found[0], _decode(found[1]))
        except ValueError:
            continue  # checksummed yet not a checkpoint: not one of ours
    if best is None:
        raise ValueError("no valid slot")
    return best[1]


def _open_slots(fd: int) -> tuple[int, tuple[int, int] | None] | None:
    """``(slot size, (seq, slot index) of the newest valid record or None)`` of an open
    format-2 file, or None when the file is not one (a format-1 JSON file, say)."""
    slot_size = _slot_size_of(os.pread(fd, _HEADER.size + 8, 0))
    if slot_size is None or os.fstat(fd).st_size != _HEADER_SIZE + 2 * slot_size:
        return None
    newest: tuple[int, int] | None = None
    for i in (0, 1):
        at = _HEADER_SIZE + i * slot_size
        (seq, length, _) = _SLOT_HEAD.unpack(os.pread(fd, _SLOT_HEAD.size, at))
        if seq == 0 or _SLOT_HEAD.size + length > slot_size:
            continue
        if newest is not None and seq <= newest[0]:
            continue
        found = _slot_record(os.pread(fd, _SLOT_HEAD.size + length, at))
        if found is not None:
            newest = (found[0], i)
    return slot_size, newest


def _create(path: Path, checkpoint: Checkpoint, payload: bytes, *, seq: int) -> None:
    """Write a new preallocated file holding ``payload`` in slot 0, atomically."""
    record = _record(seq, payload)
    slot_size = _slot_size_for(checkpoint, len(record))
    image = bytearray(_HEADER_SIZE + 2 * slot_size)
    head = _header(slot_size)
    image[: len(head)] = head
    image[_HEADER_SIZE : _HEADER_SIZE + len(record)] = record
    atomic_write_bytes(path, bytes(image))


def _slot_size_for(checkpoint: Checkpoint, record_len: int) -> int:
    """Room for twice the record the file will probably hold at the end: the number of
    chunks the file makes at the longest chunk seen so far (splits near the end add a
    few shorter ones; the factor 2 covers them), at least 64 KiB."""
    want = 2 * record_len
    chunks = checkpoint.chunks
    if chunks and checkpoint.size:
        longest = max(c.end - c.start for c in chunks)
        if longest > 0:
            per_chunk = -(-(record_len - _SLOT_HEAD.size) // len(chunks))
            projected = per_chunk * -(-checkpoint.size // longest)
            want = max(want, min(2 * projected, _MAX_PRESIZE))
    want = max(want, _MIN_SLOT)
    return -(-want // _PAGE) * _PAGE


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


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
