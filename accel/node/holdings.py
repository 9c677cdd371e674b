"""What this node holds that a peer may read: whole files, and verified blocks of others.

Owns reading, for the peer server and the announce loop, the three records a models dir
keeps: ``registry.json`` (which versions, which files, which are done, where they
live), the kept manifests (:mod:`accel.manager.manifests`: each file's blake3 block
size) and, for a file still downloading, the engine's checkpoint
``<file>.part.json`` (:mod:`accel.fetch.checkpoint`), whose finished chunks are byte
ranges of ``<file>.part`` the engine wrote and checked block by block against the
manifest's blake3 digests before recording them. Reading the checkpoint the engine
already writes (about every second) is the least invasive way to see a download's
verified blocks from outside the engine: the engine and the manager need no new hook,
and the node only ever reads.

What counts as held:

- a file of a ``ready`` version, or one its record calls ``done`` (verified and
  synced): the whole file;
- a file still downloading whose manifest has blake3 blocks: the blocks lying wholly
  inside the checkpoint's finished chunks, once the ``.part`` file has its final size;
- a file without blake3 blocks (an ``hf://`` install): nothing until it is done.

Only files the registry lists are found, under the version's own directory (resolved,
inside the models dir); staged updates are never served (their version's ready bytes
are). Never writes, never opens a socket; the caller maps "not found" to HTTP.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from accel import blockmap
from accel.errors import AccelError, UnsafePathError
from accel.fetch.checkpoint import load_checkpoint
from accel.manager.manifests import ManifestStore
from accel.manager.registry import RegistryStore, install_key
from accel.schema import FileStatus, InstallRecord, ManifestFile, Registry, VersionManifest
from accel.serving.paths import check_relpath

__all__ = ["HeldFile", "Holdings"]

T = TypeVar("T")


@dataclass(frozen=True)
class HeldFile:
    """One listed file of a version this node has (some or all of), and what it holds."""

    model_id: str
    version: str
    relpath: str
    base: str  #: the version's directory, resolved
    segments: tuple[str, ...]  #: the file's path under ``base``, each segment checked
    size: int
    sha256: str
    #: the manifest's blake3 block size; a file without blocks is one block (its size)
    block_size: int
    bits: bytes  #: the held blocks (:mod:`accel.blockmap`)
    whole: bool  #: verified whole: every byte may be sent
    #: what Last-Modified says (the manifest's ``updated_at``: the same on every peer,
    #: and the same while the file is partial and once it is whole); None: the file's
    last_modified: int | None

    @property
    def part_segments(self) -> tuple[str, ...]:
        """Where the engine writes the file until it is verified."""
        return (*self.segments[:-1], self.segments[-1] + ".part")

    @property
    def nblocks(self) -> int:
        return blockmap.block_count(self.size, self.block_size)

    def holds(self, offset: int, length: int) -> bool:
        """True when bytes ``[offset, offset + length)`` lie in held blocks."""
        if self.whole or length <= 0:
            return True
        return blockmap.covers(self.bits, offset, offset + length - 1, self.block_size)

    @property
    def held_bytes(self) -> int:
        if self.whole:
            return self.size
        return blockmap.held_bytes(self.bits, self.size, self.block_size)


@dataclass
class _Cached:
    key: tuple[int, int, int]
    value: Any


@dataclass(frozen=True)
class _Listing:
    """The registry, indexed for lookups (built once per registry write)."""

    registry: Registry
    files: dict[str, dict[str, FileStatus]]  #: install key -> path -> file
    ids: frozenset[str]

    @classmethod
    def of(cls, reg: Registry) -> _Listing:
        files = {key: {f.path: f for f in rec.files} for key, rec in reg.installs.items()}
        return cls(reg, files, frozenset(r.model_id for r in reg.installs.values()))


@dataclass(frozen=True)
class _Kept:
    """A kept manifest, indexed by path."""

    checksum: str
    files: dict[str, ManifestFile]
    updated_at: int | None

    @classmethod
    def of(cls, manifest: VersionManifest | None) -> _Kept | None:
        if manifest is None:
            return None
        files = {f.path: f for f in manifest.files}
        return cls(manifest.checksum_sha256, files, _epoch(manifest.updated_at))


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _epoch(iso: str) -> int | None:
    try:
        when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return calendar.timegm(when.utctimetuple())


class Holdings:
    """The servable content of one models dir, read fresh (cached by file identity)."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir).resolve()
        self.registry = RegistryStore(self.models_dir)
        self.manifests = ManifestStore(self.models_dir / ".accel")
        self._cache: dict[Path, _Cached] = {}

    def _read(self, path: Path, load: Callable[[], T]) -> T | None:
        """``load()`` of ``path``, again only when the file changed (inode, mtime, size)."""
        key = _stat_key(path)
        if key is None:
            self._cache.pop(path, None)
            return None
        hit = self._cache.get(path)
        if hit is not None and hit.key == key:
            cached: T = hit.value
            return cached
        value = load()
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[path] = _Cached(key, value)
        return value

    def _listing(self) -> _Listing:
        try:
            listing = self._read(self.registry.path, lambda: _Listing.of(self.registry.read()))
        except (AccelError, OSError):
            listing = None
        return listing if listing is not None else _Listing.of(Registry())

    def _registry(self) -> Registry:
        return self._listing().registry

    def _kept(self, rec: InstallRecord) -> _Kept | None:
        """The kept manifest of ``rec``, when it describes the recorded content (not,
        say, an update's that has not swapped in yet, or an older accel's absence)."""
        path = self.manifests.path(rec.model_id, rec.version)
        kept = self._read(path, lambda: _Kept.of(self.manifests.load(rec.model_id, rec.version)))
        if kept is None or kept.checksum != rec.checksum_sha256:
            return None
        return kept

    def _base(self, rec: InstallRecord) -> str | None:
        try:
            base = os.path.realpath(rec.path, strict=True)
        except OSError:
            return None
        return base if Path(base).is_relative_to(self.models_dir) else None

    def split_model(self, segments: tuple[str, ...]) -> tuple[str, str, str] | None:
        """``(model_id, version, relpath)`` of a request's path segments, as the hub reads
        them: a model id is one segment (``whisper``) or two (``org/whisper``), and a
        one-segment id this node has wins."""
        ids = self._listing().ids
        n = 1 if segments and segments[0] in ids else 2
        if len(segments) < n + 2:
            return None
        return "/".join(segments[:n]), segments[n], "/".join(segments[n + 1 :])

    def find(self, model_id: str, version: str, relpath: str) -> HeldFile | None:
        """The listed file ``relpath`` of ``model_id`` ``version`` and what of it is held,
        or None when this node does not list it (not installed, removed, not a file of it)."""
        listing = self._listing()
        key = install_key(model_id, version)
        rec = listing.registry.installs.get(key)
        if rec is None:
            return None
        status = listing.files[key].get(relpath)
        if status is None:
            return None
        try:
            segments = check_relpath(status.path)
        except UnsafePathError:
            return None
        base = self._base(rec)
        if base is None:
            return None
        whole = rec.state == "ready" or status.state == "done"
        kept = self._kept(rec)
        mf = kept.files.get(status.path) if kept is not None else None
        chunks = mf.chunks if mf is not None and mf.sha256 == status.sha256 else None
        size = status.bytes_total
        block_size = chunks.size if chunks is not None else size
        n = blockmap.block_count(size, block_size)
        if whole:
            bits = blockmap.full(n)
        elif chunks is None:
            bits = bytes(-(-n // 8))  # no blocks to check: shared once whole, not before
        else:
            bits = self._verified_blocks(Path(base).joinpath(*segments), size, block_size)
        return HeldFile(
            model_id=model_id,
            version=version,
            relpath=status.path,
            base=base,
            segments=segments,
            size=size,
            sha256=status.sha256,
            block_size=block_size,
            bits=bits,
            whole=whole,
            last_modified=kept.updated_at if kept is not None else None,
        )

    def _verified_blocks(self, dest: Path, size: int, block_size: int) -> bytes:
        """The blocks of ``dest`` the engine's checkpoint records as finished (verified
        against the blake3 digests as they streamed), if its ``.part`` is full-sized."""
        empty = bytes(-(-blockmap.block_count(size, block_size) // 8))
        cp_path = dest.with_name(dest.name + ".part.json")
        try:
            cp = self._read(cp_path, lambda: load_checkpoint(dest))
        except (AccelError, OSError):
            return empty
        if cp is None or cp.size != size:
            return empty
        try:
            if os.stat(dest.with_name(dest.name + ".part")).st_size != size:
                return empty
        except OSError:
            return empty
        ranges = [(c.start, c.end) for c in cp.chunks]
        return blockmap.held_from_ranges(ranges, size, block_size)

    def versions(self) -> list[tuple[str, str, float]]:
        """Every version this node lists, with the share of its bytes held (0..1), for an
        announce: whole files and verified blocks count, in-flight unverified bytes not."""
        out = []
        for rec in self._registry().installs.values():
            if rec.state == "ready":
                out.append((rec.model_id, rec.version, 1.0))
                continue
            total = sum(f.bytes_total for f in rec.files)
            held = 0
            for f in rec.files:
                if f.state == "done":
                    held += f.bytes_total
                elif f.bytes_done > 0:
                    found = self.find(rec.model_id, rec.version, f.path)
                    held += found.held_bytes if found is not None else 0
            share = held / total if total else 0.0
            out.append((rec.model_id, rec.version, min(1.0, max(0.0, share))))
        return out
