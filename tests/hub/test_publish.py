"""accel.hub.publish and ``accel publish``: hashing, layout, idempotence, conflicts, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import blake3
import pytest

from accel.errors import PublishConflictError, UnsafePathError, UsageError
from accel.hub.catalog import Catalog
from accel.hub.publish import hash_file, publish
from accel.schema import VersionManifest, version_checksum
from tests.support.hub import make_files

MiB = 1024 * 1024


def test_directory_with_subfolders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    made = make_files(src, {"model.bin": 2 * MiB + 7, "sub/deeper/vocab.txt": 1000, "e": b""})
    root = tmp_path / "store"
    m = publish(src, root, "m1", "1.0", name="M one", task="asr", languages=["zh", "en"],
                block_size=MiB)  # fmt: skip
    assert [f.path for f in m.files] == ["e", "model.bin", "sub/deeper/vocab.txt"]
    for f in m.files:
        data = made[f.path].read_bytes()
        stored = root / "models/m1/1.0/files" / f.path
        assert stored.read_bytes() == data
        assert f.size_bytes == len(data) and f.sha256 == hashlib.sha256(data).hexdigest()
        blocks = [data[i : i + MiB] for i in range(0, len(data), MiB)]  # none when empty
        assert f.chunks.digests == [blake3.blake3(b).hexdigest() for b in blocks]
        assert f.chunks.size == MiB and f.chunks.algo == "blake3"
        assert len(f.chunks.digests) == -(-f.size_bytes // MiB)  # ceil(size / block)
    assert m.size_bytes == 2 * MiB + 7 + 1000
    assert m.checksum_sha256 == version_checksum(m.files)
    on_disk = VersionManifest.model_validate_json(
        (root / "models/m1/1.0/manifest.json").read_text()
    )
    assert on_disk == m
    meta = json.loads((root / "models/m1/model.json").read_text())
    assert meta | {} == {"id": "m1", "name": "M one", "task": "asr", "languages": ["zh", "en"],
                         "default_version": "1.0"}  # fmt: skip


def test_single_file(tmp_path: Path) -> None:
    (tmp_path / "w.onnx").write_bytes(b"x" * 5000)
    m = publish(tmp_path / "w.onnx", tmp_path / "store", "single", "2")
    assert [(f.path, f.size_bytes) for f in m.files] == [("w.onnx", 5000)]
    assert (tmp_path / "store/models/single/2/files/w.onnx").read_bytes() == b"x" * 5000


def test_republish_identical_is_a_noop(tmp_path: Path) -> None:
    make_files(tmp_path / "src", {"a": 3000, "b/c": 10})
    root = tmp_path / "store"
    first = publish(tmp_path / "src", root, "m", "1.0")
    stored = root / "models/m/1.0/files/a"
    before = stored.stat().st_mtime_ns
    again = publish(tmp_path / "src", root, "m", "1.0")
    assert again == first
    assert stored.stat().st_mtime_ns == before


@pytest.mark.parametrize("change", ["content", "extra file", "missing file", "size"])
def test_conflicting_republish_refused(tmp_path: Path, change: str) -> None:
    src = tmp_path / "src"
    make_files(src, {"a": 3000, "b": 10})
    root = tmp_path / "store"
    first = publish(src, root, "m", "1.0")
    if change == "content":
        make_files(src, {"a": 3000}, seed=1)
    elif change == "extra file":
        (src / "c").write_bytes(b"c")
    elif change == "missing file":
        (src / "b").unlink()
    else:
        (src / "a").write_bytes(b"short")
    with pytest.raises(PublishConflictError) as err:
        publish(src, root, "m", "1.0")
    assert err.value.code == "publish_conflict" and "m@1.0" in str(err.value)
    # The published version is untouched.
    on_disk = VersionManifest.model_validate_json((root / "models/m/1.0/manifest.json").read_text())
    assert on_disk == first


def test_default_version_rules(tmp_path: Path) -> None:
    make_files(tmp_path / "src", {"a": 10})
    root = tmp_path / "store"
    publish(tmp_path / "src", root, "m", "1.0")  # first version becomes default
    publish(tmp_path / "src", root, "m", "2.0")  # not default unless asked
    meta = json.loads((root / "models/m/model.json").read_text())
    assert meta["default_version"] == "1.0"
    publish(tmp_path / "src", root, "m", "3.0", default=True)
    assert Catalog(root).models["m"].default_version == "3.0"


def test_nothing_half_published_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error on the second file (injected) leaves no version and no staging dir."""
    make_files(tmp_path / "src", {"a": 1000, "b": 1000})
    root = tmp_path / "store"
    real = hash_file
    calls = []

    def failing(path: Path, *args: object, **kw: object) -> object:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(5, "Input/output error (injected)")
        return real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("accel.hub.publish.hash_file", failing)
    with pytest.raises(OSError, match="injected"):
        publish(tmp_path / "src", root, "m", "1.0")
    assert [p.name for p in (root / "models" / "m").iterdir()] == []
    assert "m" not in Catalog(root).models
    monkeypatch.undo()
    assert [f.path for f in publish(tmp_path / "src", root, "m", "1.0").files] == ["a", "b"]


