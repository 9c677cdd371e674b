"""``accel serve --store s3://...`` against a real S3 server: installs whose file bytes
never pass through the hub, new publishes noticed, a presigned URL expiring mid-download,
proxy mode's Range/412/416, usage counts under --state-dir."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.hub import make_files
from tests.support.s3 import S3Bucket, run_accel, running_s3_hub

MiB = 1024 * 1024
TOKEN = "hub-token-not-for-the-store"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _open(url: str, *, method: str = "GET", follow: bool = True, **headers: str):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(url, method=method, headers=headers)
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(_NoRedirect)
    try:
        return opener.open(req, timeout=30)
    except urllib.error.HTTPError as err:
        return err


def _publish(bucket: S3Bucket, src: Path, model: str, version: str, *extra: str) -> None:
    r = run_accel("publish", str(src), "--root", bucket.url, "--model", model, "--version",
                  version, *extra, env=bucket.env)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_install_through_a_redirect_hub_moves_no_file_byte_through_the_hub(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    spec: dict[str, int | bytes] = {"model.bin": 24 * MiB + 5}
    spec.update({f"shards/part-{i:02}.txt": 1000 + i for i in range(20)})
    files = make_files(tmp_path / "src", spec)
    _publish(s3_bucket, tmp_path / "src", "m", "1.0", "--block-size", "4MiB")
    with running_s3_hub(s3_bucket, tmp_path / "state", "--token", TOKEN) as hub:
        with FaultProxy(hub.url) as counted:  # every byte the hub sends passes here
            r = run_accel("install", "m@1.0", "--hub", counted.url, "--token", TOKEN,
                          "--models-dir", str(tmp_path / "models"), env=s3_bucket.env)  # fmt: skip
            assert r.returncode == 0, (r.stdout, r.stderr, hub.log())
            through_hub = counted.client_body_bytes
        installed = list((tmp_path / "models").rglob("model.bin"))
        assert len(installed) == 1 and installed[0].read_bytes() == files["model.bin"].read_bytes()
        for rel, path in files.items():
            assert (installed[0].parent / rel).read_bytes() == path.read_bytes()
        # The catalog and manifest JSON only: not one file (the smallest is 1000 bytes, and
        # 24 MiB would not fit under this bound many times over).
        assert through_hub < 64 * 1024, through_hub
        # RGW (like AWS) answers 400 to a request with both a query signature and an
        # Authorization header: the install worked, so the hub's token never reached it.
        # The install was counted, in SQLite under --state-dir.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ranking = json.load(
                _open(f"{hub.url}/api/model-usage/ranking", Authorization=f"Bearer {TOKEN}")
            )
            if ranking:
                break
            time.sleep(0.1)
        assert ranking == [{"model_id": "m", "request_count": 1, "rank": 1}]
    with sqlite3.connect(tmp_path / "state" / "usage.sqlite3") as db:
        assert db.execute("SELECT model_id, request_count FROM usage").fetchall() == [("m", 1)]


def test_a_new_publish_is_served_within_10_s(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    make_files(tmp_path / "v1", {"a.bin": 100})
    make_files(tmp_path / "v2", {"a.bin": 200})
    _publish(s3_bucket, tmp_path / "v1", "m", "1.0")
    with running_s3_hub(s3_bucket, tmp_path / "state") as hub:
        assert [v["version"] for v in json.load(_open(f"{hub.url}/api/models/m"))["versions"]] == [
            "1.0"
        ]
        _publish(s3_bucket, tmp_path / "v2", "m", "2.0", "--default")
        published = time.monotonic()
        while time.monotonic() - published < 10:
            info = json.load(_open(f"{hub.url}/api/models/m"))
            if [v["version"] for v in info["versions"]] == ["1.0", "2.0"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the hub did not notice version 2.0 within 10 s")
        assert info["default_version"] == "2.0"
        assert (
            _open(hub.file_url("m", "2.0", "a.bin")).read() == (tmp_path / "v2/a.bin").read_bytes()
        )


def test_redirect_answers_and_conditionals(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    files = make_files(tmp_path / "src", {"w.bin": 3000, "sub/dir/x.txt": b"hello"})
    _publish(s3_bucket, tmp_path / "src", "m", "1.0")
    sha = hashlib.sha256(files["w.bin"].read_bytes()).hexdigest()
    with running_s3_hub(s3_bucket, tmp_path / "state", "--presign-ttl", "600") as hub:
        url = hub.file_url("m", "1.0", "w.bin")
        r = _open(url, follow=False)
        assert r.status == 307
        assert r.headers["X-Accel-Size"] == "3000" and r.headers["X-Accel-Sha256"] == sha
        location = r.headers["Location"]
        assert "X-Amz-Expires=600" in location and "X-Amz-Signature=" in location
        etag = r.headers["ETag"]
        assert etag != f'"{sha[:40]}"'  # the store's validator, not a checksum
        with urllib.request.urlopen(location, timeout=10) as direct:
            assert direct.read() == files["w.bin"].read_bytes()
            assert direct.headers["ETag"] == etag  # the same validator the hub gave
        head = _open(url, method="HEAD")
        assert head.status == 200 and head.headers["Content-Length"] == "3000"
        assert head.headers["ETag"] == etag
        assert _open(url, **{"If-None-Match": etag}).status == 304
        assert _open(url, **{"If-Match": '"other"'}).status == 412
        bad = _open(url, Range="bytes=5000-")
        assert bad.status == 416 and bad.headers["Content-Range"] == "bytes */3000"
        # A fresh URL after expiry: the client comes back with the store's ETag.
        assert _open(url, follow=False, **{"If-Match": etag}).status == 307
        assert _open(hub.file_url("m", "1.0", "sub/dir/x.txt")).read() == b"hello"
        for missing in ("nope.bin", "sub/%2e%2e/w.bin", "../1.0/w.bin"):
            assert _open(hub.file_url("m", "1.0", missing), follow=False).status in (400, 404)


@pytest.mark.slow
def test_a_presigned_url_expiring_mid_download_costs_at_most_a_chunk_per_expiry(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    files = make_files(tmp_path / "src", {"big.bin": 48 * MiB})
    _publish(s3_bucket, tmp_path / "src", "m", "1.0")
    sha = hashlib.sha256(files["big.bin"].read_bytes()).hexdigest()
    chunk = 4 * MiB
    with running_s3_hub(s3_bucket, tmp_path / "state", "--presign-ttl", "2") as hub:
        r = run_accel("get", hub.file_url("m", "1.0", "big.bin"), "-o", str(tmp_path / "out"),
                      "--limit-rate", "8MiB/s", "--chunk-size", "4MiB", "--sha256", sha, "--json",
                      env=s3_bucket.env, timeout=120)  # fmt: skip
    assert r.returncode == 0, (r.stderr, r.stdout[-2000:])
    events = [json.loads(line) for line in r.stdout.splitlines()]
    done = next(e for e in events if e["event"] == "done")
    assert any(e["event"] == "verified" for e in events)
    refused = [
        e
        for e in events
        if e["event"] == "chunk_retry" and "resolving the URL again" in e["message"]
    ]
    assert refused, "no presigned URL expired during the download: the test proved nothing"
    expiries = math.ceil(done["elapsed_s"] / 2)
    assert done["bytes_fetched"] - done["size"] <= expiries * chunk, done
    assert (tmp_path / "out").read_bytes() == files["big.bin"].read_bytes()


def test_proxy_mode_streams_through_the_hub_with_range_412_416(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    files = make_files(tmp_path / "src", {"p.bin": 5 * MiB + 3})
    data = files["p.bin"].read_bytes()
    _publish(s3_bucket, tmp_path / "src", "m", "1.0")
    with running_s3_hub(s3_bucket, tmp_path / "state", "--storage-mode", "proxy") as hub:
        url = hub.file_url("m", "1.0", "p.bin")
        full = _open(url, follow=False)
        assert full.status == 200 and full.read() == data
        etag = full.headers["ETag"]
        part = _open(url, Range="bytes=10-19")
        assert part.status == 206 and part.read() == data[10:20]
        assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        tail = _open(url, Range="bytes=-7")
        assert tail.status == 206 and tail.read() == data[-7:]
        assert _open(url, Range="bytes=10-19", **{"If-Range": etag}).status == 206
        stale = _open(url, Range="bytes=10-19", **{"If-Range": '"old"'})
        assert stale.status == 200 and stale.read() == data
        assert _open(url, **{"If-Match": '"old"'}).status == 412
        assert _open(url, **{"If-Match": etag}).status == 200
        beyond = _open(url, Range=f"bytes={len(data)}-")
        assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"
        sha = hashlib.sha256(data).hexdigest()
        r = run_accel("get", url, "-o", str(tmp_path / "out"), "--sha256", sha, env=s3_bucket.env)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "out").read_bytes() == data
