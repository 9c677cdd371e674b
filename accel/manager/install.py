"""One install of one model version: manifest -> reuse -> space check -> files -> ready.

Owns :class:`VersionInstall`, the steps of an install once its task lock is held: merge
the manifest with what the registry already records, hard-link (or copy) files whose
sha256 an installed version already has, check disk space for everything still missing,
fetch the rest through the shared fetch engine (at most ``max_parallel_files`` at a time,
and four times as many small files of at most 4 MiB, each one request,
``file_retries`` per file with backoff, a file lock per content), keep verified files when
others fail, and publish the result in the registry. The engine writes ``<file>.part`` and
renames only a verified file, so a half-written file never carries a final name, and the
version is ``ready`` only after every file is checked.

Durability: files are fetched with ``durable=False`` (no fsync of each file and its
directory: 1000 fsyncs for a version of 500 files) and made durable together by one
``syncfs`` (:func:`~accel.manager.fsutil.sync_filesystem`) before the registry calls them
``done``, and always before the version is ``ready``. Until then the registry records
such a file as ``downloading``. The invariant this keeps: **a file the registry calls
``done`` was synced.** ``prepare`` trusts only ``done`` files (by size); every other file
found under its final name, e.g. one renamed just before a crash or a power cut, is
re-hashed against the manifest's SHA256 by ``adopt_finished`` before it counts, and
``find_reusable`` links only ``done`` files. So after a power cut an unsynced file that
lost its bytes is fetched again, never presented as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from accel.errors import (
    AccelError,
    AuthError,
    DownloadError,
    InsufficientDiskSpaceError,
    NotFoundError,
    SizeMismatchError,
    UnsafePathError,
)
from accel.manager.disk import check_space, disk_error, is_enospc, space_needed
from accel.manager.events import FileProgress
from accel.manager.fsutil import refuse_symlinks, safe_relpath, sync_filesystem
from accel.manager.locks import FILE_LOCK_TIMEOUT_S, LockSpace
from accel.manager.registry import RegistryStore, install_key
from accel.meter import RateMeter, eta
from accel.modelid import model_dir_name
from accel.schema import (
    FileError,
    FileStatus,
    InstallRecord,
    ManifestFile,
    Registry,
    VersionManifest,
)

if TYPE_CHECKING:
    from accel.fetch.types import DownloadResult, Expected, ProgressEvent

__all__ = [
    "Downloader",
    "FileRun",
    "VersionInstall",
    "find_reusable",
    "hash_file",
    "link_or_copy",
    "reusable_index",
    "summarize",
]

log = logging.getLogger("accel.manager")

#: how often per-file completions are written to the registry during an install; each
#: write is two fsyncs on the event loop, and a crash only costs a re-hash of the files
#: finished in the window (see ``adopt_finished``)
_FLUSH_EVERY_S = 2.0
#: ... and at least this long per file of the version: a flush writes the whole record
#: (every file), so a fixed interval made a long install of many files O(n^2) in
#: registry writes (53 rewrites of a 10,000-file record); 10,000 files: every 10 s
_FLUSH_S_PER_FILE = 0.001

#: how long a file lock is held before its lock record is written (``accel locks``
#: and waiters in other processes see it from then on)
_RECORD_AFTER_S = 0.5

#: the shortest interval between two samples of a version's speed meter: a sample sums
#: every file's bytes, so one per progress event made an install of n files cost O(n^2)
#: (4.3 million sums for 1,000 files); the speed is over a 3 s window, 10 samples a
#: second are plenty
_METER_EVERY_S = 0.1

#: errors a retry of the same file cannot fix
_FINAL = (AuthError, NotFoundError, InsufficientDiskSpaceError, SizeMismatchError)


class Downloader(Protocol):
    """The seam to the fetch engine (``accel.fetch.Engine`` satisfies it)."""

    async def download(
        self,
        url: str,
        dest: Path | str,
        *,
        expected: Expected | None = ...,
        progress: Callable[[ProgressEvent], None] | None = ...,
        durable: bool = ...,
        headers: Mapping[str, str] | None = ...,
    ) -> DownloadResult: ...


def hash_file(path: Path) -> str:
    """SHA256 of a file, streamed in 1 MiB blocks."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def reusable_index(reg: Registry) -> dict[str, list[Path]]:
    """Every finished file the registry records, by SHA256 (in registry order).

    Built once per pass over a version's files: looking each file up by scanning every
    record made an install of n files O(n^2) (its own record holds n files).
    """
    index: dict[str, list[Path]] = {}
    for key, rec in reg.installs.items():
        staged = reg.updates.get(key)
        if staged is not None and staged.swap_ino is not None:
            continue  # mid-swap: its directory may hold the old content or the new
        for f in rec.files:
            if f.state == "done":
                index.setdefault(f.sha256, []).append(Path(rec.path) / f.path)
    return index


