"""``/storage``: Range with curl, aria2c multi-connection, validators, HEAD, traversal.

All against a real ``accel serve`` on loopback; curl and aria2c are the real clients.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.hub.conftest import SECRET
from tests.support.hub import SMALL_STORE, RunningHub, expected_bytes

SIZE = SMALL_STORE[("demo-asr", "1.0.0")]["model.bin"]
assert isinstance(SIZE, int)
DATA = expected_bytes("model.bin", SIZE)


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl; returns (status, headers of the last response, body)."""
    out = subprocess.run(
        ["curl", "-sS", "-D", "/dev/stderr", "-o", "-", *args], capture_output=True, check=True
    )
    blocks = out.stderr.decode(errors="replace").strip().split("\r\n\r\n")
    lines = blocks[-1].split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, out.stdout


@pytest.mark.parametrize(
    ("rng", "start", "end"),
    [
        ("0-0", 0, 0),
        ("0-1023", 0, 1023),
        ("1000000-2000000", 1_000_000, 2_000_000),
        ("-4096", SIZE - 4096, SIZE - 1),
        ("3000000-", 3_000_000, SIZE - 1),
        (f"{SIZE - 10}-{SIZE + 500}", SIZE - 10, SIZE - 1),
    ],
    ids=["first-byte", "first-KiB", "middle", "suffix", "open", "end-clamped"],
)
def test_curl_ranges(live: RunningHub, rng: str, start: int, end: int) -> None:
    status, headers, body = curl("-r", rng, live.file_url("demo-asr", "1.0.0", "model.bin"))
    assert status == 206
    assert headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert int(headers["content-length"]) == end - start + 1
    assert body == DATA[start : end + 1]


@pytest.mark.parametrize("rng", [f"{SIZE}-", f"{SIZE + 100}-{SIZE + 200}", "-0"])
def test_curl_past_the_end_is_416(live: RunningHub, rng: str) -> None:
    status, headers, body = curl("-r", rng, live.file_url("demo-asr", "1.0.0", "model.bin"))
    assert status == 416
    assert headers["content-range"] == f"bytes */{SIZE}"
    err = json.loads(body)["error"]
    assert err == {"code": "range_not_satisfiable", "message": err["message"], "status": 416}


def test_whole_file_headers_and_validators(live: RunningHub) -> None:
    url = live.file_url("demo-asr", "1.0.0", "model.bin")
    status, h, body = curl(url)
    assert status == 200 and body == DATA
    assert h["accept-ranges"] == "bytes" and int(h["content-length"]) == SIZE
    assert "content-encoding" not in h
    etag, lm = h["etag"], h["last-modified"]
    assert etag.startswith('"') and hashlib.sha256(DATA).hexdigest().startswith(etag.strip('"'))
    # gzip accepted by the client changes nothing (no .gz sibling games).
    s2, h2, b2 = curl("-H", "Accept-Encoding: gzip", "-r", "0-99", url)
    assert s2 == 206 and b2 == DATA[:100] and "content-encoding" not in h2
    # If-Range with our ETag or date honours the range; anything else gets the whole file.
    for validator, expect in ((etag, 206), (lm, 206), ('"stale"', 200), ("W/" + etag, 200),
                              ("Mon, 01 Jan 2001 00:00:00 GMT", 200)):  # fmt: skip
        s, _, b = curl("-H", f"If-Range: {validator}", "-r", "10-19", url)
        assert s == expect, validator
        assert b == (DATA[10:20] if expect == 206 else DATA)
    # If-Match (sent by the accelerator on every chunk) and If-None-Match.
    assert curl("-H", f"If-Match: {etag}", "-r", "0-9", url)[0] == 206
    s, _, b = curl("-H", 'If-Match: "changed"', "-r", "0-9", url)
    assert s == 412 and json.loads(b)["error"]["code"] == "precondition_failed"
    assert curl("-H", f"If-None-Match: {etag}", url)[0] == 304


def test_head(live: RunningHub) -> None:
    url = live.file_url("demo-asr", "1.0.0", "model.bin")
    status, h, body = curl("-I", url)
    assert status == 200 and int(h["content-length"]) == SIZE and h["accept-ranges"] == "bytes"
    status, h, body = curl("-I", "-r", "5-9", url)
    assert status == 206 and h["content-range"] == f"bytes 5-9/{SIZE}"
    assert int(h["content-length"]) == 5 and body.endswith(b"\r\n\r\n")  # headers only


