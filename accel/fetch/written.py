"""What each running task has written, in memory shared by the supervisor and its workers.

A kill -9 keeps, of a running chunk, what the last checkpoint recorded of it. Reported
by messages (a :class:`~accel.fetch.messages.Progress` every 1 MiB or 0.1 s), that was
little: at 64 connections the chunks are 1 MiB and most end before their first report,
so a kill lost nearly all 64 MiB in flight; a report every 256 KiB kept more but cost
S1 a tenth of a second of CPU in messages. Here each worker thread writes, after every
write to the ``.part``, its task's position and the xxh3_128 of the bytes from the
task's start into a slot of one shared page set (a memfd each worker maps), and the
supervisor reads the slots when it writes a checkpoint: no message, no wake-up.

A slot is ``seq, tid, pos, digest`` (a seqlock: the writer makes ``seq`` odd, writes,
makes it even; a reader takes the fields only if ``seq`` was the same even number
before and after). Task ``tid`` uses slot ``tid % SLOTS`` and the reader checks the
tid: a slot taken over by a later task reads as absent. What a reader takes is only
ever a claim: a resume re-hashes every recorded range before trusting it
(:func:`~accel.fetch.checkpoint.revalidate`), so a torn or stale record costs at most
its bytes, never a wrong byte kept.
"""

from __future__ import annotations

import mmap
import os
import struct

__all__ = ["SLOTS", "WrittenTable", "table_fd"]

#: slots in the table: more than the tasks that run at once (64 connections, races,
#: probes) by far, so a running task's slot is not taken by a later task's
SLOTS = 4096
_SLOT = struct.Struct("<QQQ16s")  # seq, tid, pos, xxh3_128 digest (big-endian bytes)
_SEQ = struct.Struct("<Q")
_FIELDS = struct.Struct("<QQ16s")

_fd = -1
_pid = -1


def table_fd() -> int:
    """This process's table (created on first use, again in a forked child, whose
    workers must not share its parent's slots): the fd its workers inherit."""
    global _fd, _pid
    if _pid != os.getpid():
        _fd = os.memfd_create("accel-written", os.MFD_CLOEXEC)
        os.ftruncate(_fd, SLOTS * _SLOT.size)
        _pid = os.getpid()
    return _fd


class WrittenTable:
    """A mapping of the table: :meth:`write` in workers, :meth:`read` in the supervisor."""

    def __init__(self, fd: int) -> None:
        self.map = mmap.mmap(fd, SLOTS * _SLOT.size)

    def write(self, tid: int, pos: int, digest: bytes) -> None:
        """Task ``tid`` (its only writer) has written up to ``pos``; ``digest`` is the
        xxh3_128 of its bytes from its start."""
        m, off = self.map, (tid % SLOTS) * _SLOT.size
        seq = _SEQ.unpack_from(m, off)[0] | 1
        _SEQ.pack_into(m, off, seq)
        _FIELDS.pack_into(m, off + 8, tid, pos, digest)
        _SEQ.pack_into(m, off, seq + 1)

    def read(self, tid: int) -> tuple[int, str] | None:
        """``(pos, xxh3 hex)`` as task ``tid`` last wrote them, or None (it wrote
        nothing yet, a later task has its slot, or the slot is being written)."""
        m, off = self.map, (tid % SLOTS) * _SLOT.size
        seq, got, pos, digest = _SLOT.unpack_from(m, off)
        if seq & 1 or got != tid or _SEQ.unpack_from(m, off)[0] != seq:
            return None
        return pos, digest.hex()

    def close(self) -> None:
        self.map.close()
