"""registry.json: atomic read-modify-write, schema version, never torn under kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from accel.errors import ConfigError, UnsafePathError
from accel.manager.fsutil import atomic_write_bytes, safe_relpath, safe_segment
from accel.manager.registry import RegistryStore, install_key
from accel.schema import REGISTRY_SCHEMA_VERSION, FileStatus, InstallRecord, Registry


def _record(model_id: str, version: str, n_files: int, done: int) -> InstallRecord:
    files = [
        FileStatus(
            path=f"f{i}.bin",
            bytes_total=100,
            sha256="0" * 64,
            state="done" if i < done else "pending",
            bytes_done=100 if i < done else 0,
        )
        for i in range(n_files)
    ]
    return InstallRecord(
        model_id=model_id,
        version=version,
        state="ready" if done == n_files else "downloading",
        path=f"/x/{model_id}/{version}",
        bytes_total=100 * n_files,
        bytes_done=100 * done,
        files=files,
    )


def test_update_round_trips_and_carries_schema_version(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path)
    assert store.read().installs == {}
    store.update(lambda reg: reg.installs.__setitem__("m@1", _record("m", "1", 3, 1)))
    raw = json.loads((tmp_path / "registry.json").read_text())
    assert raw["schema_version"] == REGISTRY_SCHEMA_VERSION
    rec = store.get("m", "1")
    assert rec is not None and rec.bytes_done == 100 and rec.files[0].state == "done"
    assert not list(tmp_path.glob(".registry.json.*"))  # no temp file left behind


def test_newer_schema_and_garbage_are_clear_errors(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path)
    (tmp_path / "registry.json").write_text(json.dumps({"schema_version": 99, "installs": {}}))
    with pytest.raises(ConfigError, match="schema version 99"):
        store.read()
    (tmp_path / "registry.json").write_text('{"schema_version": 1, "installs": {"x": 3}}')
    with pytest.raises(ConfigError, match="not a valid registry"):
        store.read()


def test_install_key_and_safe_paths() -> None:
    assert install_key("org/m", "1.0") == "org/m@1.0"
    assert str(safe_relpath("a/b.bin")) == "a/b.bin"
    for bad in ("../x", "/abs", "a//b", "a/./b", "a\\b", "a\0b", ""):
        with pytest.raises(UnsafePathError):
            safe_relpath(bad)
    for bad in ("..", ".hidden", "a/b", "", "c:x"):
        with pytest.raises(UnsafePathError):
            safe_segment(bad, "version")


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def _writer_loop(models_dir: Path, seed: int) -> None:
    """Child: rewrite the registry as fast as it can; every state is self-consistent."""
    rng = random.Random(seed)
    store = RegistryStore(models_dir)
    while True:

        def change(reg: Registry) -> None:
            key = f"m{rng.randrange(5)}@1"
            n = rng.randrange(1, 40)
            reg.installs[key] = _record(key.split("@")[0], "1", n, rng.randrange(n + 1))
            counter = reg.installs.get("counter@1")
            seq = (counter.priority + 1) if counter else 0
            reg.installs["counter@1"] = _record("counter", "1", 1, 0).model_copy(
                update={"priority": seq}
            )

        store.update(change)


def test_registry_is_never_torn_under_a_kill_loop(tmp_path: Path) -> None:
    """SIGKILL a real writer process at random moments (120 times, and on until the
    writers committed more than 50 updates): after each kill the registry parses,
    validates, and every record is internally consistent."""
    store = RegistryStore(tmp_path)
    rng = random.Random(7)
    last_seq = -1
    kills = 0
    deadline = time.monotonic() + 120
    # The writes are counted, not assumed from the windows: on a loaded disk each fsync'd
    # write is slower, and 120 windows of 0-30 ms held only 36 of them.
    while kills < 120 or last_seq <= 50:
        assert time.monotonic() < deadline, f"{kills} kills, {last_seq + 1} writes in 120 s"
        i = kills
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                _writer_loop(tmp_path, i)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        if not (tmp_path / "registry.json").exists():
            continue
        data = json.loads((tmp_path / "registry.json").read_bytes())  # never torn
        reg = Registry.model_validate(data)
        assert reg.schema_version == REGISTRY_SCHEMA_VERSION
        for rec in reg.installs.values():
            assert rec.bytes_done == sum(f.bytes_done for f in rec.files)
            assert rec.bytes_total == sum(f.bytes_total for f in rec.files)
        seq = reg.installs["counter@1"].priority
        assert seq >= last_seq  # no committed update is ever lost
        last_seq = seq
    assert kills >= 120
    assert last_seq > 50  # the writers really wrote many times
    # temp files of killed writers are cleaned up at start-up
    store.cleanup_temp()
    assert not list(tmp_path.glob(".registry.json.*.tmp"))


def test_refuse_symlinks_checks_each_folder_once_and_every_new_one(tmp_path: Path) -> None:
    from accel.manager.fsutil import refuse_symlinks

    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "models"
    (root / "m" / "1" / "a").mkdir(parents=True)
    (root / "m" / "1" / "b").symlink_to(outside)
    checked: set[Path] = set()
    for name in ("x.bin", "a/y.bin", "a/z.bin"):
        refuse_symlinks(root, safe_relpath(f"m/1/{name}"), checked)
    assert root / "m" / "1" / "a" in checked
    with pytest.raises(UnsafePathError, match="symbolic link"):  # a folder not yet checked
        refuse_symlinks(root, safe_relpath("m/1/b/w.bin"), checked)
    assert root / "m" / "1" / "b" not in checked
    with pytest.raises(UnsafePathError, match="symbolic link"):  # and again: never cached
        refuse_symlinks(root, safe_relpath("m/1/b/w.bin"), checked)
