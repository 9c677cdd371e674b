"""A network namespace joined to the host by a veth pair, with a ``tc tbf`` bandwidth cap.

This kernel has no ``netem``, so latency and loss come from the fault proxy; what a
namespace adds is a real bandwidth limit on a real link: a server started inside it
(``ns.popen([...])``, listening on ``ns.addr``) is reached from the host at ``ns.addr``
through a token bucket filter on both ends of the link.

Needs root (``ip netns``, ``tc``); ``require_root()`` skips a test with a clear message
otherwise. Everything created is removed on exit, even after a failure, and processes
started inside are killed first. Only addresses inside the namespace's private /30 are
ever used.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Any

_counter = itertools.count()


def require_root() -> None:
    """Skip the calling test, saying why, when not root or when ip/tc are missing."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns, tc); run the suite as root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: run ./scripts/setup (iproute2)")


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")


class NetNS:
    """``with NetNS(rate="20mbit") as ns: ns.popen([...]); url = f"http://{ns.addr}:PORT"``.

    ``rate`` is a tc rate ("8mbit", "500kbit") applied in both directions, or None for
    an uncapped link. ``ns.addr`` is the namespace's address, ``ns.host_addr`` the
    host's end of the link.
    """

    def __init__(self, rate: str | None = "20mbit", *, burst: str = "32kb") -> None:
        n = next(_counter)
        tag = f"{os.getpid() % 100000}{n}"
        self.name = f"accel-{tag}"
        self.host_if = f"vh{tag}"[:15]
        self.ns_if = f"vn{tag}"[:15]
        # A /30 in 10.213.0.0/16 picked from pid and counter: parallel test runs differ.
        block = (os.getpid() * 7 + n * 4) % 16384
        a, b = 213, block * 4
        self.host_addr = f"10.{a}.{b // 256}.{b % 256 + 1}"
        self.addr = f"10.{a}.{b // 256}.{b % 256 + 2}"
        self.rate = rate
        self.burst = burst
        self._procs: list[subprocess.Popen[Any]] = []
        self._created = False

    def __enter__(self) -> NetNS:
        try:
            _run("ip", "netns", "add", self.name)
            self._created = True
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            ns = ("ip", "netns", "exec", self.name)
            _run(*ns, "ip", "addr", "add", f"{self.addr}/30", "dev", self.ns_if)
            _run(*ns, "ip", "link", "set", self.ns_if, "up")
            _run(*ns, "ip", "link", "set", "lo", "up")
            if self.rate:
                tbf = ("root", "tbf", "rate", self.rate, "burst", self.burst, "latency", "400ms")
                _run("tc", "qdisc", "add", "dev", self.host_if, *tbf)
                _run(*ns, "tc", "qdisc", "add", "dev", self.ns_if, *tbf)
        except BaseException:
            self.close()
            raise
        return self

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace; it is killed when the namespace closes."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside the namespace to completion."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=False, **kwargs)

    def close(self) -> None:
        """Kill what runs inside, delete the link and the namespace."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        if self._created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
            self._created = False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
