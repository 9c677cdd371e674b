"""A rerun on a file that is already there: trust it, re-check it, or repair it.

After a download whose bytes an expected digest checked (the SHA256, or the manifest's
blake3 blocks), :func:`stamp` records what was verified with the file: its size,
``mtime_ns`` and inode, its SHA256 and a fingerprint of the block digests. The record is
an extended attribute of the file itself (``user.accel.verified``): nothing beside the
file, it follows the file through a rename on its filesystem, and a file written anew
under that name (another inode) simply has none. Where the filesystem refuses user
xattrs, a hidden sidecar ``.<name>.accel.json`` holds the same record, and the inode and
mtime in it are what tell a replaced file apart.

On a rerun (:func:`reuse_existing`), with an expected digest and a regular file at the
destination:

- a record that vouches for the expected digest, while size, mtime and inode still
  match: the file is complete and verified, no request is sent (``wget -c``, ``curl -C -``);
- otherwise (or with ``check``) the file is re-hashed, never downloaded: if it matches,
  it is complete (and stamped); if the manifest's blocks are known, the good blocks stay
  and the file becomes the ``.part`` of a resume that fetches only the blocks that
  differ; without blocks a mismatch is downloaded again.

The quick check trusts size + mtime + inode, as rsync and make do: a tool that rewrites
bytes in place and then sets the old mtime back is not noticed; ``--check`` is for that.
Without any expected digest nothing is reused (the remote may have changed; nothing
could say "verified").

Never talks to the network; never imports pydantic (the supervisor's memory budget).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from accel.durable import atomic_write_bytes
from accel.fetch.checkpoint import Checkpoint, DoneChunk, part_path
from accel.fetch.types import DownloadResult

if TYPE_CHECKING:
    from accel.fetch.types import Expected

__all__ = [
    "XATTR",
    "Reuse",
    "Verified",
    "blocks_fingerprint",
    "has_digest",
    "read_record",
    "reuse_existing",
    "sidecar_path",
    "stamp",
    "stamp_sidecar",
]

XATTR = "user.accel.verified"
MiB = 1024 * 1024
_READ = 4 * MiB
#: xattrs the filesystem does not take (tmpfs before Linux 6.6, some FUSE and NFS)
_NO_XATTR = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG, errno.ENOSPC)


@dataclass(frozen=True)
class Verified:
    """What was verified about a finished file, and which file it was (size, mtime, inode).

    ``sha256`` is the digest of the bytes as they were checked; ``blocks`` the
    fingerprint of the block digests they matched (:func:`blocks_fingerprint`), if any.
    """

    size: int
    mtime_ns: int
    ino: int
    sha256: str
    blocks: str | None = None

    def to_bytes(self) -> bytes:
        obj: dict[str, object] = {"v": 1, "size": self.size, "mtime_ns": self.mtime_ns}
        obj |= {"ino": self.ino, "sha256": self.sha256, "blocks": self.blocks}
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Verified | None:
        """The record in ``raw``, or None for anything that is not one of ours."""
        try:
            obj = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(obj, dict) or obj.get("v") != 1:
            return None
        size, mtime, ino = obj.get("size"), obj.get("mtime_ns"), obj.get("ino")
        sha, blocks = obj.get("sha256"), obj.get("blocks")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, mtime, ino)):
            return None
        if not isinstance(sha, str) or not (blocks is None or isinstance(blocks, str)):
            return None
        return cls(size, mtime, ino, sha, blocks)  # type: ignore[arg-type]

    def describes(self, st: os.stat_result) -> bool:
        """The file is still the one that was verified (as far as metadata can tell)."""
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.ino)

    def vouches_for(self, expected: Expected) -> bool:
        """The digest checked then is the one expected now."""
        if expected.sha256:
            return self.sha256 == expected.sha256.lower()
        fingerprint = blocks_fingerprint(expected)
        return fingerprint is not None and fingerprint == self.blocks


def blocks_fingerprint(expected: Expected) -> str | None:
    """``<block size>:<sha256 of the block digests>``: the manifest's blocks in one word."""
    chunks = expected.chunks
    if chunks is None or not chunks.digests:
        return None
    joined = "\n".join(chunks.digests).encode()
    return f"{chunks.size}:{hashlib.sha256(joined).hexdigest()}"


def has_digest(expected: Expected) -> bool:
    """Could anything verify the bytes? (A SHA256, or the manifest's blocks.)"""
    return bool(expected.sha256) or blocks_fingerprint(expected) is not None


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.accel.json")


def stamp(fd: int, dest: Path, sha256: str, expected: Expected) -> bool:
    """Record on the open file ``fd`` (to be, or already, named ``dest``) that its bytes
    were verified; returns False when only a sidecar could hold the record (the caller
    writes it with :func:`stamp_sidecar` once the file has its final name).

    Call it after the last write (the mtime is taken now) and before the fsync that
    makes the data durable: that one fsync then carries the attribute too.
    """
    st = os.fstat(fd)
    record = Verified(st.st_size, st.st_mtime_ns, st.st_ino, sha256, blocks_fingerprint(expected))
    try:
        os.setxattr(fd, XATTR, record.to_bytes())
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return False
        raise
    with contextlib.suppress(FileNotFoundError):
        sidecar_path(dest).unlink()  # an older record, of a file now replaced
    return True


