"""``org/name`` model ids on the S3 store: stored under ``models/org--name/`` as the
directory store names them (accel/modelid.py), listed, served, installed and kept by
``accel gc`` by their id; bad ids refused with one line."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.hub import make_files
from tests.support.s3 import S3Bucket, run_accel, running_s3_hub

ORG_ID = "openai/whisper-tiny"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _publish(bucket: S3Bucket, src: Path, model: str) -> None:
    r = run_accel("publish", str(src), "--root", bucket.url, "--model", model, "--version",
                  "1.0", env=bucket.env)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_org_name_ids_end_to_end_on_s3(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    files = make_files(tmp_path / "src", {"w.bin": 300_000, "sub/c.json": b"{}"})
    make_files(tmp_path / "solo", {"x.bin": 10})
    _publish(s3_bucket, tmp_path / "src", ORG_ID)
    _publish(s3_bucket, tmp_path / "solo", "solo")
    assert set(s3_bucket.object_keys("models/openai--whisper-tiny/")) == {
        "models/openai--whisper-tiny/model.json",
        "models/openai--whisper-tiny/1.0/manifest.json",
        "models/openai--whisper-tiny/1.0/files/w.bin",
        "models/openai--whisper-tiny/1.0/files/sub/c.json",
    }
    assert s3_bucket.object_keys("models/openai/") == []
    with running_s3_hub(s3_bucket, tmp_path / "state") as hub:
        status, body = _get(f"{hub.url}/api/models")
        assert status == 200, body
        assert sorted(m["id"] for m in json.loads(body)) == [ORG_ID, "solo"]
        status, body = _get(f"{hub.url}/api/models/{ORG_ID}/versions/1.0/manifest")
        assert status == 200 and json.loads(body)["model_id"] == ORG_ID
        # Redirected to the store's object, then served by it.
        assert _get(hub.file_url(ORG_ID, "1.0", "sub/c.json")) == (200, b"{}")
        # The stored name is not a route: only the id is.
        assert _get(hub.file_url("openai--whisper-tiny", "1.0", "sub/c.json"))[0] == 404
        r = run_accel("install", f"{ORG_ID}@1.0", "--hub", hub.url,
                      "--models-dir", str(tmp_path / "models"), env=s3_bucket.env)  # fmt: skip
        assert r.returncode == 0, (r.stdout, r.stderr, hub.log())
    installed = tmp_path / "models" / "openai--whisper-tiny" / "1.0"
    for rel, path in files.items():
        assert (installed / rel).read_bytes() == path.read_bytes()
    # gc finds every object of the org model referenced.
    dry = run_accel("gc", "--root", s3_bucket.url, "--min-age", "0", env=s3_bucket.env)
    assert dry.returncode == 0, dry.stderr
    assert "would remove (dry run; --delete removes) 0 objects" in dry.stdout, dry.stdout


def test_bad_multi_segment_ids_are_refused_with_one_line(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    make_files(tmp_path / "src", {"f": 1})
    for bad in ("a/b/c", "a--b/c", "org/a--b", "a/", "/a"):
        r = run_accel("publish", str(tmp_path / "src"), "--root", s3_bucket.url, "--model", bad,
                      "--version", "1", env=s3_bucket.env)  # fmt: skip
        assert r.returncode == 1, (bad, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("accel: error ["), (bad, r.stderr)
    assert s3_bucket.object_keys() == []
