"""Bearer-token auth on every protected route of a real hub; /healthz stays open."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.hub.conftest import TOKEN
from tests.hub.test_api import call
from tests.support.hub import RunningHub, publish_model, running_hub

PROTECTED = [
    ("GET", "/"),
    ("GET", "/api/models"),
    ("GET", "/api/models?task=asr"),
    ("GET", "/api/models/demo-asr"),
    ("GET", "/api/models/demo-asr/versions/1.0.0/manifest"),
    ("GET", "/api/model-usage/ranking"),
    ("POST", "/api/model-usage"),
    ("GET", "/storage/models/demo-asr/1.0.0/model.bin"),
    ("HEAD", "/storage/models/demo-asr/1.0.0/model.bin"),
    ("GET", "/storage/models/demo-asr/1.0.0/nope"),
    ("GET", "/api/unknown"),
]
BODY = b'{"model_id": "demo-asr"}'


def _send(
    hub: RunningHub, method: str, path: str, auth: str | None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": auth} if auth is not None else {}
    return call(hub.url + path, method, BODY if method == "POST" else None, headers)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "auth",
    [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"],
    ids=["missing", "wrong", "basic-scheme", "empty", "longer", "prefix"],
)
def test_refused_without_the_right_token(
    secured: RunningHub, method: str, path: str, auth: str | None
) -> None:
    status, headers, body = _send(secured, method, path, auth)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    if method != "HEAD":
        err = json.loads(body)["error"]
        assert err["code"] == "unauthorized" and err["status"] == 401
        assert b"demo-asr" not in body  # nothing of the catalog leaks


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_accepted_with_the_right_token(secured: RunningHub, method: str, path: str) -> None:
    status, _, _ = _send(secured, method, path, f"Bearer {TOKEN}")
    assert status == (404 if "nope" in path or "unknown" in path else 200)


def test_healthz_and_openapi_stay_open(secured: RunningHub) -> None:
    assert call(secured.url + "/healthz")[0] == 200
    assert call(secured.url + "/openapi.json")[0] == 200


def test_curl_with_token_downloads(secured: RunningHub, tmp_path: Path) -> None:
    out = tmp_path / "m.bin"
    subprocess.run(
        ["curl", "-sSf", "-H", f"Authorization: Bearer {TOKEN}", "-o", str(out),
         secured.file_url("demo-asr", "1.0.0", "model.bin")],
        check=True,
    )  # fmt: skip
    assert out.read_bytes() == secured.store_path("demo-asr", "1.0.0", "model.bin").read_bytes()


def test_tokens_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "m", "1", {"a": 10})
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\nalpha\n\n  beta  \n")
    with running_hub(root, extra_args=["--tokens-file", str(tokens)]) as hub:
        for tok, status in (("alpha", 200), ("beta", 200), ("gamma", 401), ("# comment", 401)):
            assert (
                call(hub.url + "/api/models", headers={"Authorization": f"Bearer {tok}"})[0]
                == status
            )


def test_serve_refuses_unreadable_tokens_file(tmp_path: Path, accel_cmd: list[str]) -> None:
    out = subprocess.run(
        [*accel_cmd, "serve", "--root", str(tmp_path), "--tokens-file", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "tokens file" in out.stderr and "Traceback" not in out.stderr
