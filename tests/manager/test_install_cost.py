"""Per-file cost of an install: no work per progress event that grows with the file count.

Issue 15: an install of 10,000 files must cost the same per file as one of 100 (no
O(n^2) in registry writes, lock records, events or progress). Each progress event of one
file used to sum the bytes of every file of the version (for its speed meter): 4.3
million sums for a version of 1,000 files, minutes for 10,000. The count here is of
those per-file evaluations, so it holds whatever the machine's load.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from accel.fetch.types import DownloadResult, ProgressEvent
from accel.manager.install import FileRun, VersionInstall
from accel.manager.locks import LockSpace
from accel.manager.progress import progress_event, total_progress
from accel.manager.registry import RegistryStore
from accel.schema import FileStatus, InstallRecord, ManifestFile, Registry, VersionManifest


def _install(tmp_path: Path, n: int) -> VersionInstall:
    files = [
        ManifestFile(path=f"f{i:05d}.bin", size_bytes=16384, sha256=f"{i:064x}") for i in range(n)
    ]
    manifest = VersionManifest(
        model_id="many",
        version="1",
        size_bytes=16384 * n,
        files=files,
        checksum_sha256="0" * 64,
        updated_at="2026-01-01T00:00:00Z",
    )
    inst = VersionInstall(
        models_dir=tmp_path,
        registry=RegistryStore(tmp_path),
        locks=LockSpace(tmp_path / ".accel" / "locks"),
        engine=None,  # type: ignore[arg-type]  # no download here: only progress events
        url_of=lambda p: f"http://127.0.0.1:9/{p}",
        manifest=manifest,
        priority=0,
        max_parallel_files=3,
        file_retries=1,
        on_change=lambda _inst: None,
    )
    inst.files = {
        f.path: FileRun(FileStatus(path=f.path, bytes_total=f.size_bytes, sha256=f.sha256))
        for f in files
    }
    inst._flush_at = time.monotonic() + 3600  # no registry flush during the count
    return inst


@pytest.mark.parametrize("n", [100, 2000])
async def test_a_progress_event_does_not_visit_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    inst = _install(tmp_path, n)
    visits = 0
    real = FileRun.bytes_done.fget
    assert real is not None

    def counted(self: FileRun) -> int:
        nonlocal visits
        visits += 1
        return real(self)

    monkeypatch.setattr(FileRun, "bytes_done", property(counted))
    runs = list(inst.files.values())
    events = 0
    t0 = time.monotonic()
    for i, run in enumerate(runs[:200]):
        run.status.state = "downloading"
        for committed in (0, 8192, 16384):
            inst._on_progress(
                run,
                ProgressEvent(
                    "progress", url=f"u{i}", dest=tmp_path / "x", total=16384, committed=committed
                ),
            )
            events += 1
    elapsed = time.monotonic() - t0
    # One speed sample (a visit of every file) per _METER_EVERY_S at most, plus a visit
    # or two of the event's own file: before, each of the 600 events visited all n files.
    samples = 2 + elapsed / 0.1  # install._METER_EVERY_S
    bound = events * 2 + n * samples
    assert visits <= bound, f"{visits} file visits for {events} events of a {n}-file version"


class _CountedFiles(list[FileStatus]):
    """A record's file list that counts the passes over it."""

    passes = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        type(self).passes += 1
        return super().__iter__()