def find_reusable(
    reg: Registry,
    models_dir: Path,
    sha256: str,
    size: int,
    index: Mapping[str, list[Path]] | None = None,
) -> Path | None:
    """A finished file with this content anywhere in the registry, if it is still on disk
    (``index``: :func:`reusable_index` of ``reg``, when the caller looks up many)."""
    for path in (reusable_index(reg) if index is None else index).get(sha256, ()):
        with contextlib.suppress(OSError):
            if path.stat().st_size == size:
                return path
    return None


def link_or_copy(src: Path, dest: Path) -> str:
    """Place ``src``'s content at ``dest`` atomically: hard link, else copy. Returns how."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    how = "link"
    try:
        os.link(src, tmp)
    except OSError:
        how = "copy"
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dest)
    return how


#: files up to this size are "small": fetched in one request, on one connection
SMALL_FILE_BYTES = 4 * 1024 * 1024
#: small files in flight per ``max_parallel_files`` (3 -> 12: a version of 500 small
#: files on a per-connection-capped origin took 0.72x huggingface_hub's wall with 3)
SMALL_FILES_PER_SLOT = 4


@dataclass
class FileRun:
    """Live state of one file during an install (what progress events show)."""

    status: FileStatus
    inflight: int = 0
    #: bytes received (committed + in flight) as shown: never decreasing
    shown: int = 0
    meter: RateMeter = field(default_factory=RateMeter)
    #: False for a file done but not yet synced (recorded as ``downloading`` until then)
    synced: bool = True
    #: the last :meth:`recorded` answer, given again while nothing in it changed (a
    #: save of a 10,000-file version copied every file's status each time)
    _recorded: FileStatus | None = field(default=None, repr=False, compare=False)

    @property
    def bytes_done(self) -> int:
        """Bytes received, in flight included (a finished file: all of them)."""
        st = self.status
        if st.state == "done":
            return st.bytes_total
        return min(st.bytes_total, max(self.shown, st.bytes_done))

    def speed_bps(self, now: float) -> float:
        return self.meter.speed(now) if self.status.state == "downloading" else 0.0

    def recorded(self) -> FileStatus:
        """The status the registry may hold: ``done`` only once synced."""
        live = self.status
        state = "downloading" if live.state == "done" and not self.synced else live.state
        # downloading: what `accel status` shows from another process
        done = self.bytes_done if live.state == "downloading" else live.bytes_done
        last = self._recorded
        if (
            last is not None
            and last.state == state
            and last.bytes_done == done
            and last.error is live.error
            and (last.path, last.sha256, last.bytes_total)
            == (live.path, live.sha256, live.bytes_total)
        ):
            return last
        st = live.model_copy()
        st.state, st.bytes_done = state, done  # type: ignore[assignment]
        self._recorded = st
        return st

    def progress(self, now: float) -> FileProgress:
        """This file in the one progress model (:mod:`accel.meter`)."""
        done = self.bytes_done
        speed = self.speed_bps(now)
        return FileProgress(
            path=self.status.path,
            state=self.status.state,
            bytes_done=done,
            bytes_total=self.status.bytes_total,
            inflight=min(self.inflight, done) if self.status.state == "downloading" else 0,
            speed_bps=round(speed, 1),
            eta_s=eta(self.status.bytes_total - done, speed),
        )


@dataclass
class VersionInstall:
    """The work of installing one version while its task lock is held."""

    models_dir: Path
    registry: RegistryStore
    locks: LockSpace
    engine: Downloader
    url_of: Callable[[str], str]
    manifest: VersionManifest
    priority: int
    max_parallel_files: int
    file_retries: int
    on_change: Callable[[VersionInstall], None]
    retry_backoff_s: float = 0.5
    file_lock_timeout_s: float = FILE_LOCK_TIMEOUT_S
    owner_start: float | None = None
    #: a staged update: files go to this directory (beside the ready version, which
    #: stays usable) and the record lives in ``Registry.updates`` until the swap
    staging: Path | None = None
    #: headers of this version's downloads: its source's credentials (hub or hf://)
    headers: Mapping[str, str] | None = None
    #: a file's other URLs (the manifest's mirrors), by manifest path
    mirrors_of: Callable[[str], list[str]] | None = None
    #: a file's URLs at peers (accel.manager.peers), by manifest path, asked as it starts
    peers_of: Callable[[str], Awaitable[list[str]]] | None = None
    #: what a request to a peer carries (the fleet token); never the hub's headers
    peer_headers: Mapping[str, str] | None = None
    files: dict[str, FileRun] = field(default_factory=dict)
    state: str = "queued"
    started: float = field(default_factory=time.monotonic)
    bytes_fetched: int = 0
    bytes_reused: int = 0
    #: held from an earlier run when this one started (see :meth:`kept_bytes`)
    bytes_kept: int = 0
    #: received bytes of the whole version over time (its speed figure)
    meter: RateMeter = field(default_factory=RateMeter)
    errors: dict[str, AccelError] = field(default_factory=dict)
    _by_sha: dict[str, list[FileRun]] = field(default_factory=dict)
    _manifest_files: dict[str, ManifestFile] = field(default_factory=dict)
    _flush_at: float = 0.0
    _meter_at: float = float("-inf")
    #: while :meth:`fetch_missing` runs: the received bytes of every file not being
    #: fetched right now (they cannot change then), so ``bytes_done`` adds up only the
    #: few files in flight (``_active``) instead of every file at every event
    _settled: int | None = None
    _active: set[str] = field(default_factory=set)
    _total: int | None = None
    #: files whose figures may have changed since :meth:`take_changed` (``None``: any)
    _touched: set[str] | None = None
    _flushing: asyncio.Task[None] | None = None
    _made_dirs: set[Path] = field(default_factory=set)

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def key(self) -> str:
        return install_key(self.model_id, self.version)

    @functools.cached_property
    def final_dir(self) -> Path:
        """Where the ready version lives (the path ``get_model_path`` returns)."""
        return (
            self.models_dir / model_dir_name(self.model_id) / self.version
        )  # org/name -> org--name

    @property
    def target(self) -> Path:
        """Where this install writes: the final directory, or the staging one."""
        return self.staging if self.staging is not None else self.final_dir

    def records(self, reg: Registry) -> dict[str, InstallRecord]:
        """The registry table this install's record lives in."""
        return reg.updates if self.staging is not None else reg.installs

    @property
    def bytes_total(self) -> int:
        if self._total is not None:
            return self._total
        return sum(f.status.bytes_total for f in self.files.values())

    @property
    def bytes_done(self) -> int:
        """Bytes received, in flight included: what every view shows (never decreasing)."""
        if self._settled is not None:
            return self._settled + sum(self.files[p].bytes_done for p in self._active)
        return sum(f.bytes_done for f in self.files.values())

    def take_changed(self) -> set[str] | None:
        """The files whose state or bytes may have changed since the last call (a
        superset), or ``None`` when any may have (outside the fetch phase)."""
        if self._touched is None:
            return None
        changed = self._touched | self._active
        self._touched = set()
        return changed

    def speed_bps(self, now: float) -> float:
        """Over the last seconds of the whole version (0 unless it is downloading)."""
        return self.meter.speed(now) if self.state == "downloading" else 0.0

    # -- registry ----------------------------------------------------------------------
    def record(
        self, old: InstallRecord | None, state: str, error: FileError | None = None
    ) -> InstallRecord:
        """This install as a registry record (its path: where it writes)."""
        now = time.time()
        return InstallRecord(
            model_id=self.model_id,
            version=self.version,
            state=state,  # type: ignore[arg-type]
            path=str(self.target),
            bytes_total=self.bytes_total,
            bytes_done=self.bytes_done,
            checksum_sha256=self.manifest.checksum_sha256,
            priority=self.priority,
            files=[f.recorded() for f in self.files.values()],
            error=error,
            created_at=old.created_at if old else now,
            updated_at=now,
            installed_at=now if state == "ready" else None,
            owner_pid=None if state in ("ready", "error", "paused") else os.getpid(),
            owner_start=None if state in ("ready", "error", "paused") else self.owner_start,
            # where the version came from (an hf:// endpoint, its revision aliases): a
            # retry or resume of it is still that version
            source=old.source if old else None,
            revisions=list(old.revisions) if old else [],
            source_endpoint=old.source_endpoint if old else None,
        )

    def save(self, state: str | None = None, error: FileError | None = None) -> None:
        """Write this install's record (state, per-file status) to the registry."""
        if state is not None:
            self.state = state

        def change(reg: Registry) -> None:
            table = self.records(reg)
            table[self.key] = self.record(table.get(self.key), self.state, error)

        self.registry.update(change)
        self._flush_at = time.monotonic()
        self.on_change(self)

    def _maybe_flush(self) -> None:
        # Per-file completions are batched: 500 small files must not mean 500 fsyncs
        # of a growing registry. A crash loses at most this window; the rerun re-hashes
        # finished files found on disk instead of fetching them again.
        if self._flushing is not None and not self._flushing.done():
            self.on_change(self)
        elif time.monotonic() - self._flush_at > max(
            _FLUSH_EVERY_S, len(self.files) * _FLUSH_S_PER_FILE
        ):
            self._flush_at = time.monotonic()
            self._flushing = asyncio.ensure_future(self._flush())
        else:
            self.on_change(self)

    async def _flush(self) -> None:
        try:
            await self.sync()
            self.save()
        except Exception as exc:  # the final sync() and save() report errors; nobody awaits this
            log.debug("background flush of %s failed: %s", self.key, exc)

    async def quiesce(self) -> None:
        """Wait for a background registry flush to end (before the job records its outcome)."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
            self._flushing = None

    async def sync(self) -> None:
        """One ``syncfs`` for every file fetched without fsync; they count as done after."""
        pending = [r for r in self.files.values() if not r.synced]
        if not pending:
            return
        try:
            await asyncio.to_thread(sync_filesystem, self.target)
        except OSError as exc:
            raise self._translate(exc, self.target) from exc
        for run in pending:
            run.synced = True

    async def settle(self) -> None:
        """Wait for a background registry flush, then sync what is still unsynced."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
            self._flushing = None
        await self.sync()

    # -- steps -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Merge the manifest with the registry's record: keep files already done."""
        old = self.records(self.registry.read()).get(self.key)
        previous = {f.path: f for f in old.files} if old is not None else {}
        seen: set[str] = set()
        checked: set[Path] = set()
        target_rel = PurePosixPath(self.target.relative_to(self.models_dir))
        for mf in self.manifest.files:
            rel = safe_relpath(mf.path)
            if mf.path in seen:
                raise UnsafePathError(
                    f"the manifest of {self.key} lists {mf.path!r} twice", path=mf.path
                )
            seen.add(mf.path)
            refuse_symlinks(self.models_dir, target_rel / rel, checked)
            status = FileStatus(path=mf.path, bytes_total=mf.size_bytes, sha256=mf.sha256)
            prev = previous.get(mf.path)
            final = self.target / rel
            if prev is not None and prev.state == "done" and prev.sha256 == mf.sha256:
                with contextlib.suppress(OSError):
                    if final.stat().st_size == mf.size_bytes:
                        status.state = "done"
                        status.bytes_done = mf.size_bytes
            run = FileRun(status)
            self.files[mf.path] = run
            self._by_sha.setdefault(mf.sha256, []).append(run)
            self._manifest_files[mf.path] = mf

    def _names_on_disk(self) -> set[str]:
        """Every name under the target now, relative and ``/``-joined (symlinked folders
        not entered): one directory walk, instead of a stat or an open per manifest file
        in each pass over a version that is mostly (a fresh install: all) not there."""
        names: set[str] = set()
        folders = [("", str(self.target))]
        while folders:
            rel, path = folders.pop()
            try:
                entries = os.scandir(path)
            except OSError:
                continue  # not there (yet), or not a folder: nothing under it
            with entries:
                for e in entries:
                    names.add(rel + e.name)
                    if e.is_dir(follow_symlinks=False):
                        folders.append((f"{rel}{e.name}/", e.path))
        return names

    def adopt_finished(self) -> None:
        """Files with their final name but not recorded done (crash in the flush window)."""
        names = self._names_on_disk()
        for run in self.files.values():
            st = run.status
            if st.state == "done" or str(safe_relpath(st.path)) not in names:
                continue
            final = self.target / safe_relpath(st.path)
            with contextlib.suppress(OSError):
                if final.stat().st_size == st.bytes_total and hash_file(final) == st.sha256:
                    st.state, st.bytes_done, st.error = "done", st.bytes_total, None

    def kept_bytes(self) -> int:
        """Bytes an earlier run left that this one keeps: files done, and the finished
        chunks their checkpoints record for partial files (revalidated by the engine)."""
        from accel.fetch.checkpoint import load_checkpoint

        kept = 0
        names = self._names_on_disk()
        for run in self.files.values():
            st = run.status
            if st.state == "done":
                kept += st.bytes_total
                continue
            if f"{safe_relpath(st.path)}.part.json" not in names:  # (checkpoint_path)
                continue
            dest = self.target / safe_relpath(st.path)
            try:
                cp = load_checkpoint(dest)
            except (AccelError, OSError):
                cp = None
            if cp is not None and cp.size == st.bytes_total:
                kept += min(st.bytes_total, sum(c.end - c.start for c in cp.chunks))
        return kept

    def reuse_identical(self) -> None:
        """Hard-link (or copy) files whose content an installed version already has."""
        reg = self.registry.read()
        index = reusable_index(reg)
        for run in self.files.values():
            st = run.status
            if st.state == "done":
                continue
            src = find_reusable(reg, self.models_dir, st.sha256, st.bytes_total, index)
            if src is None:
                continue
            dest = self.target / safe_relpath(st.path)
            if src == dest:
                continue
            how = link_or_copy(src, dest)
            st.state, st.bytes_done, st.error = "done", st.bytes_total, None
            self.bytes_reused += st.bytes_total
            log.info("reused %s for %s (%s)", src, dest, how, extra={"model_id": self.model_id})

    def check_space(self) -> None:
        """Room for every missing byte (partial ``.part`` files count as held)."""
        sizes, held = [], []
        names = self._names_on_disk()
        for run in self.files.values():
            if run.status.state == "done":
                continue
            sizes.append(run.status.bytes_total)
            if f"{safe_relpath(run.status.path)}.part" not in names:  # (part_path)
                held.append(0)
                continue
            part = (self.target / safe_relpath(run.status.path)).with_name(
                Path(run.status.path).name + ".part"
            )
            try:
                held.append(min(part.stat().st_blocks * 512, run.status.bytes_total))
            except OSError:
                held.append(0)
        self.target.mkdir(parents=True, exist_ok=True)
        check_space(self.target, space_needed(sizes, held))

    async def fetch_missing(self) -> list[FileStatus]:
        """Fetch every file not done; returns the files that failed (kept ones stay)."""
        sem = asyncio.Semaphore(self.max_parallel_files)
        # A small file is one request on one connection: three at once leave a
        # per-connection-capped origin (a CDN's 25 MB/s) mostly idle for a version of 500
        # of them, so small files have an allowance of their own (as huggingface_hub's 8
        # workers, aria2's -j). The engine's connection budget still bounds the total.
        small_sem = asyncio.Semaphore(SMALL_FILES_PER_SLOT * self.max_parallel_files)
        # Largest first: the long transfer starts at once and small files fill the gaps
        # (and the engine's connection tuning sees the big file's throughput first).
        todo = sorted(
            (r for r in self.files.values() if r.status.state != "done"),
            key=lambda r: -r.status.bytes_total,
        )

        async def one(run: FileRun) -> None:
            small = run.status.bytes_total <= SMALL_FILE_BYTES
            async with small_sem if small else sem:
                path = run.status.path
                self._begin(path)
                try:
                    await self._fetch_file(run)
                finally:
                    self._end(path)

        # From here until the gather ends only the files in ``one`` change.
        self._total = self.bytes_total
        self._settled = self.bytes_done
        self._touched = set(self.files)  # prepare and reuse may have changed any of them
        try:
            results = await asyncio.gather(*(one(r) for r in todo), return_exceptions=True)
        except asyncio.CancelledError:
            if self._flushing is not None:
                self._flushing.cancel()  # a paused install records unsynced files as not done
            raise
        finally:
            self._settled = self._total = self._touched = None
            self._active.clear()
        for run, r in zip(todo, results, strict=True):
            if not isinstance(r, BaseException) or run.status.state == "error":
                continue
            if not isinstance(r, AccelError | OSError):
                raise r  # a bug: the job runner makes it the install's outcome
            # Failed outside the transfer (a file lock, a link, a mkdir): so did this file.
            err = self._translate(r, self.target / safe_relpath(run.status.path))
            run.status.state = "error"
            run.status.error = FileError(code=err.code, message=err.message)
            self.errors[run.status.path] = err
        # Before anyone records these files done (kept on failure, or ready): one sync.
        await self.settle()
        return [r.status for r in todo if r.status.state != "done"]

    async def _fetch_file(self, run: FileRun) -> None:
        from accel.fetch.types import Expected

        st = run.status
        dest = self.target / safe_relpath(st.path)
        if dest.parent not in self._made_dirs:  # one mkdir per folder, not per file
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(dest.parent)
        waited = False

        def note_wait(_holder: object) -> None:
            nonlocal waited
            waited = True

        held = await self.locks.acquire(
            f"files/{st.sha256}",
            on_wait=note_wait,
            kind="file",
            model_id=self.model_id,
            version=self.version,
            file=st.path,
            timeout_s=self.file_lock_timeout_s,
            record=False,
        )
        # Most files are done before their lock needs a record (see locks.py); one held
        # longer gets it here, and then heartbeats with the task lock.
        recorder = asyncio.get_running_loop().call_later(_RECORD_AFTER_S, held.ensure_recorded)
        try:
            # Another process (or a duplicate path in this version) may have fetched
            # this content while we waited for its file lock.
            src = None
            same: FileRun | None = None
            if waited:  # reuse_identical saw the registry already; re-read only after a wait
                src = find_reusable(
                    self.registry.read(), self.models_dir, st.sha256, st.bytes_total
                )
            if src is None:
                same = next(
                    (
                        o
                        for o in self._by_sha.get(st.sha256, ())
                        if o is not run and o.status.state == "done"
                    ),
                    None,
                )
                if same is not None:
                    src = self.target / safe_relpath(same.status.path)
            if src is not None and src != dest:
                link_or_copy(src, dest)
                st.state, st.bytes_done, st.error = "done", st.bytes_total, None
                run.synced = same.synced if same is not None else True
                self.bytes_reused += st.bytes_total
                self._maybe_flush()
                return
            mf = self._manifest_files[st.path]
            expected = Expected(size=mf.size_bytes, sha256=mf.sha256, chunks=mf.chunks)
            st.state, st.error = "downloading", None
            attempt = 0
            while True:
                attempt += 1
                try:
                    extra: dict[str, Any] = {"headers": self.headers} if self.headers else {}
                    if self.mirrors_of is not None and (mirrors := self.mirrors_of(st.path)):
                        extra["mirrors"] = mirrors
                    if self.peers_of is not None:
                        # asked as the download runs: a fleet starting at once finds
                        # its peers only as each of them starts
                        extra["find_peers"] = functools.partial(self.peers_of, st.path)
                        extra["peer_headers"] = dict(self.peer_headers or {})
                    result = await self.engine.download(
                        self.url_of(st.path),
                        dest,
                        expected=expected,
                        progress=lambda ev: self._on_progress(run, ev),
                        durable=False,
                        **extra,
                    )
                except Exception as exc:
                    err = self._translate(exc, dest)
                    run.inflight = 0
                    if attempt >= self.file_retries or isinstance(err, _FINAL):
                        st.state = "error"
                        st.error = FileError(code=err.code, message=str(err.message))
                        self.errors[st.path] = err
                        log.warning(
                            "file %s of %s failed after %d attempts: %s",
                            st.path,
                            self.key,
                            attempt,
                            err.message,
                            extra={"code": err.code, "model_id": self.model_id},
                        )
                        self._maybe_flush()
                        raise err from exc
                    delay = self.retry_backoff_s * (2 ** (attempt - 1))
                    log.info("retrying %s of %s in %.1f s (%s)", st.path, self.key, delay, err.code)
                    await asyncio.sleep(delay)
                    continue
                break
            st.state, st.bytes_done = "done", st.bytes_total
            run.synced = False
            run.inflight = 0
            self._sample_meter(time.monotonic())
            self.bytes_fetched += result.bytes_fetched
            self._maybe_flush()
        finally:
            if st.state != "done":
                # paused, cancelled or failed: what is kept is the finished chunks alone
                run.shown, run.inflight = 0, 0
            recorder.cancel()
            if held.recorded:  # a record to unlink: filesystem latency, in a thread
                await asyncio.shield(asyncio.to_thread(held.release))
            else:  # an unlock and a close: cheaper than a hop to a thread and back
                held.release()

    def _begin(self, path: str) -> None:
        """``path`` is being fetched: its bytes leave the settled sum until :meth:`_end`."""
        if self._settled is not None and path not in self._active:
            self._settled -= self.files[path].bytes_done
            self._active.add(path)
            if self._touched is not None:
                self._touched.add(path)

    def _end(self, path: str) -> None:
        if self._settled is not None and path in self._active:
            self._active.discard(path)
            self._settled += self.files[path].bytes_done
            if self._touched is not None:
                self._touched.add(path)

    def _translate(self, exc: BaseException, dest: Path) -> AccelError:
        if isinstance(exc, AccelError):
            return exc
        if is_enospc(exc):
            return disk_error(exc, dest)  # type: ignore[arg-type]
        if isinstance(exc, OSError):
            return DownloadError(
                f"{dest.name}: {exc.strerror or exc}",
                path=str(dest),
                errno=exc.errno or errno.EIO,
            )
        return DownloadError(f"{dest.name}: {type(exc).__name__}: {exc}", path=str(dest))

    def _on_progress(self, run: FileRun, ev: ProgressEvent) -> None:
        st = run.status
        st.bytes_done = min(st.bytes_total, max(st.bytes_done, ev.committed))
        run.inflight = ev.inflight
        run.shown = max(run.shown, min(st.bytes_total, ev.committed + ev.inflight))
        now = time.monotonic()
        run.meter.add(now, run.shown)
        self._sample_meter(now)
        # (the registry gets the figures every few seconds, for `accel status` elsewhere)
        self._maybe_flush()

    def _sample_meter(self, now: float) -> None:
        """The version's received bytes into its speed meter, at most every
        :data:`_METER_EVERY_S` (the sum is over every file)."""
        if now - self._meter_at >= _METER_EVERY_S:
            self._meter_at = now
            self.meter.add(now, self.bytes_done)

    def verify_all(self) -> list[FileStatus]:
        """Every file present with its size (content was hashed as it arrived)."""
        bad = []
        for run in self.files.values():
            final = self.target / safe_relpath(run.status.path)
            # A checkpoint can outlive its finished download (written by a late
            # checkpoint task); it must not sit in a ready version's directory.
            stray = final.with_name(final.name + ".part.json")
            if stray.exists() and not final.with_name(final.name + ".part").exists():
                stray.unlink(missing_ok=True)
            try:
                ok = final.stat().st_size == run.status.bytes_total
            except OSError:
                ok = False
            if not ok:
                run.status.state = "error"
                run.status.error = FileError(code="missing", message=f"{final} is missing")
                bad.append(run.status)
        return bad

    def failure(self, failed: list[FileStatus]) -> FileError:
        """The version's error: the first cause plus the count of failed files."""
        first = failed[0].error or FileError(code="download_failed", message="failed")
        names = ", ".join(f.path for f in failed[:5]) + (" ..." if len(failed) > 5 else "")
        return FileError(
            code=first.code,
            message=f"{len(failed)} of {len(self.files)} files failed ({names}): {first.message}",
        )


def summarize(inst: VersionInstall) -> dict[str, Any]:
    """Numbers for the ready event and the log."""
    return {
        "bytes_total": inst.bytes_total,
        "bytes_fetched": inst.bytes_fetched,
        "bytes_reused": inst.bytes_reused,
        "bytes_kept": inst.bytes_kept,
        "elapsed_s": round(time.monotonic() - inst.started, 3),
    }