# "a/b" is a model id since org/name ids (HF's shape); three segments and "--" are not.
@pytest.mark.parametrize("bad", ["../x", ".hidden", "a/b/c", "a--b", "a/../b", ""])
def test_bad_model_id_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "f").write_bytes(b"1")
    with pytest.raises(UnsafePathError):
        publish(tmp_path / "f", tmp_path / "store", bad, "1.0")
    assert not (tmp_path / "x").exists()


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        publish(tmp_path / "nope", tmp_path / "store", "m", "1")


def test_hash_file_blocks_not_aligned_to_reads(tmp_path: Path) -> None:
    data = os.urandom(3 * 1536 * 1024 + 5)
    (tmp_path / "f").write_bytes(data)
    size, sha, digests = hash_file(tmp_path / "f", 1536 * 1024)
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    step = 1536 * 1024
    assert digests == [
        blake3.blake3(data[i : i + step]).hexdigest() for i in range(0, len(data), step)
    ]


def test_cli_publish_and_conflict(tmp_path: Path, accel_cmd: list[str]) -> None:
    make_files(tmp_path / "src", {"sub/a.bin": 4000, "b.txt": b"hello"})
    root = tmp_path / "store"
    cmd = [*accel_cmd, "publish", str(tmp_path / "src"), "--root", str(root), "--model", "cli-m",
           "--version", "1.0.0", "--task", "mt", "--language", "zh", "--language", "en",
           "--default", "--block-size", "1MiB"]  # fmt: skip
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "published cli-m@1.0.0: 2 files" in ok.stdout
    m = Catalog(root).models["cli-m"]
    assert m.task == "mt" and m.languages == ["zh", "en"] and m.default_version == "1.0.0"
    (tmp_path / "src" / "b.txt").write_bytes(b"changed")
    bad = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "publish_conflict" in bad.stderr and "Traceback" not in bad.stderr


def test_concurrent_publishes_of_one_model_keep_every_version(tmp_path: Path) -> None:
    """Eight processes publish eight versions of one model at once: all listed, meta intact."""
    import concurrent.futures
    import multiprocessing

    root = tmp_path / "store"
    srcs = []
    for i in range(8):
        make_files(tmp_path / f"src{i}", {"w.bin": 1000 + i})
        srcs.append(tmp_path / f"src{i}")
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        jobs = [
            pool.submit(publish, src, root, "m", f"1.{i}", task="asr", default=(i == 7))
            for i, src in enumerate(srcs)
        ]
        for job in jobs:
            job.result()
    model = Catalog(root).models["m"]
    assert [v.version for v in model.versions] == [f"1.{i}" for i in range(8)]
    assert model.task == "asr" and model.default_version == "1.7"