async def test_reuse_reads_the_registry_once_not_once_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking for reusable content scanned every record once per missing file: a
    version of n files whose own record (n files) is in the registry cost n^2."""
    n = 500
    inst = _install(tmp_path, n)
    now = time.time()
    record = InstallRecord(
        model_id="many",
        version="1",
        state="downloading",
        path=str(tmp_path / "many" / "1"),
        bytes_total=16384 * n,
        files=[r.status.model_copy() for r in inst.files.values()],
        created_at=now,
        updated_at=now,
    )
    reg = Registry(installs={"many@1": record})
    object.__setattr__(record, "files", _CountedFiles(record.files))
    monkeypatch.setattr(inst.registry, "read", lambda: reg)
    inst.reuse_identical()
    assert _CountedFiles.passes <= 2, f"{_CountedFiles.passes} passes over a {n}-file record"
    assert all(r.status.state == "pending" for r in inst.files.values())  # nothing was done


class _FakeEngine:
    """The fetch seam: writes each file and reports three progress steps; between them
    it reads the install's progress the way the views do (event, total, registry)."""

    def __init__(self) -> None:
        self.inst: VersionInstall | None = None

    async def download(self, url: str, dest: Path | str, **kw: Any) -> DownloadResult:
        size = 16384
        progress = kw["progress"]
        for committed in (0, size // 2, size):
            progress(ProgressEvent("progress", url=url, dest=Path(dest), total=size,
                                   committed=committed))  # fmt: skip
            assert self.inst is not None
            progress_event(self.inst, total=total_progress([self.inst]), update=False, files=set())
        Path(dest).write_bytes(b"\0" * size)
        return DownloadResult(Path(dest), size, "0" * 64, 0.0, size, 0, False)


async def test_progress_views_during_the_fetch_add_up_only_files_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every view of a running install (its event, the manager's total, the registry
    record) summed the bytes of every file, several times a second: a 10,000-file
    install spent most of its time in those sums. While files are fetched, only the
    few in flight change; the rest is one settled sum."""
    n = 600
    engine = _FakeEngine()
    inst = _install(tmp_path, n)
    inst.engine = engine
    inst.files.clear()
    inst.prepare()
    engine.inst = inst
    visits = 0
    real = FileRun.bytes_done.fget
    assert real is not None

    def counted(self: FileRun) -> int:
        nonlocal visits
        visits += 1
        return real(self)

    monkeypatch.setattr(FileRun, "bytes_done", property(counted))
    failed = await inst.fetch_missing()
    await inst.quiesce()
    assert failed == []
    assert inst.bytes_done == inst.bytes_total == 16384 * n
    # 3 views per file, each of which visited all n files before (5.4 million visits)
    assert visits <= 60 * n, f"{visits} file visits for an install of {n} files"


def test_a_save_copies_only_changed_files_and_parses_no_registry_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each save of a 10,000-file version copied every file's status and parsed and
    validated the whole registry it had written itself a moment before."""
    n = 400
    inst = _install(tmp_path, n)
    copies = 0
    real_copy = FileStatus.model_copy

    def counted_copy(self: FileStatus, *a: Any, **kw: Any) -> FileStatus:
        nonlocal copies
        copies += 1
        return real_copy(self, *a, **kw)

    parses = 0
    real_validate = Registry.model_validate

    def counted_validate(*a: Any, **kw: Any) -> Registry:
        nonlocal parses
        parses += 1
        return real_validate(*a, **kw)

    monkeypatch.setattr(FileStatus, "model_copy", counted_copy)
    monkeypatch.setattr(Registry, "model_validate", counted_validate)
    inst.save("downloading")
    first_copies = copies
    assert first_copies == n
    run = inst.files["f00007.bin"]
    run.status.state, run.status.bytes_done = "done", 16384
    inst.save()
    assert copies - first_copies == 1  # before: n again
    assert parses == 0  # before: one per save after the first
    # what is on disk is what a reader parses: the changed file, every other one
    rec = json.loads((tmp_path / "registry.json").read_bytes())["installs"]["many@1"]
    states = {f["path"]: f["state"] for f in rec["files"]}
    assert states["f00007.bin"] == "done" and list(states.values()).count("done") == 1

    # another writer's change is seen (the bytes differ), and kept
    def other(reg: Registry) -> None:
        reg.installs["other@1"] = reg.installs["many@1"].model_copy(update={"model_id": "other"})

    RegistryStore(tmp_path).update(other)
    parses = 0
    inst.save()
    assert parses == 1
    installs = json.loads((tmp_path / "registry.json").read_bytes())["installs"]
    assert sorted(installs) == ["many@1", "other@1"] and len(installs["many@1"]["files"]) == n


def test_a_fresh_install_looks_up_no_file_of_it_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fetch, three passes (finished files, kept checkpoints, held .part
    space) stat'ed or opened a path per file: 30,000 lookups for 10,000 files of which
    none existed. One directory walk says which names are there."""
    n = 300
    inst = _install(tmp_path, n)
    stats = 0
    real_stat = Path.stat

    def counted_stat(self: Path, *a: Any, **kw: Any) -> Any:
        nonlocal stats
        if self.name.startswith("f0"):
            stats += 1
        return real_stat(self, *a, **kw)

    import accel.fetch.checkpoint as checkpoint_mod

    loads = 0
    real_load = checkpoint_mod.load_checkpoint

    def counted_load(dest: Path) -> Any:
        nonlocal loads
        loads += 1
        return real_load(dest)

    monkeypatch.setattr(Path, "stat", counted_stat)
    monkeypatch.setattr(checkpoint_mod, "load_checkpoint", counted_load)
    inst.adopt_finished()
    assert inst.kept_bytes() == 0
    inst.check_space()
    assert (stats, loads) == (0, 0)  # before: 2n stats and n checkpoint reads
    # and with something there: a finished file, a checkpointed part
    target = inst.target
    target.mkdir(parents=True, exist_ok=True)
    (target / "f00003.bin").write_bytes(b"\0" * 16384)
    (target / "f00004.bin.part").write_bytes(b"\0" * 8192)
    inst.adopt_finished()
    inst.kept_bytes()
    inst.check_space()
    assert stats == 2 and loads == 0  # f00003's stat (then its hash), f00004.part's
