"""The end of a download: the SHA256 of the finished prefix, the check, the rename.

:class:`PrefixHasher` advances the file's SHA256 over the contiguous finished prefix
while later chunks still download, so the check after the last byte is short; it reads
the page cache back in small pieces (a disk that cannot read the bytes back is a clear
DownloadError). :func:`publish` is the durable rename of ``<name>.part``.

Never touches the network; never decides what to fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from accel.errors import AccelError, DownloadError, from_os_error
from accel.fetch.checkpoint import remove_checkpoint
from accel.fetch.complete import stamp, stamp_sidecar
from accel.fetch.types import Expected

__all__ = ["PrefixHasher", "disk_error", "publish"]

#: bytes per read-back for the hash: small enough to stay in a core's L2 cache (see
#: ``PrefixHasher._hash_to``), large enough that the GIL changes hands rarely
_HASH_READ = 256 * 1024


class PrefixHasher:
    """SHA256 of ``part``'s first ``hashed`` bytes, advanced by :meth:`run`."""

    def __init__(self, part: Path, total: int) -> None:
        self.part = part
        self.total = total
        self.sha = hashlib.sha256()
        self.hashed = 0
        #: the digest as a worker computed it while streaming the whole file (then the
        #: file is never read back)
        self.whole: str | None = None
        self.wake = asyncio.Event()
        #: the read-back buffer, made at the first read back (a worker hashed most
        #: files whole: 256 KiB zeroed per small file for nothing)
        self._buf: bytearray | None = None

    def adopt(self, sha256_hex: str) -> None:
        """A worker hashed every byte on the way: nothing left to read."""
        self.whole, self.hashed = sha256_hex, self.total

    def hexdigest(self) -> str:
        return self.whole or self.sha.hexdigest()

    async def run(self, done_prefix: Callable[[], int]) -> None:
        """Hash up to ``done_prefix()`` whenever :attr:`wake` is set, until the end."""
        rfd = -1
        try:
            while self.hashed < self.total:
                self.wake.clear()
                target = done_prefix()
                if target > self.hashed:
                    if rfd < 0:  # not at all when a worker hashed the whole file
                        rfd = os.open(self.part, os.O_RDONLY)
                    await asyncio.to_thread(self._hash_to, rfd, target)
                    continue
                await self.wake.wait()
        finally:
            if rfd >= 0:
                os.close(rfd)

    def restart(self) -> None:
        """Forget everything hashed (the bytes under it are being repaired)."""
        self.sha = hashlib.sha256()
        self.hashed = 0
        self.whole = None

    def _hash_to(self, rfd: int, target: int) -> None:
        # Read back in pieces that stay in the core's cache: the kernel's copy lands in
        # L2 and the hash reads it there. Hashing the page cache through a mapping
        # (4 MiB windows, populated first) cost more: on this 2-core VM, 1 GiB hashed
        # in 0.87-0.97 CPU-s mapped against 0.74-0.77 CPU-s read 256 KiB at a time
        # (not measured why; likely the page tables built and torn down each window and
        # reads from memory instead of from a cache-sized buffer). A disk that cannot read the
        # bytes back is an EIO here, a clear DownloadError (a mapping would SIGBUS).
        start = self.hashed
        if os.fstat(rfd).st_size < target:
            raise DownloadError(f"{self.part} is shorter than expected: was it truncated?")
        if self._buf is None:
            self._buf = bytearray(_HASH_READ)
        buf = self._buf
        view = memoryview(buf)
        update = self.sha.update
        try:
            while self.hashed < target:
                n = os.preadv(rfd, [view[: min(len(buf), target - self.hashed)]], self.hashed)
                if n == 0:
                    raise DownloadError(f"{self.part} is shorter than expected: was it truncated?")
                update(view[:n])
                self.hashed += n
        except OSError as exc:
            raise DownloadError(
                f"cannot read {self.part} back from the disk: {exc.strerror or exc}",
                path=str(self.part),
                hint="the disk reported a read error; check it (dmesg), then rerun: "
                "finished chunks are kept and re-checked",
            ) from exc
        finally:
            view.release()
        # Start writing the hashed prefix back to disk now, so the fsync before the
        # rename only waits for the last few MiB (last byte -> verified file stays short).
        _start_writeback(rfd, start, target - start)


def _load_sync_file_range() -> Callable[[int, int, int], None]:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return lambda fd, off, n: None

    def start(fd: int, off: int, n: int) -> None:
        fn(fd, off, n, 2)  # SYNC_FILE_RANGE_WRITE: start writeback, do not wait

    return start


_start_writeback = _load_sync_file_range()


def publish(
    fd: int,
    part: Path,
    dest: Path,
    durable: bool = True,
    *,
    sweep: bool = True,
    verified: tuple[str, Expected] | None = None,
    checkpoint: bool = True,
) -> None:
    """fsync the data, rename ``.part`` to its final name, fsync the directory, and
    remove the checkpoint (its cleanup scans the directory: kept off the event loop).

    ``durable=False`` skips both fsyncs. The rename still comes only after the SHA256
    check, so a killed process never leaves a half file under the final name; only a
    power cut can, and a caller that asks for this must sync before trusting the file.

    ``verified`` (the SHA256 and the expectation that checked the bytes) stamps the
    file with :func:`accel.fetch.complete.stamp`, so a rerun trusts it without a
    request. Only when ``durable``: the record must never outlive bytes a power cut
    lost, and the one fsync of the data carries the attribute too.

    ``checkpoint=False``: the caller knows none was ever written (no unlink to try).
    """
    stamped = True
    if verified is not None and durable:
        stamped = stamp(fd, dest, *verified)
    if durable:
        os.fsync(fd)
    os.replace(part, dest)
    if not stamped:
        assert verified is not None
        stamp_sidecar(fd, dest, *verified)
    if durable:
        dfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    if checkpoint or sweep:
        remove_checkpoint(dest, sweep=sweep)


def disk_error(exc: OSError, dest: Path) -> AccelError:
    """The local file's OSError as the error a user reads (the fetch layer's seam)."""
    return from_os_error(exc, action="write", path=exc.filename or dest)
