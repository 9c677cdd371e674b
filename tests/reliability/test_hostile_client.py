"""Hostile input to the client: a hub whose manifest lies about paths or sizes.

Each case serves a manifest from a fake hub and checks that the install is refused, or
at least that nothing is written outside ``<models_dir>/<model>/<version>/`` and that
nothing is reported ready with bytes that do not match.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from accel.errors import AccelError, ModelNotAvailableError
from accel.manager.manager import ModelManager
from tests.reliability.fakehub import FakeFile, FakeHub

MODEL, VERSION = "m1", "1.0"


def snapshot(root: Path, skip: Path) -> dict[str, int]:
    """Every file and link under ``root`` (outside ``skip``), with sizes."""
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents:
            dirnames[:] = []
            continue
        for name in filenames + [n for n in dirnames if (d / n).is_symlink()]:
            p = d / name
            out[str(p.relative_to(root))] = p.lstat().st_size
    return out


async def attempt(tmp_path: Path, files: list[FakeFile]) -> tuple[AccelError | None, Path]:
    """Install from a fake hub serving ``files``; return the error (or None)."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    async with (
        FakeHub(MODEL, VERSION, files) as hub,
        ModelManager(models, hub.url, workers=1, retry_backoff_s=0.01) as mm,
    ):
        try:
            await mm.ainstall(MODEL, VERSION)
        except AccelError as exc:
            return exc, models
        return None, models


async def assert_not_ready(models: Path) -> None:
    async with ModelManager(models, None) as mm:
        with pytest.raises(ModelNotAvailableError):
            mm.get_model_path(MODEL, VERSION)


def outside_changes(tmp_path: Path, before: dict[str, int], models: Path) -> dict[str, int]:
    """Files that appeared outside the version folder, except the manager's own state."""
    after = snapshot(tmp_path, models / MODEL / VERSION)
    return {
        k: v
        for k, v in after.items()
        if k not in before and not k.startswith("models/.accel/") and k != "models/registry.json"
    }


@pytest.mark.parametrize(
    "path",
    [
        "../x.bin",
        "../../x.bin",
        "a/../../x.bin",
        "/tmp/accel-hostile-abs.bin",
        "a\\..\\..\\x.bin",
        "a/\0/x.bin",
        "",
        "./x.bin",
        "a//x.bin",
    ],
)
async def test_unsafe_manifest_path_is_refused(tmp_path: Path, path: str) -> None:
    before = snapshot(tmp_path, tmp_path / "models" / MODEL / VERSION)
    err, models = await attempt(tmp_path, [FakeFile("ok.bin", b"ok" * 100), FakeFile(path, b"x")])
    assert err is not None, f"manifest path {path!r} was accepted"
    assert err.code == "bad_manifest" and err.facts["field"] == "files[1].path", err
    assert outside_changes(tmp_path, before, models) == {}
    assert not Path("/tmp/accel-hostile-abs.bin").exists()
    await assert_not_ready(models)


async def test_symlink_planted_in_version_dir_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    vdir = tmp_path / "models" / MODEL / VERSION
    vdir.mkdir(parents=True)
    (vdir / "sub").symlink_to(outside, target_is_directory=True)
    before = snapshot(tmp_path, vdir)
    data = os.urandom(300_000)
    err, models = await attempt(tmp_path, [FakeFile("sub/w.bin", data)])
    assert list(outside.iterdir()) == [], "the install wrote through a planted symlink"
    assert outside_changes(tmp_path, before, models) == {}
    if err is None:  # accepted: then the file must be a real file inside the version dir
        final = vdir / "sub" / "w.bin"
        assert not (vdir / "sub").is_symlink() and final.read_bytes() == data


async def test_symlink_planted_as_model_dir_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    (models / MODEL).symlink_to(outside, target_is_directory=True)
    before = snapshot(tmp_path, models / MODEL / VERSION)
    err, models = await attempt(tmp_path, [FakeFile("w.bin", os.urandom(1000))])
    assert list(outside.iterdir()) == [], f"the install wrote through a planted symlink ({err})"
    assert outside_changes(tmp_path, before, models) == {}


async def test_duplicate_path_is_refused(tmp_path: Path) -> None:
    a, b = os.urandom(5000), os.urandom(7000)
    err, models = await attempt(tmp_path, [FakeFile("w.bin", a), FakeFile("w.bin", b)])
    assert err is not None, "a manifest listing the same path twice was accepted"
    await assert_not_ready(models)


@pytest.mark.parametrize("claimed", [1000, 4000])
async def test_size_disagreeing_with_bytes_is_never_ready(tmp_path: Path, claimed: int) -> None:
    data = os.urandom(2000)
    before = snapshot(tmp_path, tmp_path / "models" / MODEL / VERSION)
    err, models = await attempt(tmp_path, [FakeFile("w.bin", data, size=claimed)])
    assert err is not None, "a file whose size disagrees with the manifest was accepted"
    assert err.code in (
        "size_mismatch",
        "checksum_mismatch",
        "protocol_violation",
        "download_failed",
        "remote_changed",
    ), err
    assert outside_changes(tmp_path, before, models) == {}
    await assert_not_ready(models)


async def test_unsafe_version_from_hub_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    before = snapshot(tmp_path, models / "nothing")
    async with (
        FakeHub(MODEL, "../../evil", [FakeFile("w.bin", b"x")]) as hub,
        ModelManager(models, hub.url, workers=1) as mm,
    ):
        with pytest.raises(AccelError) as info:
            await mm.ainstall(MODEL)  # the hub's default_version is "../../evil"
    assert info.value.code == "bad_manifest" and info.value.facts["field"] == "default_version"
    assert outside_changes(tmp_path, before, models) == {}
