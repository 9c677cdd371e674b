"""``hf://REPO[@REV]`` installs from an HF-compatible endpoint: our own hub's HF API.

The endpoint is the real hub (``accel serve``) on loopback; the manager reads only its
HF routes (``/api/models/{repo}/revision/{rev}?blobs=true`` and ``/{repo}/resolve/...``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from accel.errors import AuthError, BadManifestError, IntegrityError, NotFoundError, UsageError
from accel.manager import ModelManager
from accel.manager.hfsource import HfRef, git_blob_id
from tests.support.hub import REPO, expected_bytes, publish_model, running_hub
from tests.support.webapp import serve_app

MiB = 1 << 20
SPEC: dict[str, int | bytes] = {"model.safetensors": 2 * MiB + 7, "config.json": b'{"a": 1}'}


def _sha(root: Path, model_dir: str, version: str) -> str:
    m = json.loads((root / "models" / model_dir / version / "manifest.json").read_bytes())
    return str(m["checksum_sha256"][:40])


@pytest.mark.parametrize(
    ("ref", "repo", "rev"),
    [
        ("hf://org/m", "org/m", None),
        ("hf://org/m@main", "org/m", "main"),
        ("hf://solo@1.0", "solo", "1.0"),
        ("hf://org/m@" + "a" * 40, "org/m", "a" * 40),
    ],
)
def test_refs(ref: str, repo: str, rev: str | None) -> None:
    assert HfRef.parse(ref) == HfRef(repo, rev)
    assert str(HfRef.parse(ref)) == ref


@pytest.mark.parametrize("bad", ["hf://", "hf://a/b/c", "hf://../x", "hf://a@", "hf://a--b/c"])
def test_bad_refs(bad: str) -> None:
    with pytest.raises(UsageError):
        HfRef.parse(bad)


def test_git_blob_id_is_gits(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello\n")
    out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True)
    assert git_blob_id(b"hello\n") == out.stdout.strip()


async def test_install_by_revision_alias_and_update_when_main_moves(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    models = tmp_path / "models"
    with running_hub(root) as h:
        async with ModelManager(models, None, hf_endpoint=h.url, workers=1) as mm:
            sha1 = _sha(root, "org--m", "1.0")
            path = await mm.ainstall("hf://org/m")
            assert path == models / "org--m" / sha1  # the version dir is named by the sha
            for rel, what in SPEC.items():
                want = what if isinstance(what, bytes) else expected_bytes(rel, what)
                assert (path / rel).read_bytes() == want
            rec = mm.registry.get("org/m", sha1)
            assert rec is not None and rec.state == "ready"
            assert (rec.source, rec.revisions, rec.source_endpoint) == (
                "hf://org/m",
                ["main"],
                h.url,
            )
            assert mm.get_model_path("org/m") == path
            assert mm.get_model_path("org/m", "main") == path
            assert mm.get_model_path("hf://org/m") == path
            # An explicit version name resolves to the same commit: nothing is fetched.
            assert await mm.ainstall("hf://org/m@1.0") == path

            # main moves on: update sees it and installs the new commit beside the old one.
            publish_model(root, "org/m", "2.0", {**SPEC, "config.json": b'{"a": 2}'})
            sha2 = _sha(root, "org--m", "2.0")
            assert await mm.aupdate() == [f"org/m@{sha2}"]
            new = mm.get_model_path("org/m", "main")
            assert (
                new == models / "org--m" / sha2
                and (new / "config.json").read_bytes() == b'{"a": 2}'
            )
            assert mm.get_model_path("org/m", sha1) == path  # the old commit stays usable
            assert mm.get_model_path("org/m", "1.0") == path  # and so does its alias
            # unchanged file linked from the old version, not fetched again
            assert (
                os.stat(path / "model.safetensors").st_ino
                == os.stat(new / "model.safetensors").st_ino
            )
            assert await mm.aupdate() == []


async def test_token_missing_repo_and_revision(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    models = tmp_path / "models"
    with running_hub(root, token="hf-secret") as h:
        async with ModelManager(models, None, hf_endpoint=h.url, hf_token="wrong") as mm:
            with pytest.raises(AuthError):
                await mm.ainstall("hf://org/m")
        async with ModelManager(models, None, hf_endpoint=h.url, hf_token="hf-secret") as mm:
            with pytest.raises(NotFoundError):
                await mm.ainstall("hf://org/none")
            with pytest.raises(NotFoundError):
                await mm.ainstall("hf://org/m@9.9")
            path = await mm.ainstall("hf://org/m@1.0")
            assert path is not None and (path / "config.json").read_bytes() == b'{"a": 1}'
    assert not (models / "org--none").exists()


def test_cli_install_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    models = tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ACCEL_"))}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "accel", "install", "--models-dir", str(models)]
    with running_hub(root) as h:
        ok = subprocess.run(
            [*cmd, "--hf-endpoint", h.url, "hf://org/m@1.0"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert ok.returncode == 0, ok.stderr
        installed = models / "org--m" / _sha(root, "org--m", "1.0")
        assert Path(ok.stdout.strip()) == installed
        for ref in ("hf://org/m@1.0", "org/m@1.0"):
            shown = subprocess.run(
                [sys.executable, "-m", "accel", "path", ref, "--models-dir", str(models)],
                env=env,
                capture_output=True,
                text=True,
            )
            assert Path(shown.stdout.strip()) == installed, shown.stderr
        missing = subprocess.run([*cmd, "hf://org/m@1.0"], env=env, capture_output=True, text=True)
        bad = subprocess.run(
            [*cmd, "--hf-endpoint", h.url, "hf://org/m@7.7"],
            env=env,
            capture_output=True,
            text=True,
        )
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "HF_ENDPOINT" in missing.stderr and missing.stderr.count("\n") == 1
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("accel: error [not_found]:")


def test_accel_get_of_a_resolve_url_is_held_to_its_sha256(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ACCEL_"))}
    env["PYTHONPATH"] = str(REPO)
    with running_hub(root) as h:
        url = f"{h.url}/org/m/resolve/main/model.safetensors"
        get = [sys.executable, "-m", "accel", "get", url, "--json"]
        ok = subprocess.run(
            [*get, "-o", str(tmp_path / "a")], env=env, capture_output=True, text=True
        )
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "a").read_bytes() == expected_bytes("model.safetensors", 2 * MiB + 7)
        events = [json.loads(line) for line in ok.stdout.splitlines() if line.strip()]
        assert any(e.get("verified") is True for e in events), events[-1]
        # The hub's copy goes bad (same size): the announced sha256 catches it.
        stored = root / "models/org--m/1.0/files/model.safetensors"
        data = bytearray(stored.read_bytes())
        data[12345] ^= 0xFF
        stored.write_bytes(bytes(data))
        bad = subprocess.run(
            [*get, "-o", str(tmp_path / "b")], env=env, capture_output=True, text=True
        )
    assert bad.returncode == 1, bad.stderr
    assert "checksum_mismatch" in bad.stdout + bad.stderr
    assert not (tmp_path / "b").exists()


def _git_file_endpoint(served: bytes, blob_of: bytes) -> web.Application:
    """An endpoint whose one file is kept in git (no ``lfs``), as huggingface.co answers
    for small text files: ``size`` and ``blobId`` only. ``served`` is what it sends."""
    sha = "c" * 40

    async def revision(request: web.Request) -> web.Response:
        assert request.query.get("blobs") == "true"
        sibling = {"rfilename": "README.md", "size": len(blob_of), "blobId": git_blob_id(blob_of)}
        return web.json_response({"id": "org/g", "sha": sha, "siblings": [sibling]})

    async def resolve(request: web.Request) -> web.Response:
        assert request.match_info["rev"] == sha  # files are fetched by commit
        return web.Response(body=served, headers={"X-Repo-Commit": sha, "ETag": '"x"'})

    app = web.Application()
    app.router.add_get("/api/models/org/g/revision/{rev}", revision)
    app.router.add_get("/org/g/resolve/{rev}/README.md", resolve)
    return app


async def test_a_git_file_is_checked_by_size_and_blob_id(tmp_path: Path) -> None:
    text = b"# a model card\n" * 50
    async with (
        serve_app(_git_file_endpoint(text, text)) as url,
        ModelManager(tmp_path / "m", None, hf_endpoint=url, workers=1) as mm,
    ):
        path = await mm.ainstall("hf://org/g")
        assert path is not None and (path / "README.md").read_bytes() == text
        rec = mm.registry.get("org/g", "c" * 40)
        assert rec is not None and rec.files[0].sha256 == hashlib.sha256(text).hexdigest()
    wrong = text[:-1] + b"!"
    async with (
        serve_app(_git_file_endpoint(wrong, text)) as url,
        ModelManager(tmp_path / "m2", None, hf_endpoint=url, workers=1) as mm,
    ):
        with pytest.raises(IntegrityError):
            await mm.ainstall("hf://org/g")
    assert not (tmp_path / "m2" / "org--g").exists()


@pytest.mark.parametrize("name", ["../evil.bin", "/etc/x", "a/../../b", "ok/.."])
async def test_an_endpoint_naming_a_file_outside_is_refused(tmp_path: Path, name: str) -> None:
    sha256 = hashlib.sha256(b"x").hexdigest()

    async def revision(request: web.Request) -> web.Response:
        sibling = {"rfilename": name, "size": 1, "lfs": {"sha256": sha256, "size": 1}}
        return web.json_response({"id": "org/e", "sha": "d" * 40, "siblings": [sibling]})

    app = web.Application()
    app.router.add_get("/api/models/org/e/revision/{rev}", revision)
    async with (
        serve_app(app) as url,
        ModelManager(tmp_path / "m", None, hf_endpoint=url, workers=1) as mm,
    ):
        with pytest.raises(BadManifestError):
            await mm.ainstall("hf://org/e")
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path / "m" / "org--e").exists()
