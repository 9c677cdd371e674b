"""A small record file rewritten in place, alternating between two checksummed slots.

Why: a record written as temp file + rename needs new blocks on every write, so on a
full disk (ENOSPC) the write fails, for the resume checkpoint at the very moment a user
most needs it. A slot file is written whole once (its blocks allocated) and then each
record overwrites blocks it already owns::

    offset 0        header, 4 KiB: magic b"\x89ACCELSF", format u32 = 2, slot size u32,
                    CRC32 of those 16 bytes u32; zeros to 4 KiB. Written only by the
                    atomic temp + rename path, never in place.
    4 KiB           slot 0, ``slot size`` bytes (a multiple of 4 KiB)
    4 KiB + slot    slot 1 (the file is exactly 4 KiB + 2 x slot size)
    each slot:      seq u64, length u32, CRC32 over (seq, length, payload) u32,
                    payload (``length`` bytes), then whatever was there before

(little-endian). :func:`save` writes the whole record into the slot that does *not*
hold the newest valid record, with the next sequence number (pwrite, then fdatasync);
:func:`records` gives the valid slots newest first. A crash mid-write can only tear the
slot being written, whose CRC then fails, and the other slot still holds the record
before it: "a reader sees the old or the new record, never a mix" holds per slot. Slots
are page-aligned, so a torn page never spans both (nor the header). The blocks are
written as zeros at creation rather than ``fallocate``d: overwriting written blocks
needs no new space on ext4, xfs or tmpfs, where an unwritten extent may still need a
metadata block when it is first written.

A record too large for its slot grows the file: a new, larger file through
:func:`accel.durable.atomic_write_bytes`, which is the only step that can meet ENOSPC
(and then the old file stays as it was). The caller sizes a new file's slots with
``room``, so growth is rare; a grown file keeps the record before the newest in slot 1.

It knows bytes, not what they mean, and it never syncs anything but its own file.
Standard library only (zlib's CRC32), like :mod:`accel.durable`.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

from accel.durable import atomic_write_bytes

__all__ = ["records", "save"]

MAGIC = b"\x89ACCELSF"
FORMAT = 2
HEADER_SIZE = 4096
PAGE = 4096
_HEADER = struct.Struct("<8sIII")  # magic, format, slot size, CRC32 of the first three
_SLOT_HEAD = struct.Struct("<QII")  # seq, payload length, CRC32
_SEQ_LEN = struct.Struct("<QI")
#: the least a new file's slot holds
MIN_SLOT = 64 * 1024

# Saves of one file are serialized within the process: two writers picking the same
# spare slot would tear it (never both slots, but the newer record would be lost).
# Striped rather than one lock per path, so a long-lived process keeps no lock per file.
# Across processes there is one writer per file: the engine's supervisor of that
# download (the ModelManager's file lock keeps a second one away).
_LOCKS = tuple(threading.Lock() for _ in range(64))


def save(path: Path, payload: bytes, *, room: Callable[[], int] | None = None) -> None:
    """Make ``payload`` the newest record of ``path``; OSError if it is not durable.

    In place into the spare slot when the file exists and the record fits (no new
    blocks: this works on a full disk); otherwise a new file whose slots hold twice this
    record and at least ``room()`` payload bytes (asked only then: most saves never
    need it).
    """
    with _LOCKS[hash(str(path)) % len(_LOCKS)]:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            _create(path, payload, room=room, seq=1)
            return
        previous = b""
        try:
            found = _open_slots(fd)
            if found is None:  # not a slot file (an older format, say): replaced whole
                seq = 1
            else:
                slot_size, newest = found
                seq = newest[0] + 1 if newest is not None else 1
                if _SLOT_HEAD.size + len(payload) <= slot_size:
                    target = 0 if newest is None or newest[1] == 1 else 1
                    _pwrite_all(fd, _record(seq, payload), HEADER_SIZE + target * slot_size)
                    os.fdatasync(fd)
                    return
                if newest is not None:
                    previous = newest[2]
        finally:
            os.close(fd)
        _create(path, payload, room=room, seq=seq, previous=previous)


def records(raw: bytes) -> list[bytes]:
    """The payloads of the valid slots of a whole file, newest first; ValueError when
    ``raw`` is not a slot file (bad header, or cut: the file is never resized in place)."""
    slot_size = _slot_size_of(raw)
    if slot_size is None:
        raise ValueError("not a slot file")
    if len(raw) != HEADER_SIZE + 2 * slot_size:
        raise ValueError("a slot file of the wrong length")
    view = memoryview(raw)
    found = []
    for i in (0, 1):
        at = HEADER_SIZE + i * slot_size
        got = _slot_record(view[at : at + slot_size])
        if got is not None:
            found.append(got)
    return [payload for _, payload in sorted(found, key=lambda f: f[0], reverse=True)]


def _record(seq: int, payload: bytes) -> bytes:
    """One slot's bytes: its head (seq, length, CRC32) and the payload."""
    crc = zlib.crc32(payload, zlib.crc32(_SEQ_LEN.pack(seq, len(payload))))
    return _SLOT_HEAD.pack(seq, len(payload), crc) + payload


