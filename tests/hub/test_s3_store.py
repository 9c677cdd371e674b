"""The S3 store against a real S3 server (tests/support/s3.py): the server's own checks,
``accel publish --root s3://...`` (layout, commit point, resume, immutability), the
one-line errors, and ``accel gc``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import botocore.exceptions
import pytest

from accel.hub.catalog import Catalog
from accel.hub.stores import open_store
from tests.support.hub import make_files
from tests.support.s3 import REPO, S3Bucket, S3Server, run_accel, slow_uploads

MiB = 1024 * 1024


# -- the server is a real one: it checks credentials and expiry ------------------------------


def test_server_refuses_an_unknown_access_key(s3_bucket: S3Bucket) -> None:
    bad = s3_bucket.server.client(access_key="AKIANOSUCHKEY0000000")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        bad.list_objects_v2(Bucket=s3_bucket.name)
    assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_server_refuses_a_wrong_secret(s3_server: S3Server, s3_bucket: S3Bucket) -> None:
    """The server checks the SigV4 signature of the Authorization header, not only the
    key id in it (s3rver, used before, accepted any signature)."""
    bad = s3_server.client(secret_key="wrong-" + s3_server.secret_key)
    for call in (
        lambda: bad.list_objects_v2(Bucket=s3_bucket.name),
        lambda: bad.put_object(Bucket=s3_bucket.name, Key="k", Body=b"x"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert s3_bucket.object_keys() == []


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_server_checks_the_signature_of_a_presigned_url(
    s3_server: S3Server, s3_bucket: S3Bucket
) -> None:
    """Query-string SigV4: a URL signed with a wrong secret, or one whose key was changed
    after signing, is refused; the right one is served."""
    c = s3_bucket.client()
    c.put_object(Bucket=s3_bucket.name, Key="a/k", Body=b"hello")
    c.put_object(Bucket=s3_bucket.name, Key="a/j", Body=b"other")
    params = {"Bucket": s3_bucket.name, "Key": "a/k"}
    good = c.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert _get(good) == (200, b"hello")
    forged = s3_server.client(secret_key="wrong-" + s3_server.secret_key)
    status, body = _get(forged.generate_presigned_url("get_object", Params=params, ExpiresIn=60))
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True), body
    assert good.count("/a/k?") == 1
    status, body = _get(good.replace("/a/k?", "/a/j?"))
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True), body


def test_server_refuses_an_expired_presigned_url(s3_bucket: S3Bucket) -> None:
    """The server itself enforces X-Amz-Expires: the same URL that was served is refused
    once its time is up."""
    c = s3_bucket.client()
    c.put_object(Bucket=s3_bucket.name, Key="k", Body=b"hello")
    signed_at = time.time()
    url = c.generate_presigned_url(
        "get_object", Params={"Bucket": s3_bucket.name, "Key": "k"}, ExpiresIn=3
    )
    assert _get(url) == (200, b"hello")
    assert time.time() < signed_at + 3, "too slow to see the URL valid: the test proves nothing"
    # SigV4 dates have whole seconds: expired for sure 3 s + 1 s of rounding later.
    while time.time() < signed_at + 4.5:
        time.sleep(0.1)
    status, body = _get(url)
    assert status == 403, body
    # AWS and SeaweedFS say "Request has expired"; RGW gives the code alone.
    assert b"<Code>AccessDenied</Code>" in body, body


def _aws_env(monkeypatch: pytest.MonkeyPatch, bucket: S3Bucket) -> None:
    """This process's AWS chain pointed at the test server (undone after the test)."""
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in bucket.env.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)


# -- publish -----------------------------------------------------------------------------------


def _publish(bucket: S3Bucket, src: Path, *extra: str, version: str = "1.0", env=None):  # type: ignore[no-untyped-def]
    return run_accel(
        "publish", str(src), "--root", f"{bucket.url}/hub", "--model", "m", "--version",
        version, *extra, env=env or bucket.env,
    )  # fmt: skip


