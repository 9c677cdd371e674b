"""The network namespace helper: a real veth link with a real ``tc tbf`` bandwidth cap."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.netns import NetNS, require_root

pytestmark = pytest.mark.root


def _serve(ns: NetNS, root: Path, port: int = 8080) -> None:
    ns.popen(
        [sys.executable, "-m", "http.server", "--bind", ns.addr, str(port), "-d", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection((ns.addr, port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _fetch_seconds(url: str, out: Path) -> float:
    t0 = time.monotonic()
    r = subprocess.run(["curl", "-sS", "-o", str(out), url], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def test_bandwidth_cap_is_enforced_and_cleaned_up(tmp_path: Path) -> None:
    require_root()
    size = 1_000_000
    (tmp_path / "f.bin").write_bytes(os.urandom(size))
    with NetNS(rate="8mbit") as ns:
        name, host_if = ns.name, ns.host_if
        assert (
            name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
        _serve(ns, tmp_path)
        secs = _fetch_seconds(f"http://{ns.addr}:8080/f.bin", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == (tmp_path / "f.bin").read_bytes()
        rate = size / secs
        # 8 Mbit/s = 1 MB/s; tbf's burst lets the first 32 kB through at once.
        assert 0.6e6 < rate < 1.3e6, f"{rate / 1e6:.2f} MB/s"
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
    assert host_if not in links


def test_uncapped_link_is_fast(tmp_path: Path) -> None:
    require_root()
    size = 4_000_000
    (tmp_path / "f.bin").write_bytes(os.urandom(size))
    with NetNS(rate=None) as ns:
        _serve(ns, tmp_path)
        secs = _fetch_seconds(f"http://{ns.addr}:8080/f.bin", tmp_path / "out")
        assert size / secs > 4e6


async def test_engine_over_capped_link_with_faults(tmp_path: Path) -> None:
    """nginx inside a namespace behind a 16 Mbit/s tbf link, the fault proxy in front at
    30%: every download completes verified, and no faster than the link allows."""
    require_root()
    from accel.fetch import Engine
    from tests.reliability.chaos import BLOCK, expected_for
    from tests.reliability.origin import NginxOrigin
    from tests.support.faultproxy import FaultProxy

    size = 3 * 1024 * 1024
    data = os.urandom(size)
    (tmp_path / "f.bin").write_bytes(data)
    with NetNS(rate="16mbit") as ns:
        launcher = ["ip", "netns", "exec", ns.name]
        with (
            NginxOrigin(tmp_path, host=ns.addr, launcher=launcher) as origin,
            FaultProxy(origin.url, fault_rate=0.3, seed=2, random_stall_s=0.5) as proxy,
        ):
            async with Engine(workers=2, connections=4, backoff_base=0.05) as engine:
                t0 = time.monotonic()
                for i in range(2):
                    dest = tmp_path / f"out{i}.bin"
                    await engine.download(
                        f"{proxy.url}/f.bin", dest, expected=expected_for(data), chunk_size=BLOCK
                    )
                    assert dest.read_bytes() == data
                elapsed = time.monotonic() - t0
            assert sum(proxy.faults.values()) > 0
    # 2 x 3 MiB over 2 MB/s cannot take less than ~3 s, however many connections.
    assert elapsed >= 2 * size / 2.3e6, elapsed
