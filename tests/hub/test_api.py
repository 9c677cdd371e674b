"""The hub's JSON API against a real ``accel serve`` on loopback: shapes, errors, ETags."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from accel.schema import ErrorBody, ModelInfo, RankingEntry, VersionManifest, version_checksum
from tests.support.hub import SMALL_STORE, RunningHub

# The seed's examples (v2-checklist 1.1), as key sets.
SEED_MODEL_KEYS = {"id", "name", "versions", "default_version", "task", "languages"}
SEED_VERSION_KEYS = {"version", "size_bytes", "files", "checksum_sha256", "updated_at"}
SEED_FILE_KEYS = {"path", "size_bytes"}
SEED_RANKING_KEYS = {"model_id", "request_count", "rank"}


def call(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def get_json(url: str) -> Any:
    status, _, body = call(url)
    assert status == 200, body
    return json.loads(body)


def assert_error(body: bytes, status: int, code: str) -> None:
    err = ErrorBody.model_validate_json(body)
    assert set(json.loads(body)) == {"error"}
    assert set(json.loads(body)["error"]) == {"code", "message", "status"}
    assert (err.error.status, err.error.code) == (status, code)
    assert err.error.message


def test_list_models_matches_the_seed_shape(live: RunningHub) -> None:
    models = get_json(f"{live.url}/api/models")
    assert [m["id"] for m in models][:2] == ["demo-asr", "demo-mt"]
    for m in models:
        assert set(m) >= SEED_MODEL_KEYS
        ModelInfo.model_validate(m)
        for v in m["versions"]:
            assert set(v) >= SEED_VERSION_KEYS
            assert v["updated_at"].endswith("Z")
            for f in v["files"]:
                assert set(f) >= SEED_FILE_KEYS and len(f["sha256"]) == 64
            assert v["size_bytes"] == sum(f["size_bytes"] for f in v["files"])
    asr = models[0]
    assert [v["version"] for v in asr["versions"]] == ["1.0.0", "1.1.0"]
    assert asr["default_version"] == "1.1.0"
    assert asr["task"] == "asr" and asr["languages"] == ["zh"]
    spec = SMALL_STORE[("demo-asr", "1.0.0")]
    assert {f["path"]: f["size_bytes"] for f in asr["versions"][0]["files"]} == {
        p: (v if isinstance(v, int) else len(v)) for p, v in spec.items()
    }


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("?task=asr", ["demo-asr"]),
        ("?task=mt", ["demo-mt"]),
        ("?language=en", ["demo-mt"]),
        ("?language=zh", ["demo-asr", "demo-mt"]),
        ("?task=asr&language=en", []),
        ("?task=tts", []),
    ],
)
def test_filters(live: RunningHub, query: str, ids: list[str]) -> None:
    assert [m["id"] for m in get_json(f"{live.url}/api/models{query}")] == ids


def test_etag_and_304(live: RunningHub) -> None:
    for path in ("/api/models", "/api/models/demo-asr", "/api/models?task=mt"):
        status, headers, body = call(live.url + path)
        etag = headers["ETag"]
        assert status == 200 and etag.startswith('"') and etag.endswith('"')
        status2, headers2, body2 = call(live.url + path, headers={"If-None-Match": etag})
        assert status2 == 304 and body2 == b"" and headers2["ETag"] == etag
        status3, _, body3 = call(live.url + path, headers={"If-None-Match": '"other"'})
        assert status3 == 200 and body3 == body


def test_etag_changes_when_the_catalog_changes(live: RunningHub) -> None:
    from tests.support.hub import publish_model

    _, h1, _ = call(f"{live.url}/api/models")
    publish_model(live.root, "zz-new", "0.1", {"w.bin": 100}, task="tts")
    status, h2, body = call(f"{live.url}/api/models", headers={"If-None-Match": h1["ETag"]})
    assert status == 200 and h2["ETag"] != h1["ETag"]
    assert "zz-new" in [m["id"] for m in json.loads(body)]
    assert [m["id"] for m in get_json(f"{live.url}/api/models?task=tts")] == ["zz-new"]


def test_one_model(live: RunningHub) -> None:
    one = get_json(f"{live.url}/api/models/demo-mt")
    listed = [m for m in get_json(f"{live.url}/api/models") if m["id"] == "demo-mt"]
    # One route for both APIs: the seed's fields (as listed) and HF's (id, sha, siblings).
    assert {k: one[k] for k in listed[0]} == listed[0]
    assert one["modelId"] == "demo-mt" and len(one["siblings"]) == 30
    assert one["task"] == "mt" and one["languages"] == ["zh", "en"]
    assert len(one["versions"][0]["files"]) == 30


def test_manifest_shape_and_checksum(live: RunningHub) -> None:
    raw = get_json(f"{live.url}/api/models/demo-asr/versions/1.0.0/manifest")
    m = VersionManifest.model_validate(raw)
    assert (m.model_id, m.version) == ("demo-asr", "1.0.0")
    assert m.checksum_sha256 == version_checksum(m.files)
    model_bin = next(f for f in m.files if f.path == "model.bin")
    assert model_bin.chunks.algo == "blake3" and model_bin.chunks.size == 1024 * 1024
    assert len(model_bin.chunks.digests) == 4  # 3 MiB + 12345 bytes in 1 MiB blocks
    catalog_version = get_json(f"{live.url}/api/models/demo-asr")["versions"][0]
    assert catalog_version["checksum_sha256"] == m.checksum_sha256


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/models/nope", "model_not_found"),
        ("/api/models/nope/versions/1.0.0/manifest", "model_not_found"),
        ("/api/models/demo-asr/versions/9.9/manifest", "version_not_found"),
        ("/api/nothing-here", "not_found"),
        ("/storage/models/demo-asr/1.0.0/nope.bin", "not_found"),
    ],
)
def test_404_bodies(live: RunningHub, path: str, code: str) -> None:
    status, headers, body = call(live.url + path)
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert_error(body, 404, code)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "bad_request"),
        (b"{}", 400, "bad_request"),
        (b'{"model_id": 5}', 400, "bad_request"),
        (b'{"model_id": "unknown-model"}', 404, "model_not_found"),
    ],
)
def test_usage_report_errors(live: RunningHub, body: bytes, status: int, code: str) -> None:
    got, _, answer = call(f"{live.url}/api/model-usage", "POST", body)
    assert got == status
    assert_error(answer, status, code)


# "%C2%B2" is "²" and "%D9%A3" is "٣": str.isdigit() says yes to both, int() refuses "²".
@pytest.mark.parametrize("limit", ["0", "-1", "abc", "100000", "%C2%B2", "%D9%A3"])
def test_ranking_bad_limit(live: RunningHub, limit: str) -> None:
    status, _, body = call(f"{live.url}/api/model-usage/ranking?limit={limit}")
    assert_error(body, 400, "bad_request")
    assert status == 400


def test_method_not_allowed_body(live: RunningHub) -> None:
    status, headers, body = call(f"{live.url}/api/models", "DELETE")
    assert status == 405 and "GET" in headers.get("Allow", "")
    assert_error(body, 405, "method_not_allowed")


def test_ranking_shape_and_counting_rules(live: RunningHub) -> None:
    before = {
        e["model_id"]: e["request_count"] for e in get_json(f"{live.url}/api/model-usage/ranking")
    }
    # Catalog reads and file downloads are not install requests; manifest fetches (200) are.
    get_json(f"{live.url}/api/models/demo-mt")
    call(live.file_url("demo-mt", "1.0.0", "shards/part-01.bin"))
    manifest_url = f"{live.url}/api/models/demo-mt/versions/1.0.0/manifest"
    for _ in range(3):
        get_json(manifest_url)
    # A revalidation (304) or a HEAD is not one more install: the client has the manifest.
    etag = call(manifest_url, "HEAD")[1]["ETag"]
    for _ in range(2):
        assert call(manifest_url, headers={"If-None-Match": etag})[0] == 304
    status, _, body = call(f"{live.url}/api/model-usage", "POST", b'{"model_id": "demo-mt"}',
                           {"Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and json.loads(body)["model_id"] == "demo-mt"
    ranking = get_json(f"{live.url}/api/model-usage/ranking")
    for e in ranking:
        assert set(e) == SEED_RANKING_KEYS
        RankingEntry.model_validate(e)
    after = {e["model_id"]: e["request_count"] for e in ranking}
    assert after["demo-mt"] - before.get("demo-mt", 0) == 4
    assert [e["rank"] for e in ranking] == list(range(1, len(ranking) + 1))
    assert len(get_json(f"{live.url}/api/model-usage/ranking?limit=1")) == 1


def test_healthz_and_openapi(live: RunningHub) -> None:
    assert get_json(f"{live.url}/healthz") == {"status": "ok"}
    spec = get_json(f"{live.url}/openapi.json")
    assert spec["openapi"].startswith("3.")


def test_page_lists_catalog_and_ranking(live: RunningHub) -> None:
    get_json(f"{live.url}/api/models/demo-asr/versions/1.1.0/manifest")
    status, headers, body = call(live.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    for text in ("demo-asr", "demo-mt", "1.1.0", "(default)", "asr", "Popular models", "zh, en"):
        assert text in page
    assert str(live.root) not in page