def _slot_record(slot: bytes | memoryview) -> tuple[int, bytes] | None:
    """``(seq, payload)`` of a slot whose CRC holds; None for a torn or empty one."""
    if len(slot) < _SLOT_HEAD.size:
        return None
    seq, length, crc = _SLOT_HEAD.unpack_from(slot)
    end = _SLOT_HEAD.size + length
    if seq == 0 or end > len(slot):
        return None
    payload = bytes(slot[_SLOT_HEAD.size : end])
    if zlib.crc32(payload, zlib.crc32(_SEQ_LEN.pack(seq, length))) != crc:
        return None
    return seq, payload


def _header(slot_size: int) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT, slot_size, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head))


def _slot_size_of(header: bytes) -> int | None:
    """The slot size a header declares, None if it is not a valid one."""
    if len(header) < _HEADER.size:
        return None
    magic, fmt, slot_size, crc = _HEADER.unpack_from(header)
    if magic != MAGIC or fmt != FORMAT or crc != zlib.crc32(header[: _HEADER.size - 4]):
        return None
    if slot_size < PAGE or slot_size % PAGE:
        return None
    return int(slot_size)


def _open_slots(fd: int) -> tuple[int, tuple[int, int, bytes] | None] | None:
    """``(slot size, (seq, slot index, record) of the newest valid record or None)`` of
    an open slot file, or None when it is not one."""
    slot_size = _slot_size_of(os.pread(fd, _HEADER.size, 0))
    if slot_size is None or os.fstat(fd).st_size != HEADER_SIZE + 2 * slot_size:
        return None
    newest: tuple[int, int, bytes] | None = None
    for i in (0, 1):
        at = HEADER_SIZE + i * slot_size
        seq, length, _ = _SLOT_HEAD.unpack(os.pread(fd, _SLOT_HEAD.size, at))
        if seq == 0 or _SLOT_HEAD.size + length > slot_size:
            continue
        if newest is not None and seq <= newest[0]:
            continue
        raw = os.pread(fd, _SLOT_HEAD.size + length, at)
        if _slot_record(raw) is not None:
            newest = (seq, i, raw)
    return slot_size, newest


def _create(
    path: Path,
    payload: bytes,
    *,
    room: Callable[[], int] | None,
    seq: int,
    previous: bytes = b"",
) -> None:
    """Write a new file atomically: ``payload`` in slot 0 and, when the file grows, the
    ``previous`` newest record in slot 1, so the record before the newest survives a
    growth as it survives any other save."""
    rec = _record(seq, payload)
    want = max(MIN_SLOT, 2 * len(rec), _SLOT_HEAD.size + (room() if room else 0))
    slot_size = -(-want // PAGE) * PAGE
    image = bytearray(HEADER_SIZE + 2 * slot_size)
    head = _header(slot_size)
    image[: len(head)] = head
    image[HEADER_SIZE : HEADER_SIZE + len(rec)] = rec
    if len(previous) <= slot_size:
        image[HEADER_SIZE + slot_size : HEADER_SIZE + slot_size + len(previous)] = previous
    atomic_write_bytes(path, bytes(image))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