def stamp_sidecar(fd: int, dest: Path, sha256: str, expected: Expected) -> None:
    """The record as ``.<name>.accel.json`` beside ``dest`` (no user xattrs here)."""
    st = os.fstat(fd)
    record = Verified(st.st_size, st.st_mtime_ns, st.st_ino, sha256, blocks_fingerprint(expected))
    atomic_write_bytes(sidecar_path(dest), record.to_bytes())


def read_record(dest: Path) -> Verified | None:
    """The record of ``dest`` (its xattr, else its sidecar), None if there is none."""
    raw: bytes | None
    try:
        raw = os.getxattr(dest, XATTR, follow_symlinks=False)
    except OSError:
        raw = None
    if raw is None:
        try:
            raw = sidecar_path(dest).read_bytes()
        except OSError:
            return None
    return Verified.from_bytes(raw)


@dataclass(frozen=True)
class Reuse:
    """What the file already at the destination is worth.

    ``complete``: it is the expected file (``how`` says whether the record sufficed
    or it was re-hashed). Otherwise it was renamed to ``<dest>.part`` and
    ``checkpoint`` lists its good blocks: a resume fetches only the others.
    """

    complete: bool
    how: str
    size: int
    sha256: str = ""
    checkpoint: Checkpoint | None = None
    bad_blocks: int = 0

    def result(self, dest: Path, elapsed_s: float) -> DownloadResult:
        """The download's result when the file was complete already: nothing fetched."""
        return DownloadResult(
            path=dest,
            size=self.size,
            sha256=self.sha256,
            elapsed_s=elapsed_s,
            bytes_fetched=0,
            resumed_bytes=self.size,
            ranged=True,
            already_complete=True,
        )


def reuse_existing(
    url: str, dest: Path, expected: Expected, check: bool = False, durable: bool = True
) -> Reuse | None:
    """Decide what a file already at ``dest`` is worth (see the module docstring).

    None: nothing to reuse, the download runs as if there were no file (no expected
    digest, no regular file, a ``.part`` already there, a size that is not the
    expected one, or bytes that differ with no block digests to say where).
    Blocking (it may hash the whole file): run it in a thread.
    """
    if not has_digest(expected) or part_path(dest).exists():
        return None
    try:
        st = os.lstat(dest)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if expected.size is not None and st.st_size != expected.size:
        return None
    record = read_record(dest)
    if not check and record is not None and record.describes(st) and record.vouches_for(expected):
        return Reuse(True, "record", st.st_size, record.sha256)
    return _rehash(url, dest, expected, durable)


def _rehash(url: str, dest: Path, expected: Expected, durable: bool) -> Reuse | None:
    try:
        fd = os.open(dest, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        scan = _scan(fd, before.st_size, expected)
        after = os.fstat(fd)
        if scan is None or (after.st_mtime_ns, after.st_size) != (
            before.st_mtime_ns,
            before.st_size,
        ):
            return None  # unusable, or written to while we read it
        sha, good, bad = scan
        sha_ok = not expected.sha256 or sha == expected.sha256.lower()
        if sha_ok and bad == 0:
            if durable:
                # The record vouches for bytes on disk: make them durable first.
                os.fsync(fd)
                if not stamp(fd, dest, sha, expected):
                    stamp_sidecar(fd, dest, sha, expected)
            return Reuse(True, "rehash", before.st_size, sha)
        if bad == 0 or not good:
            return None  # no block says which bytes are wrong, or none is right
    finally:
        os.close(fd)
    # The good blocks stay where they are: the file becomes the .part of a resume.
    with contextlib.suppress(FileNotFoundError):
        sidecar_path(dest).unlink()
    os.replace(dest, part_path(dest))
    cp = Checkpoint(url=url, size=before.st_size, chunks=good)
    return Reuse(False, "repair", before.st_size, checkpoint=cp, bad_blocks=bad)


def _scan(fd: int, size: int, expected: Expected) -> tuple[str, list[DoneChunk], int] | None:
    """One pass over the file: its SHA256, and with block digests the runs of good
    blocks (each with the xxh3 a resume trusts) and the number of bad ones."""
    chunks = expected.chunks
    digests = list(chunks.digests) if chunks is not None else []
    bs = chunks.size if chunks is not None else size or 1
    if digests and len(digests) != -(-size // bs):
        return None
    if digests:
        import blake3
    sha = hashlib.sha256()
    good: list[DoneChunk] = []
    bad = 0
    run_start, run_h = 0, xxhash.xxh3_128()
    buf = bytearray(min(_READ, max(1, size)))
    view = memoryview(buf)
    pos = 0
    for index in range(max(1, len(digests))):
        block_end = min(size, pos + bs) if digests else size
        block_h = blake3.blake3() if digests else None
        cand = run_h.copy()  # the run's xxh3 if this block turns out good
        while pos < block_end:
            n = os.preadv(fd, [view[: min(len(buf), block_end - pos)]], pos)
            if n <= 0:
                return None
            piece = view[:n]
            sha.update(piece)
            if block_h is not None:
                block_h.update(piece)
                cand.update(piece)
            pos += n
        if block_h is None:
            continue
        if block_h.hexdigest() == digests[index]:
            run_h = cand
            continue
        bad += 1
        block_start = index * bs
        if block_start > run_start:
            good.append(DoneChunk(run_start, block_start, run_h.hexdigest()))
        run_start, run_h = block_end, xxhash.xxh3_128()
    if digests and size > run_start:
        good.append(DoneChunk(run_start, size, run_h.hexdigest()))
    return sha.hexdigest(), good, bad
