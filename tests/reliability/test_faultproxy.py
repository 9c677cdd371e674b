"""The fault proxy itself, against a real nginx origin, driven by curl and aiohttp.

Each test injects one named fault and checks what a client really receives, so the
downloader's fault tests can trust that "reset after N bytes" means exactly that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.reliability.origin import NginxOrigin
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.wait import wait_until
from tests.support.webapp import serve_app

SIZE = 1_500_000
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    (root / "f.bin").write_bytes(os.urandom(SIZE))
    return root


@pytest.fixture(scope="module")
def origin(www: Path) -> Iterator[NginxOrigin]:
    with NginxOrigin(www) as o:
        yield o


@pytest.fixture
def data(www: Path) -> bytes:
    return (www / "f.bin").read_bytes()


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-s", "-S", *args], capture_output=True, timeout=timeout, check=False
    )


def curl_get(url: str, tmp: Path, *extra: str) -> tuple[int, bytes, str]:
    """(curl exit code, body, response headers) of one GET."""
    out, hdr = tmp / "body", tmp / "hdr"
    for p in (out, hdr):
        p.unlink(missing_ok=True)
    r = curl("-o", str(out), "-D", str(hdr), *extra, url)
    body = out.read_bytes() if out.exists() else b""
    return r.returncode, body, hdr.read_text("latin-1") if hdr.exists() else ""


def test_passthrough_full_and_range_with_curl(
    origin: NginxOrigin, data: bytes, tmp_path: Path
) -> None:
    with FaultProxy(origin.url) as p:
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 0 and body == data
        rc, body, hdr = curl_get(p.url + "/f.bin", tmp_path, "-r", "1000-1999")
        assert rc == 0 and body == data[1000:2000]
        assert "206" in hdr.splitlines()[0]
        assert f"Content-Range: bytes 1000-1999/{SIZE}" in hdr
        # curl may exit before the proxy has counted its last write: wait for the count
        wait_until(lambda: p.snapshot().client_body_bytes >= SIZE + 1000, what="the count")
        s = p.snapshot()
        assert s.requests == 2 and not s.faults
        assert s.client_body_bytes == SIZE + 1000 == s.upstream_body_bytes


def test_keep_alive_many_requests_on_one_connection(origin: NginxOrigin, tmp_path: Path) -> None:
    with FaultProxy(origin.url) as p:
        args = []
        for i in range(5):
            args += ["-o", str(tmp_path / f"o{i}"), p.url + "/f.bin"]
        r = curl("-w", "%{num_connects}\\n", *args)
        assert r.returncode == 0
        assert r.stdout.decode().split() == ["1", "0", "0", "0", "0"]
        assert p.snapshot().connections == 1 and p.requests == 5


async def test_aiohttp_pool_ranges_are_byte_exact(origin: NginxOrigin, data: bytes) -> None:
    with FaultProxy(origin.url) as p:
        conn = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=conn) as s:
            for start in range(0, SIZE, 100_000):
                end = min(start + 99_999, SIZE - 1)
                async with s.get(p.url + "/f.bin", headers={"Range": f"bytes={start}-{end}"}) as r:
                    assert r.status == 206
                    assert await r.read() == data[start : end + 1]
        assert p.requests == 15 and p.snapshot().connections <= 4


def test_reset_after_n_bytes(origin: NginxOrigin, tmp_path: Path) -> None:
    rule = FaultRule(FaultKind.RESET, nth=1, after_bytes=10_000)
    with FaultProxy(origin.url, [rule]) as p:
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 56  # "failure receiving network data": connection reset
        assert len(body) <= 10_000
        assert p.faults == {"reset": 1}
        assert p.client_body_bytes == 10_000
        rc, _, _ = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 0  # the rule fired once


async def test_reset_seen_by_aiohttp(origin: NginxOrigin) -> None:
    rule = FaultRule(FaultKind.RESET, nth=1, after_bytes=5000)
    with FaultProxy(origin.url, [rule]) as p:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(p.url + "/f.bin") as r:
                    await r.read()
            async with s.get(p.url + "/f.bin") as r:
                assert len(await r.read()) == SIZE


def test_truncate_keeps_content_length(origin: NginxOrigin, tmp_path: Path) -> None:
    with FaultProxy(origin.url, [FaultRule(FaultKind.TRUNCATE, after_bytes=70_000)]) as p:
        rc, body, hdr = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 18  # partial file: fewer bytes than Content-Length
        assert len(body) == 70_000
        assert f"Content-Length: {SIZE}" in hdr


def test_truncate_without_length_looks_like_success(
    origin: NginxOrigin, data: bytes, tmp_path: Path
) -> None:
    with FaultProxy(origin.url, [FaultRule(FaultKind.TRUNCATE_NOLEN, after_bytes=70_000)]) as p:
        rc, body, hdr = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 0  # a client that does not count bytes sees a success
        assert body == data[:70_000]
        assert "content-length" not in hdr.lower()


def test_flip_changes_exactly_one_byte(origin: NginxOrigin, data: bytes, tmp_path: Path) -> None:
    with FaultProxy(origin.url, [FaultRule(FaultKind.FLIP, after_bytes=123_457)]) as p:
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 0 and len(body) == SIZE
        diff = [i for i, (x, y) in enumerate(zip(body, data, strict=True)) if x != y]
        assert diff == [123_457]
        assert p.faults == {"flip": 1}


def test_shift_moves_one_byte_to_the_end(origin: NginxOrigin, data: bytes, tmp_path: Path) -> None:
    with FaultProxy(origin.url, [FaultRule(FaultKind.SHIFT, after_bytes=70_000)]) as p:
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 0 and len(body) == SIZE  # length and status right: only bytes moved
        assert body == data[:70_000] + data[70_001:] + data[70_000:70_001]
        assert p.faults == {"shift": 1}


def test_corrupt_rate_is_silent_and_leaves_the_fault_sequence_alone(
    origin: NginxOrigin, data: bytes, tmp_path: Path
) -> None:
    kinds = [FaultKind.STATUS_503]

    def run(corrupt: float) -> tuple[list[str | None], int]:
        bad = 0
        with FaultProxy(origin.url, fault_rate=0.3, seed=5, kinds=kinds, corrupt_rate=corrupt) as p:
            for i in range(40):
                lo = i * 1000
                rc, body, _ = curl_get(p.url + "/f.bin", tmp_path, "-r", f"{lo}-{lo + 999}")
                if rc == 0 and len(body) == 1000 and body != data[lo : lo + 1000]:
                    bad += 1
            records = p.snapshot().records
        return [r.fault.value if r.fault else None for r in records], bad

    plain, none_bad = run(0.0)
    mixed, bad = run(0.5)
    assert none_bad == 0
    # Every 503 of the plain run is still there; the other answers got corrupted instead.
    assert [f for f in mixed if f == "status_503"] == [f for f in plain if f]
    assert [i for i, f in enumerate(mixed) if f == "status_503"] == [
        i for i, f in enumerate(plain) if f
    ]
    silent = [f for f in mixed if f in ("flip", "shift")]
    assert 5 <= len(silent) <= 25 and bad == len(silent)  # ~50 % of the other ~28


def test_stall_before_headers_trips_a_client_timeout(origin: NginxOrigin, tmp_path: Path) -> None:
    with FaultProxy(origin.url, [FaultRule(FaultKind.STALL_HEADERS, stall_s=3)]) as p:
        t0 = time.monotonic()
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path, "--max-time", "1")
        assert rc == 28 and body == b""
        assert time.monotonic() - t0 < 2.5


def test_stall_mid_body_then_completes(origin: NginxOrigin, data: bytes, tmp_path: Path) -> None:
    rule = FaultRule(FaultKind.STALL_BODY, stall_s=1.0, after_bytes=1000)
    with FaultProxy(origin.url, [rule]) as p:
        t0 = time.monotonic()
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 0 and body == data
        assert time.monotonic() - t0 >= 1.0


@pytest.mark.parametrize(
    ("kind", "status"), [(FaultKind.STATUS_503, 503), (FaultKind.STATUS_429, 429)]
)
def test_status_with_retry_after(
    origin: NginxOrigin, tmp_path: Path, kind: FaultKind, status: int
) -> None:
    with FaultProxy(origin.url, [FaultRule(kind, retry_after="7")]) as p:
        rc, body, hdr = curl_get(p.url + "/f.bin", tmp_path)
        assert rc == 0
        assert hdr.splitlines()[0].startswith(f"HTTP/1.1 {status}")
        assert "Retry-After: 7" in hdr
        assert json.loads(body)["error"]["status"] == status
        assert p.upstream_body_bytes == 0


def test_ignore_range_answers_200_with_whole_file(
    origin: NginxOrigin, data: bytes, tmp_path: Path
) -> None:
    with FaultProxy(origin.url, [FaultRule(FaultKind.IGNORE_RANGE)]) as p:
        rc, body, hdr = curl_get(p.url + "/f.bin", tmp_path, "-r", "500-999")
        assert rc == 0
        assert hdr.splitlines()[0].startswith("HTTP/1.1 200")
        assert body == data and "content-range" not in hdr.lower()


async def test_wrong_content_range(origin: NginxOrigin, data: bytes) -> None:
    with FaultProxy(origin.url, [FaultRule(FaultKind.WRONG_RANGE, range_start=100_000)]) as p:
        async with aiohttp.ClientSession() as s:
            hdrs = {"Range": "bytes=100000-199999"}
            async with s.get(p.url + "/f.bin", headers=hdrs) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] != f"bytes 100000-199999/{SIZE}"
                assert await r.read() == data[100_000:200_000]  # bytes right, label wrong
            hdrs = {"Range": "bytes=0-9"}
            async with s.get(p.url + "/f.bin", headers=hdrs) as r:
                assert r.headers["Content-Range"] == f"bytes 0-9/{SIZE}"  # rule matched start only
        assert p.faults == {"wrong_range": 1}


async def test_new_version_changes_etag_and_bytes(origin: NginxOrigin, data: bytes) -> None:
    rules = [FaultRule(FaultKind.NEW_VERSION, times=None, path="/f.bin")]
    async with aiohttp.ClientSession() as s:
        async with s.head(origin.url + "/f.bin") as r:
            etag = r.headers["ETag"]
        with FaultProxy(origin.url, rules) as p:
            async with s.get(p.url + "/f.bin", headers={"Range": "bytes=0-999"}) as r:
                assert r.status == 206
                assert r.headers["ETag"] != etag
                body = await r.read()
                assert len(body) == 1000 and body != data[:1000]
            hdrs = {"Range": "bytes=0-999", "If-Match": etag}
            async with s.get(p.url + "/f.bin", headers=hdrs) as r:
                assert r.status == 412
            hdrs = {"Range": "bytes=0-999", "If-Range": etag}
            async with s.get(p.url + "/f.bin", headers=hdrs) as r:
                assert r.status == 200 and len(await r.read()) == SIZE


def test_latency_and_trickle(origin: NginxOrigin, data: bytes, tmp_path: Path) -> None:
    with FaultProxy(origin.url, latency_s=0.3) as p:
        t0 = time.monotonic()
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path, "-r", "0-9")
        assert rc == 0 and body == data[:10]
        assert time.monotonic() - t0 >= 0.3
    with FaultProxy(origin.url, trickle_bps=100_000) as p:
        t0 = time.monotonic()
        rc, body, _ = curl_get(p.url + "/f.bin", tmp_path, "-r", "0-49999")
        assert rc == 0 and body == data[:50_000]
        assert time.monotonic() - t0 >= 0.45


def test_random_faults_follow_the_seed(origin: NginxOrigin, tmp_path: Path) -> None:
    kinds = [FaultKind.STATUS_503, FaultKind.FLIP, FaultKind.TRUNCATE, FaultKind.WRONG_RANGE]

    def run(seed: int) -> list[str | None]:
        with FaultProxy(origin.url, fault_rate=0.5, seed=seed, kinds=kinds) as p:
            for i in range(40):
                curl_get(p.url + "/f.bin", tmp_path, "-r", f"{i * 1000}-{i * 1000 + 999}")
            return [r.fault.value if r.fault else None for r in p.snapshot().records]

    a, b = run(3), run(3)
    assert a == b
    injected = sum(1 for f in a if f)
    assert 10 <= injected <= 30  # ~50 % of 40
    assert set(a) - {None} <= {k.value for k in kinds}
    assert run(4) != a


def test_path_rule_and_nth(origin: NginxOrigin, www: Path, tmp_path: Path) -> None:
    (www / "other.bin").write_bytes(b"x" * 100)
    rules = [FaultRule(FaultKind.STATUS_503, path="other", times=None)]
    with FaultProxy(origin.url, rules) as p:
        assert curl_get(p.url + "/f.bin", tmp_path, "-r", "0-0")[0] == 0
        for _ in range(3):
            _, _, hdr = curl_get(p.url + "/other.bin", tmp_path)
            assert " 503 " in hdr.splitlines()[0]
        assert p.faults == {"status_503": 3}


async def test_chunked_upstream_and_post_body() -> None:
    """Bodies without Content-Length are re-chunked; request bodies are forwarded."""

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(10):
            await resp.write(b"%d," % i)
        await resp.write_eof()
        return resp

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": (await request.read()).decode()})

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_post("/echo", echo)
    async with serve_app(app) as origin_url:
        with FaultProxy(origin_url) as p:
            async with aiohttp.ClientSession() as s:
                for _ in range(2):
                    async with s.get(p.url + "/stream") as r:
                        assert await r.read() == b"0,1,2,3,4,5,6,7,8,9,"
                    async with s.post(p.url + "/echo", json={"model_id": "m"}) as r:
                        assert (await r.json())["got"] == '{"model_id": "m"}'
            assert p.snapshot().connections == 1


def test_upstream_down_gives_502(tmp_path: Path) -> None:
    from tests.reliability.origin import free_port

    with FaultProxy(f"http://127.0.0.1:{free_port()}") as p:
        rc, _, hdr = curl_get(p.url + "/x", tmp_path)
        assert rc == 0 and " 502 " in hdr.splitlines()[0]


def test_command_line(origin: NginxOrigin, data: bytes, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.faultproxy",
            "--upstream",
            origin.url,
            "--rate",
            "1",
            "--seed",
            "1",
            "--kinds",
            "status_429",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:")
        _, _, hdr = curl_get(url + "/f.bin", tmp_path)
        assert " 429 " in hdr.splitlines()[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    summary = json.loads(err.decode().strip().splitlines()[-1])
    assert summary["requests"] == 1 and summary["faults"] == {"status_429": 1}