def test_publish_lays_out_objects_and_the_hub_catalog_reads_them(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = make_files(tmp_path / "src", {"model.bin": 20 * MiB + 7, "sub/cfg.json": b"{}"})
    r = _publish(s3_bucket, tmp_path / "src", "--block-size", "4MiB", "--task", "asr")
    assert r.returncode == 0, r.stderr
    assert "published m@1.0: 2 files" in r.stdout
    keys = set(s3_bucket.object_keys())
    assert keys == {
        "hub/catalog.stamp",
        "hub/models/m/model.json",
        "hub/models/m/1.0/manifest.json",
        "hub/models/m/1.0/files/model.bin",
        "hub/models/m/1.0/files/sub/cfg.json",
    }  # the receipts are gone once the manifest is written
    c = s3_bucket.client()
    manifest = json.loads(
        c.get_object(Bucket=s3_bucket.name, Key="hub/models/m/1.0/manifest.json")["Body"].read()
    )
    entry = next(f for f in manifest["files"] if f["path"] == "model.bin")
    import hashlib

    import blake3

    data = files["model.bin"].read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["chunks"]["size"] == 4 * MiB
    assert entry["chunks"]["digests"] == [
        blake3.blake3(data[i : i + 4 * MiB]).hexdigest() for i in range(0, len(data), 4 * MiB)
    ]
    stored = c.get_object(Bucket=s3_bucket.name, Key="hub/models/m/1.0/files/model.bin")
    assert stored["Body"].read() == data
    # The same catalog code as for a directory store, through the interface.
    _aws_env(monkeypatch, s3_bucket)
    store = open_store(f"{s3_bucket.url}/hub", state_dir=tmp_path / "state", poll_s=60)
    try:
        store.prepare()
        catalog = Catalog(store)
        assert catalog.models["m"].task == "asr"
        assert catalog.file_entry("m", "1.0", "model.bin") is not None
    finally:
        store.close()


def test_same_content_again_is_a_no_op_other_content_is_refused(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    make_files(tmp_path / "src", {"a.bin": 1000})
    assert _publish(s3_bucket, tmp_path / "src").returncode == 0
    again = _publish(s3_bucket, tmp_path / "src")
    assert again.returncode == 0 and "already published with this content" in again.stdout
    make_files(tmp_path / "src", {"a.bin": 1000}, seed=1)
    other = _publish(s3_bucket, tmp_path / "src")
    assert other.returncode == 1
    assert "accel: error [publish_conflict]" in other.stderr
    assert "Traceback" not in other.stderr


def _start_publish(bucket: S3Bucket, src: Path, endpoint: str) -> subprocess.Popen[str]:
    env = dict(bucket.env, PYTHONPATH=str(REPO), AWS_ENDPOINT_URL=endpoint)
    cmd = [sys.executable, "-m", "accel", "publish", str(src), "--root", f"{bucket.url}/hub",
           "--model", "m", "--version", "1.0"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_publish_leaves_no_version_and_a_rerun_resumes(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_files(tmp_path / "src", {"a-first.bin": 3 * MiB, "b-big.bin": 96 * MiB, "c.txt": b"c"})
    # Uploads paced at 16 MiB/s: the big file takes ~6 s, so the kill lands while it is
    # under way (straight to RGW the whole publish could end between two listings).
    slow = contextlib.ExitStack()
    proc = _start_publish(
        s3_bucket, tmp_path / "src", slow.enter_context(slow_uploads(s3_bucket.server, 16 * MiB))
    )
    try:
        # Wait for the state to kill it in: the first file done, the big one under way.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            keys = s3_bucket.object_keys("hub/")
            if "hub/models/m/1.0/.receipts/a-first.bin" in keys:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the first file's receipt never appeared")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        slow.close()
    keys = set(s3_bucket.object_keys("hub/"))
    assert "hub/models/m/1.0/manifest.json" not in keys
    assert "hub/models/m/model.json" not in keys
    # Which files the killed run finished (their receipts): under load the big one may
    # have finished too before the kill landed; the rerun must skip exactly these.
    finished = {k.rsplit("/", 1)[1] for k in keys if k.startswith("hub/models/m/1.0/.receipts/")}
    assert "a-first.bin" in finished
    first = s3_bucket.client().head_object(
        Bucket=s3_bucket.name, Key="hub/models/m/1.0/files/a-first.bin"
    )

    # No hub sees the version (the manifest is the commit point).
    _aws_env(monkeypatch, s3_bucket)
    store = open_store(f"{s3_bucket.url}/hub", state_dir=tmp_path / "state", poll_s=60)
    try:
        store.prepare()
        assert Catalog(store).models == {}
    finally:
        store.close()

    rerun = _publish(s3_bucket, tmp_path / "src")
    assert rerun.returncode == 0, rerun.stderr
    assert "a-first.bin: already uploaded (3.0 MiB), skipped" in rerun.stdout
    if "b-big.bin" in finished:
        assert "b-big.bin: already uploaded (96.0 MiB), skipped" in rerun.stdout
    else:
        assert "b-big.bin: uploaded 96.0 MiB" in rerun.stdout
    after = s3_bucket.client().head_object(
        Bucket=s3_bucket.name, Key="hub/models/m/1.0/files/a-first.bin"
    )
    assert after["LastModified"] == first["LastModified"]  # not uploaded again
    assert "hub/models/m/1.0/manifest.json" in s3_bucket.object_keys("hub/")


def test_a_receipt_whose_local_file_changed_is_not_trusted(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    make_files(tmp_path / "src", {"a.bin": 1 * MiB, "b.bin": 10})
    c = s3_bucket.client()
    # A crashed run that uploaded a.bin with its receipt, then the file was edited.
    assert _publish(s3_bucket, tmp_path / "src", version="0.9").returncode == 0
    receipt = {"path": "a.bin", "size_bytes": MiB, "sha256": "0" * 64, "block_size": 16 * MiB,
               "digests": ["0" * 64], "etag": c.head_object(Bucket=s3_bucket.name,
               Key="hub/models/m/0.9/files/a.bin")["ETag"]}  # fmt: skip
    c.copy_object(Bucket=s3_bucket.name, Key="hub/models/m/1.0/files/a.bin",
                  CopySource={"Bucket": s3_bucket.name, "Key": "hub/models/m/0.9/files/a.bin"})  # fmt: skip
    receipt["etag"] = c.head_object(Bucket=s3_bucket.name, Key="hub/models/m/1.0/files/a.bin")[
        "ETag"
    ]
    c.put_object(Bucket=s3_bucket.name, Key="hub/models/m/1.0/.receipts/a.bin",
                 Body=json.dumps(receipt).encode())  # fmt: skip
    r = _publish(s3_bucket, tmp_path / "src")
    assert r.returncode == 0, r.stderr
    assert "a.bin: uploaded 1.0 MiB" in r.stdout  # the sha256 differs: uploaded again


# -- one clear line per failure -------------------------------------------------------------


def _error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("accel: error")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_error_lines(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    make_files(tmp_path / "src", {"a.bin": 10})
    src = tmp_path / "src"
    env = s3_bucket.env
    no_creds = {
        k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    line = _error_line(_publish(s3_bucket, src, env=no_creds))
    assert "[store_credentials]" in line and "no S3 credentials" in line
    line = _error_line(
        _publish(s3_bucket, src, env=dict(env, AWS_ACCESS_KEY_ID="AKIANOSUCHKEY0000000"))
    )
    assert "[store_credentials]" in line and "refused the credentials" in line
    line = _error_line(run_accel("publish", str(src), "--root", "s3://no-such-bucket-accel",
                                 "--model", "m", "--version", "1", env=env))  # fmt: skip
    assert "[store_no_bucket]" in line and "no-such-bucket-accel" in line
    dead = f"http://127.0.0.1:{_closed_port()}"
    line = _error_line(_publish(s3_bucket, src, "--s3-endpoint", dead))
    assert "[store_unreachable]" in line and dead in line
    r = run_accel("serve", "--store", s3_bucket.url, "--s3-endpoint", dead, "--port", "0",
                  "--state-dir", str(tmp_path / "state"), env=env)  # fmt: skip
    assert "[store_unreachable]" in _error_line(r)
    for cmd in (["publish", str(src), "--model", "m", "--version", "1"], ["gc"], ["serve"]):
        line = _error_line(run_accel(*cmd, "--root", "gs://x/y", env=env))
        assert "[unsupported_scheme]" in line and "gs:// scheme is not supported" in line


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- gc ------------------------------------------------------------------------------------


def test_gc_lists_then_removes_only_what_no_manifest_references(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    make_files(tmp_path / "src", {"a.bin": 1000})
    assert _publish(s3_bucket, tmp_path / "src").returncode == 0
    c = s3_bucket.client()
    orphans = ["hub/models/m/2.0/files/a.bin", "hub/models/m/2.0/.receipts/a.bin",
               "hub/models/m/1.0/files/stray.bin"]  # fmt: skip
    for key in orphans:
        c.put_object(Bucket=s3_bucket.name, Key=key, Body=b"x" * 10)
    before = set(s3_bucket.object_keys())
    young = run_accel("gc", "--root", f"{s3_bucket.url}/hub", env=s3_bucket.env)
    assert young.returncode == 0 and "would remove" in young.stdout and " 0 objects" in young.stdout
    dry = run_accel("gc", "--root", f"{s3_bucket.url}/hub", "--min-age", "0", env=s3_bucket.env)
    assert dry.returncode == 0, dry.stderr
    assert sorted(dry.stdout.splitlines()[:-1]) == sorted(orphans)
    assert "would remove (dry run; --delete removes) 3 objects, 30 B" in dry.stdout
    assert set(s3_bucket.object_keys()) == before  # a dry run removes nothing
    real = run_accel("gc", "--root", f"{s3_bucket.url}/hub", "--min-age", "0", "--delete",
                     env=s3_bucket.env)  # fmt: skip
    assert real.returncode == 0 and "removed 3 objects" in real.stdout
    assert set(s3_bucket.object_keys()) == before - set(orphans)
