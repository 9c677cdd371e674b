"""Clients that hang up mid-body: the hub logs nothing and keeps serving.

Fault injected: the client closes its connection while the hub is still sending a
``/storage`` body (FIN or RST, during a whole-file answer or a range, from a raw socket,
from curl cut off by ``-m``, and from ``aria2c -x16``, which drops the connections whose
segment another connection finished). Before the fix, uvloop's closed socket raised
``ValueError: negative file descriptor`` from the uncork in ``storage.py`` and the hub
logged "Error handling request" with a traceback for each of them.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.hub import RunningHub, expected_bytes, publish_model, running_hub

MiB = 1024 * 1024
SIZE = 32 * MiB + 777  # far more than the socket buffers hold, so the body is in flight
PATH = "/storage/models/big/1.0/big.bin"


@pytest.fixture(scope="module")
def big_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    root = tmp_path_factory.mktemp("hangup") / "store"
    publish_model(root, "big", "1.0", {"big.bin": SIZE}, block_size=4 * MiB)
    with running_hub(root) as h:
        yield h


def hang_up(port: int, request_headers: str, read: int, *, reset: bool) -> None:
    """Ask for the big file, read ``read`` bytes of the answer, then close (FIN or RST)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {PATH} HTTP/1.1\r\nHost: hub\r\n{request_headers}\r\n".encode())
    got = 0
    while got < read:
        chunk = s.recv(min(65536, read - got))
        assert chunk, "the hub closed before sending what was asked"
        got += len(chunk)
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def wait_for_no_client_connections(hub: RunningHub, deadline_s: float = 20.0) -> int:
    """Poll until the hub holds no connection but its listener; returns how many remain."""
    proc = psutil.Process(hub.proc.pid)
    deadline = time.monotonic() + deadline_s
    while True:
        left = [c for c in proc.net_connections("tcp") if c.status != psutil.CONN_LISTEN]
        if not left or time.monotonic() > deadline:
            return len(left)
        time.sleep(0.05)


def assert_log_clean(hub: RunningHub) -> None:
    log = hub.log()
    assert "Traceback" not in log, log[-4000:]
    assert "Error handling request" not in log, log[-4000:]
    # Nothing at all reached the hub's stderr (Python prints WARNING and above there).
    assert log.strip() == "", log[-4000:]


def assert_still_serving(hub: RunningHub) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-r", "1000-1999", "-o", "-", hub.url + PATH],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    assert out.stdout == expected_bytes("big.bin", SIZE)[1000:2000]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize(
    ("headers", "read"),
    [("", 100_000), ("", 3 * MiB), ("Range: bytes=1000-30000000\r\n", 2 * MiB)],
    ids=["whole-early", "whole-late", "range"],
)
def test_raw_client_hanging_up_mid_body_logs_nothing(
    big_hub: RunningHub, headers: str, read: int, reset: bool
) -> None:
    for _ in range(3):
        hang_up(big_hub.port, headers, read, reset=reset)
    assert wait_for_no_client_connections(big_hub) == 0
    assert_log_clean(big_hub)
    assert_still_serving(big_hub)


def test_curl_cut_off_mid_body_logs_nothing(big_hub: RunningHub, tmp_path: Path) -> None:
    out = subprocess.run(
        ["curl", "-sS", "--limit-rate", "4M", "-m", "1", "-o", str(tmp_path / "part"),
         big_hub.url + PATH],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert out.returncode == 28, out.stderr  # curl's "operation timed out": it hung up
    assert 0 < (tmp_path / "part").stat().st_size < SIZE
    assert wait_for_no_client_connections(big_hub) == 0
    assert_log_clean(big_hub)
    assert_still_serving(big_hub)


def test_aria2c_x16_logs_nothing_and_gets_the_file(big_hub: RunningHub, tmp_path: Path) -> None:
    for i in range(3):
        subprocess.run(
            ["aria2c", "-x16", "-s16", "-k1M", "--file-allocation=none",
             "--console-log-level=warn", "--summary-interval=0", "--allow-overwrite=true",
             "-d", str(tmp_path), "-o", f"big-{i}.bin", big_hub.url + PATH],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        got = hashlib.sha256((tmp_path / f"big-{i}.bin").read_bytes()).hexdigest()
        assert got == hashlib.sha256(expected_bytes("big.bin", SIZE)).hexdigest()
    assert wait_for_no_client_connections(big_hub) == 0
    assert_log_clean(big_hub)
    assert_still_serving(big_hub)