def test_keepalive_many_ranges_on_one_connection(live: RunningHub) -> None:
    """Zero-copy responses keep HTTP framing intact: 20 ranges on one connection."""
    url = live.file_url("demo-asr", "1.0.0", "model.bin")
    args: list[str] = []
    for i in range(20):
        args += ["-r", f"{i * 100_000}-{i * 100_000 + 99_999}", url, "-o", "/dev/null"]
    # -w prints per transfer; every one must be 206 with the right size on connection reuse.
    out = subprocess.run(
        ["curl", "-sS", "-w", "%{http_code} %{size_download} %{num_connects}\n", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = [ln.split() for ln in out.stdout.splitlines()]
    assert len(lines) == 20
    assert all(ln[0] == "206" and ln[1] == "100000" for ln in lines)
    assert sum(int(ln[2]) for ln in lines) == 1  # one connection for all


def test_aria2c_multi_connection_is_byte_identical(live: RunningHub, tmp_path: Path) -> None:
    url = live.file_url("demo-asr", "1.1.0", "model.bin")
    subprocess.run(
        ["aria2c", "-x8", "-s8", "-k1M", "--file-allocation=none", "--console-log-level=warn",
         "--summary-interval=0", "-d", str(tmp_path), "-o", "model.bin", url],
        check=True, capture_output=True,
    )  # fmt: skip
    got = (tmp_path / "model.bin").read_bytes()
    assert got == live.store_path("demo-asr", "1.1.0", "model.bin").read_bytes()
    assert len(got) == SMALL_STORE[("demo-asr", "1.1.0")]["model.bin"]


def test_client_disconnect_mid_body_leaves_the_hub_healthy(live: RunningHub) -> None:
    url = live.file_url("demo-asr", "1.0.0", "model.bin")
    port = live.port
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"GET {url.split(str(port), 1)[1]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            s.recv(1000)
    status, _, body = curl("-r", "0-9", url)
    assert status == 206 and body == DATA[:10]


# --- traversal catalogue ----------------------------------------------------------------
# Every path is sent raw (curl --path-as-is) so no client normalisation hides it.
HOSTILE = [
    "/storage/models/demo-asr/1.0.0/../../../../secret.txt",
    "/storage/models/demo-asr/1.0.0/../secret.txt",
    "/storage/models/demo-asr/1.0.0/files/../secret.txt",
    "/storage/models/demo-asr/1.0.0/%2e%2e/%2e%2e/secret.txt",
    "/storage/models/demo-asr/1.0.0/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/storage/models/demo-asr/1.0.0/..%2F..%2F..%2Fsecret.txt",
    "/storage/models/demo-asr/1.0.0/%252e%252e/%252e%252e/secret.txt",
    "/storage/models/demo-asr/1.0.0/%252e%252e%252fsecret.txt",
    "/storage/models/demo-asr/1.0.0/..%5C..%5Csecret.txt",
    "/storage/models/demo-asr/1.0.0/..\\..\\secret.txt",
    "/storage/models/demo-asr/1.0.0/model.bin%00.txt",
    "/storage/models/demo-asr/1.0.0/%00",
    "/storage/models/demo-asr/1.0.0//etc/passwd",
    "/storage/models/demo-asr/1.0.0/%2Fetc%2Fpasswd",
    "/storage/models/demo-asr/1.0.0/C:%5Csecret.txt",
    "/storage/models/demo-asr/1.0.0/unlisted.bin",
    "/storage/models/demo-asr/1.0.0/leak",
    "/storage/models/demo-asr/1.0.0/sub/escape.txt",
    "/storage/models/demo-mt/1.0.0/shards/part-00.bin",  # listed, but a symlink out
    "/storage/models/trap/1.0/d/f.bin",  # listed, but its directory is a symlink out
    "/storage/models/demo-asr/%2e%2e/secret.txt",
    "/storage/models/%2e%2e/secret.txt",
    "/storage/models/demo-asr/1.0.0/./model.bin/../../secret.txt",
    "/storage/models/..%2Fsecret.txt/1.0.0/x",
    "/storage/models/demo-asr/1.0.0/sub/%2e%2e/%2e%2e/secret.txt",
    "/storage/../models/secret.txt",
    "/storage/models/demo-asr/1.0.0/%u002e%u002e/secret.txt",
    "/storage/models/demo-asr/1.0.0/%c0%ae%c0%ae/secret.txt",
    "/storage/models/demo-asr/1.0.0/" + "..%2F" * 12 + "etc/passwd",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_traversal_catalogue(live: RunningHub, path: str) -> None:
    out = subprocess.run(
        ["curl", "-sS", "--path-as-is", "-D", "/dev/stderr", "-o", "-", live.url + path],
        capture_output=True, check=False,
    )  # fmt: skip
    response = out.stdout + out.stderr
    assert SECRET not in response
    assert b"root:x:0:0" not in response
    assert str(live.root).encode() not in response and b"/tmp/" not in out.stdout
    status = int(out.stderr.split(b"\r\n", 1)[0].split()[1])
    assert status in (400, 404), (path, status)
    err = json.loads(out.stdout)["error"]
    assert err["status"] == status and err["code"] in ("bad_path", "not_found")


def test_outside_and_missing_look_the_same(live: RunningHub) -> None:
    """No existence oracle: an unlisted file on disk answers like a file that is nowhere."""
    _, _, present = curl(live.url + "/storage/models/demo-asr/1.0.0/unlisted.bin")
    _, _, absent = curl(live.url + "/storage/models/demo-asr/1.0.0/never-existed.bin")
    assert present == absent
