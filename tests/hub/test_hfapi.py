"""The hub answers the Hugging Face Hub API: the real ``huggingface_hub`` client against it.

Every call runs the pinned client in a child process with ``HF_ENDPOINT`` = our hub on
loopback and its caches in temp dirs (tests/support/hfclient.py). Files must come out
byte-identical to what was published; the revision mapping (``main`` = default version,
the commit sha = the first 40 hex of ``checksum_sha256``) is checked through the client.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hfclient import hf_cli, hf_env, run_hf, run_hf_error
from tests.support.hub import (
    SMALL_STORE,
    RunningHub,
    expected_bytes,
    publish_model,
    publish_small_store,
    running_hub,
)

TOKEN = "hf-test-token-0c1d"


@pytest.fixture(scope="module")
def open_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    root = tmp_path_factory.mktemp("hf-open") / "store"
    publish_small_store(root)
    with running_hub(root) as h:
        yield h


@pytest.fixture(scope="module")
def token_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    root = tmp_path_factory.mktemp("hf-auth") / "store"
    publish_small_store(root)
    with running_hub(root, token=TOKEN) as h:
        yield h


def _manifest(hub: RunningHub, model_id: str, version: str) -> dict:  # type: ignore[type-arg]
    path = hub.root / "models" / model_id / version / "manifest.json"
    return json.loads(path.read_bytes())  # type: ignore[no-any-return]


def _sha(hub: RunningHub, model_id: str, version: str) -> str:
    return str(_manifest(hub, model_id, version)["checksum_sha256"][:40])


def _expected(model_id: str, version: str) -> dict[str, bytes]:
    spec = SMALL_STORE[(model_id, version)]
    return {
        rel: what if isinstance(what, bytes) else expected_bytes(rel, what)
        for rel, what in spec.items()
    }


def _tree_bytes(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(directory).parts
    }


def test_snapshot_download_by_version_is_byte_identical(
    open_hub: RunningHub, tmp_path: Path
) -> None:
    env = hf_env(open_hub.url, tmp_path / "home")
    out = tmp_path / "out"
    got = run_hf(
        f"p = snapshot_download('demo-asr', revision='1.0.0', local_dir={str(out)!r})\n"
        "print(json.dumps(p))",
        env,
    )
    assert Path(got) == out.resolve()
    assert _tree_bytes(out) == _expected("demo-asr", "1.0.0")


def test_snapshot_download_main_and_commit_sha_into_the_cache(
    open_hub: RunningHub, tmp_path: Path
) -> None:
    env = hf_env(open_hub.url, tmp_path / "home")
    sha = _sha(open_hub, "demo-asr", "1.1.0")
    got = run_hf(
        "a = snapshot_download('demo-asr')\n"
        f"b = snapshot_download('demo-asr', revision={sha!r})\n"
        "print(json.dumps([a, b]))",
        env,
    )
    # main = the default version 1.1.0; its snapshot folder is named by the commit sha.
    assert Path(got[0]).name == sha and got[0] == got[1]
    assert _tree_bytes(Path(got[0])) == _expected("demo-asr", "1.1.0")
    refs = tmp_path / "home/hub/models--demo-asr/refs/main"
    assert refs.read_text() == sha


def test_hf_hub_download_one_file(open_hub: RunningHub, tmp_path: Path) -> None:
    env = hf_env(open_hub.url, tmp_path / "home")
    got = run_hf(
        "p = hf_hub_download('demo-asr', 'sub/vocab.txt', revision='1.0.0')\nprint(json.dumps(p))",
        env,
    )
    assert Path(got).read_bytes() == _expected("demo-asr", "1.0.0")["sub/vocab.txt"]
    # The cache blob is named by the sha256 (X-Linked-Etag), as for an LFS file on HF.
    sha256 = next(
        f["sha256"]
        for f in _manifest(open_hub, "demo-asr", "1.0.0")["files"]
        if f["path"] == "sub/vocab.txt"
    )
    assert Path(got).resolve().name == sha256


def test_model_info_with_files_metadata(open_hub: RunningHub, tmp_path: Path) -> None:
    env = hf_env(open_hub.url, tmp_path / "home")
    got = run_hf(
        "i = HfApi().model_info('demo-asr', revision='1.0.0', files_metadata=True)\n"
        "print(json.dumps({'id': i.id, 'sha': i.sha, 'siblings': [\n"
        "  [s.rfilename, s.size, s.blob_id, s.lfs.sha256, s.lfs.size] for s in i.siblings],\n"
        "  'default': i.default_version, 'versions': [v['version'] for v in i.versions]}))",
        env,
    )
    manifest = _manifest(open_hub, "demo-asr", "1.0.0")
    assert got["id"] == "demo-asr"
    assert got["sha"] == manifest["checksum_sha256"][:40]
    assert got["default"] == "1.1.0" and got["versions"] == ["1.0.0", "1.1.0"]
    by_name = {s[0]: s for s in got["siblings"]}
    assert set(by_name) == {f["path"] for f in manifest["files"]}
    for f in manifest["files"]:
        _, size, blob_id, sha256, lfs_size = by_name[f["path"]]
        assert (size, sha256, lfs_size) == (f["size_bytes"], f["sha256"], f["size_bytes"])
        assert len(blob_id) == 40


def test_list_repo_files_and_tree_pages(open_hub: RunningHub, tmp_path: Path) -> None:
    env = hf_env(open_hub.url, tmp_path / "home")
    got = run_hf(
        "api = HfApi()\n"
        "a = api.list_repo_files('demo-asr', revision='1.0.0')\n"
        "b = [(e.path, type(e).__name__) for e in api.list_repo_tree('demo-asr', revision='1.0.0')]\n"
        "c = [e.path for e in api.list_repo_tree('demo-asr', 'sub', revision='1.0.0')]\n"
        "print(json.dumps([sorted(a), sorted(b), c]))",
        env,
    )
    assert got[0] == ["config.json", "model.bin", "sub/vocab.txt"]
    assert got[1] == [
        ["config.json", "RepoFile"],
        ["model.bin", "RepoFile"],
        ["sub", "RepoFolder"],
    ]
    assert got[2] == ["sub/vocab.txt"]


def test_tree_is_paginated_with_link_next(tmp_path: Path) -> None:
    root = tmp_path / "store"
    n = 2345
    publish_model(root, "many", "1", {f"d/f{i:05d}.txt": b"x%d" % i for i in range(n)})
    with running_hub(root) as h:
        url = f"{h.url}/api/models/many/tree/main?recursive=true"
        with urllib.request.urlopen(url) as r:
            first = json.loads(r.read())
            link = r.headers["Link"]
        assert len(first) == 1000 and link.endswith('>; rel="next"')
        env = hf_env(h.url, tmp_path / "home")
        got = run_hf("print(json.dumps(HfApi().list_repo_files('many')))", env)
    assert sorted(got) == [f"d/f{i:05d}.txt" for i in range(n)]


def test_hf_download_cli(open_hub: RunningHub, tmp_path: Path) -> None:
    env = hf_env(open_hub.url, tmp_path / "home")
    out = tmp_path / "out"
    proc = hf_cli(["download", "demo-mt", "--revision", "1.0.0", "--local-dir", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    assert _tree_bytes(out) == _expected("demo-mt", "1.0.0")


def test_with_token(token_hub: RunningHub, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = (
        f"p = snapshot_download('demo-asr', revision='1.0.0', local_dir={str(out)!r})\n"
        "print(json.dumps(p))"
    )
    run_hf(code, hf_env(token_hub.url, tmp_path / "home", token=TOKEN))
    assert _tree_bytes(out) == _expected("demo-asr", "1.0.0")
    proc = hf_cli(
        ["download", "demo-asr", "config.json", "--revision", "1.1.0", "--local-dir", str(out)],
        hf_env(token_hub.url, tmp_path / "home2", token=TOKEN),
    )
    assert proc.returncode == 0, proc.stderr


def test_without_or_with_a_wrong_token_nothing_is_served(
    token_hub: RunningHub, tmp_path: Path
) -> None:
    code = "snapshot_download('demo-asr', revision='1.0.0')"
    for token in (None, "wrong"):
        env = hf_env(token_hub.url, tmp_path / f"home-{token}", token=token)
        assert run_hf_error(code, env) in {
            "RepositoryNotFoundError",
            "HfHubHTTPError",
            "LocalEntryNotFoundError",
        }
        assert not list((tmp_path / f"home-{token}").rglob("model.bin"))


def test_missing_repo_revision_file(open_hub: RunningHub, tmp_path: Path) -> None:
    env = hf_env(open_hub.url, tmp_path / "home")
    assert run_hf_error("snapshot_download('no-such-model')", env) == "RepositoryNotFoundError"
    assert run_hf_error("snapshot_download('org/none')", env) == "RepositoryNotFoundError"
    assert (
        run_hf_error("snapshot_download('demo-asr', revision='9.9.9')", env)
        == "RevisionNotFoundError"
    )
    assert (
        run_hf_error("hf_hub_download('demo-asr', 'nope.bin', revision='1.0.0')", env)
        == "RemoteEntryNotFoundError"
    )
    assert (
        run_hf_error("HfApi().model_info('demo-asr', revision='0' * 40)", env)
        == "RevisionNotFoundError"
    )


def test_missing_answers_carry_x_error_code(open_hub: RunningHub) -> None:
    cases = {
        "/api/models/nope": "RepoNotFound",
        "/api/models/org/nope/revision/main": "RepoNotFound",
        "/api/models/demo-asr/revision/7.7": "RevisionNotFound",
        "/api/models/demo-asr/tree/7.7": "RevisionNotFound",
        "/api/models/demo-asr/tree/main/nodir": "EntryNotFound",
        "/demo-asr/resolve/main/nope.bin": "EntryNotFound",
        "/demo-asr/resolve/7.7/model.bin": "RevisionNotFound",
        "/nope/resolve/main/model.bin": "RepoNotFound",
    }
    for path, code in cases.items():
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(open_hub.url + path)
        assert info.value.code == 404, path
        assert info.value.headers["X-Error-Code"] == code, path
        assert json.loads(info.value.read())["error"]["status"] == 404


def test_resolve_headers_and_redirect(open_hub: RunningHub) -> None:
    sha = _sha(open_hub, "demo-asr", "1.0.0")
    entry = next(
        f for f in _manifest(open_hub, "demo-asr", "1.0.0")["files"] if f["path"] == "model.bin"
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):  # type: ignore[no-untyped-def]
            return None

    opener = urllib.request.build_opener(NoRedirect)
    for rev in ("1.0.0", sha):
        req = urllib.request.Request(
            f"{open_hub.url}/demo-asr/resolve/{rev}/model.bin", method="HEAD"
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(req)
        h = info.value.headers
        assert info.value.code == 302
        assert h["Location"] == "/storage/models/demo-asr/1.0.0/model.bin"
        assert h["X-Repo-Commit"] == sha
        assert h["X-Linked-Etag"] == f'"{entry["sha256"]}"'
        assert h["X-Linked-Size"] == str(entry["size_bytes"])


def test_revision_info_counts_one_install_and_resolve_counts_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    publish_small_store(root)
    with running_hub(root) as h:
        env = hf_env(h.url, tmp_path / "home")
        run_hf("snapshot_download('demo-asr', revision='1.0.0'); print('1')", env)
        run_hf("hf_hub_download('demo-mt', 'shards/part-00.bin'); print('1')", env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{h.url}/api/model-usage/ranking") as r:
                ranking = {e["model_id"]: e["request_count"] for e in json.loads(r.read())}
            if ranking:
                break
            time.sleep(0.05)
    assert ranking == {"demo-asr": 1}


def test_a_version_published_after_the_first_call_then_offline_cache(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    publish_model(root, "late", "1.0", {"w.bin": 70_000, "c.json": b"{}"})
    home = tmp_path / "home"
    code = "p = snapshot_download('late'); print(json.dumps(p))"
    with running_hub(root) as h:
        first = Path(run_hf(code, hf_env(h.url, home)))
        publish_model(root, "late", "2.0", {"w.bin": 80_000, "c.json": b"{}"}, seed=1)
        second = Path(run_hf(code, hf_env(h.url, home)))
        v1 = run_hf(
            "p = snapshot_download('late', revision='1.0'); print(json.dumps(p))",
            hf_env(h.url, home),
        )
    assert first != second and Path(v1) == first
    assert (
        second.name
        == json.loads((root / "models/late/2.0/manifest.json").read_bytes())["checksum_sha256"][:40]
    )
    assert (second / "w.bin").read_bytes() == expected_bytes("w.bin", 80_000, seed=1)
    # The hub is gone: offline, the cache still resolves main (now 2.0) and the 1.0 ref.
    offline = hf_env("http://127.0.0.1:9", home, offline=True)
    got = run_hf(
        "a = snapshot_download('late'); b = hf_hub_download('late', 'w.bin', revision='1.0')\n"
        "print(json.dumps([a, b]))",
        offline,
    )
    assert Path(got[0]) == second
    assert Path(got[1]).read_bytes() == expected_bytes("w.bin", 70_000)


def test_the_commit_sha_is_a_revision_on_every_route_for_org_name_ids(tmp_path: Path) -> None:
    """Version name, ``main`` and the commit sha name the same revision on the revision,
    tree and resolve routes of an org/name repo; a resolve's redirect ends at an answer
    with the file's Content-Length and HF's headers."""
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", {"w.bin": 70_001, "sub/c.json": b"{}"})
    manifest = json.loads((root / "models/org--m/1.0/manifest.json").read_bytes())
    sha = manifest["checksum_sha256"][:40]
    w = next(f for f in manifest["files"] if f["path"] == "w.bin")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):  # type: ignore[no-untyped-def]
            return None

    no_redirect = urllib.request.build_opener(NoRedirect)
    with running_hub(root) as h:
        with urllib.request.urlopen(f"{h.url}/api/models/org/m") as r:
            info = json.loads(r.read())
        assert (info["id"], info["modelId"], info["sha"]) == ("org/m", "org/m", sha)
        for rev in ("1.0", "main", sha):
            with urllib.request.urlopen(f"{h.url}/api/models/org/m/revision/{rev}") as r:
                assert json.loads(r.read())["sha"] == sha, rev
            with urllib.request.urlopen(f"{h.url}/api/models/org/m/tree/{rev}/sub") as r:
                assert r.headers["X-Repo-Commit"] == sha, rev
                assert [e["path"] for e in json.loads(r.read())] == ["sub/c.json"]
            for method in ("HEAD", "GET"):
                req = urllib.request.Request(f"{h.url}/org/m/resolve/{rev}/w.bin", method=method)
                with pytest.raises(urllib.error.HTTPError) as info_:
                    no_redirect.open(req)
                head = info_.value.headers
                assert info_.value.code == 302, (rev, method)
                assert head["Location"] == "/storage/models/org/m/1.0/w.bin"
                assert head["X-Repo-Commit"] == sha and head["X-Linked-Size"] == str(70_001)
                assert head["X-Linked-Etag"] == head["ETag"] == f'"{w["sha256"]}"'
                assert "Content-Length" in head
            # followed (as huggingface_hub follows a same-host redirect): the bytes
            with urllib.request.urlopen(f"{h.url}/org/m/resolve/{rev}/w.bin") as r:
                body = r.read()
                assert r.headers["Content-Length"] == str(70_001) == str(len(body))
                assert r.headers["X-Linked-Etag"] == f'"{w["sha256"]}"'
                assert r.headers["X-Repo-Commit"] == sha
            assert body == expected_bytes("w.bin", 70_001)
