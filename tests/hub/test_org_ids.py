"""``org/name`` model ids: published, listed, served, installed (stored as ``org--name``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from accel.errors import UnsafePathError
from accel.manager import ModelManager
from tests.support.hfclient import hf_env, run_hf
from tests.support.hub import expected_bytes, publish_model, running_hub

SPEC: dict[str, int | bytes] = {"w.bin": 300_000, "sub/c.json": b"{}"}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_publish_refuses_bad_two_segment_ids(tmp_path: Path) -> None:
    for bad in ("a/b/c", "a/..", "../a", "a--b/c", "org/a--b", "a/", "/a"):
        with pytest.raises(UnsafePathError):
            publish_model(tmp_path / "store", bad, "1", {"f": 1})
    assert not (tmp_path / "store" / "models").exists() or not any(
        (tmp_path / "store" / "models").iterdir()
    )


async def test_org_name_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "openai/whisper-tiny", "1.0", SPEC)
    publish_model(root, "solo", "1.0", {"x.bin": 10})
    assert (root / "models" / "openai--whisper-tiny" / "1.0" / "manifest.json").is_file()
    with running_hub(root) as h:
        status, body = _get(f"{h.url}/api/models")
        assert status == 200
        assert sorted(m["id"] for m in json.loads(body)) == ["openai/whisper-tiny", "solo"]
        status, body = _get(f"{h.url}/api/models/openai/whisper-tiny")
        assert status == 200 and json.loads(body)["id"] == "openai/whisper-tiny"
        status, body = _get(f"{h.url}/api/models/openai/whisper-tiny/versions/1.0/manifest")
        assert status == 200 and json.loads(body)["model_id"] == "openai/whisper-tiny"
        status, body = _get(f"{h.url}/storage/models/openai/whisper-tiny/1.0/sub/c.json")
        assert (status, body) == (200, b"{}")
        # The directory name is not a route: only the id is.
        assert _get(f"{h.url}/storage/models/openai--whisper-tiny/1.0/sub/c.json")[0] == 404
        for bad in (
            "/storage/models/openai/../solo/1.0/x.bin",
            "/storage/models/openai/%2e%2e/1.0/w.bin",
            "/storage/models/openai%2Fwhisper-tiny/1.0/w.bin",
            "/storage/models/openai/whisper-tiny/1.0/../../solo/1.0/x.bin",
        ):
            assert _get(h.url + bad)[0] in (400, 404), bad
        env = hf_env(h.url, tmp_path / "home")
        listed = run_hf(
            "api = HfApi()\n"
            "print(json.dumps([[m.id for m in api.list_models(author='openai')],\n"
            "  [m.id for m in api.list_models(search='OLO')],\n"
            "  [m.id for m in api.list_models(limit=1)]]))",
            env,
        )
        assert listed == [["openai/whisper-tiny"], ["solo"], ["openai/whisper-tiny"]]
        out = tmp_path / "hf"
        run_hf(f"snapshot_download('openai/whisper-tiny', local_dir={str(out)!r}); print(1)", env)
        assert (out / "w.bin").read_bytes() == expected_bytes("w.bin", 300_000)

        models = tmp_path / "models"
        async with ModelManager(models, h.url, workers=1) as mm:
            path = await mm.ainstall("openai/whisper-tiny")
            assert path == models / "openai--whisper-tiny" / "1.0"
            assert (path / "w.bin").read_bytes() == expected_bytes("w.bin", 300_000)
            assert mm.get_model_path("openai/whisper-tiny") == path
            shown = [r.model_id for r in mm.status()]
            assert "openai/whisper-tiny" in shown
