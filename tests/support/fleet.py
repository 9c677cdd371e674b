"""A hub and N nodes, each in its own network namespace with a ``tc tbf`` cap, pre-seeding
one model at once: the proof of "peers" (issue 20), and what the fleet simulation is
calibrated against.

- The hub (``accel serve --peer-token T``) runs in its own namespace: its link's cap is
  what it can send; what it sent is the host end's receive counter of its veth.
- Each node runs ``accel node --serve-peers`` (its peer listener on ``ADDR:8701``, the
  fleet token, announces to the hub) in its namespace, and ``accel install`` over the
  same models dir with ``--peer-token`` and every other node as ``--peer``: the node
  daemon serves what the install has verified so far (it reads the registry and the
  checkpoint), the install reads from the other nodes and from the hub.
- Namespaces reach each other through the host (IP forwarding on while the fleet runs,
  restored after; a default route in each namespace via its host end).

Needs root, ip, tc. Everything is removed on exit (namespaces kill what runs in them).
Loopback and the namespaces' private /30s only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.netns import NetNS

__all__ = ["Fleet", "FleetRun", "fleet"]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fleet-secret"
HUB_PORT = 8080
PEER_PORT = 8701


@dataclass
class FleetRun:
    """One pre-seed: seconds until each node was ready, what the hub sent, exit codes."""

    seconds: list[float]
    hub_bytes: int
    codes: list[int]
    errors: list[str] = field(default_factory=list)

    @property
    def last(self) -> float:
        return max(self.seconds)


@dataclass
class Fleet:
    hub: NetNS
    nodes: list[NetNS]
    dirs: list[Path]
    root: Path

    @property
    def hub_url(self) -> str:
        return f"http://{self.hub.addr}:{HUB_PORT}"

    def peer_url(self, k: int) -> str:
        return f"http://{self.nodes[k].addr}:{PEER_PORT}"

    def hub_sent(self) -> int:
        """Bytes the hub's namespace has sent (the host end's received counter)."""
        return int(Path(f"/sys/class/net/{self.hub.host_if}/statistics/rx_bytes").read_text())

    def preseed(
        self,
        ref: str,
        nodes: Sequence[int],
        *,
        peers: bool = True,
        timeout: float = 600,
        dirs: Sequence[Path] | None = None,
    ) -> FleetRun:
        """``accel install ref`` on ``nodes`` at once (with the others as peers); each
        install's time to ready, and the hub's bytes sent meanwhile. ``dirs``: models
        dirs to install into instead of the nodes' own (a baseline run)."""
        before = self.hub_sent()
        procs: list[subprocess.Popen[str]] = []
        t0 = time.monotonic()
        for i, k in enumerate(nodes):
            where = dirs[i] if dirs is not None else self.dirs[k]
            argv = [sys.executable, "-m", "accel", "install", ref, "--models-dir",
                    str(where), "--hub", self.hub_url, "-q"]  # fmt: skip
            if peers:
                argv += ["--peer-token", TOKEN, "--node-id", f"node{k}"]
                for j in nodes:
                    if j != k:
                        argv += ["--peer", self.peer_url(j)]
            proc = self.nodes[k].popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
                cwd=REPO,
            )
            procs.append(proc)
        seconds: list[float] = [0.0] * len(procs)
        codes: list[int] = [0] * len(procs)
        errors: list[str] = []
        pending = set(range(len(procs)))
        deadline = t0 + timeout
        while pending:
            for i in list(pending):
                rc = procs[i].poll()
                if rc is not None:
                    seconds[i] = time.monotonic() - t0
                    codes[i] = rc
                    pending.discard(i)
                    if rc:
                        errors.append(procs[i].stderr.read() if procs[i].stderr else "")
            if time.monotonic() > deadline:
                for i in pending:
                    procs[i].kill()
                raise AssertionError(f"installs not ready within {timeout:g} s")
            time.sleep(0.02)
        return FleetRun(seconds, self.hub_sent() - before, codes, errors)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait_port(addr: str, port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((addr, port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} on {addr}:{port} within {timeout:g} s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def _forwarding() -> Iterator[None]:
    path = Path("/proc/sys/net/ipv4/ip_forward")
    old = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(old)


@contextlib.contextmanager
def fleet(
    root: Path, work: Path, n: int, *, rate: str, serve_peers: bool = True
) -> Iterator[Fleet]:
    """A hub over the store ``root`` and ``n`` nodes (models dirs under ``work``), each
    link capped at ``rate``; the node daemons serve peers."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_forwarding())
        hub = stack.enter_context(NetNS(rate=rate))
        nodes = [stack.enter_context(NetNS(rate=rate)) for _ in range(n)]
        for ns in (hub, *nodes):
            r = ns.run(["ip", "route", "add", "default", "via", ns.host_addr], capture_output=True)
            assert r.returncode == 0, r.stderr
        log = stack.enter_context(open(work / "hub.log", "wb"))
        hub.popen(
            [sys.executable, "-m", "accel", "serve", "--root", str(root), "--host", "0.0.0.0",
             "--port", str(HUB_PORT), "--peer-token", TOKEN, "--peer-ttl", "3"],
            stdout=subprocess.DEVNULL, stderr=log, env=_env(), cwd=REPO,
        )  # fmt: skip
        _wait_port(hub.addr, HUB_PORT, "hub")
        dirs = []
        for k, ns in enumerate(nodes):
            d = work / f"node{k}"
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
            if not serve_peers:
                continue
            nlog = stack.enter_context(open(work / f"node{k}.log", "wb"))
            ns.popen(
                [sys.executable, "-m", "accel", "node", "--models-dir", str(d),
                 "--hub", f"http://{hub.addr}:{HUB_PORT}", "--listen", "127.0.0.1:0",
                 "--no-install-missing", "--serve-peers",
                 "--peer-listen", f"0.0.0.0:{PEER_PORT}",
                 "--peer-url", f"http://{ns.addr}:{PEER_PORT}", "--peer-token", TOKEN,
                 "--node-id", f"node{k}"],
                stdout=subprocess.DEVNULL, stderr=nlog, env=_env(), cwd=REPO,
            )  # fmt: skip
        for ns in nodes if serve_peers else ():
            _wait_port(ns.addr, PEER_PORT, "peer listener")
        with urllib.request.urlopen(f"http://{hub.addr}:{HUB_PORT}/healthz", timeout=10) as r:
            assert r.status == 200
        yield Fleet(hub, nodes, dirs, root)
