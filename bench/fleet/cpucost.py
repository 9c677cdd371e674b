"""What the real processes of the 5-node netns fleet spend in CPU: the host model's
parameters (:class:`bench.fleet.config.FleetConfig` ``cpu_*``), measured, not guessed.

Runs the fleet of ``tests/support/fleet.py`` (a hub and N nodes, each in its own
network namespace, ``tc tbf`` at ``--rate``, or uncapped), pre-seeds one model on one
node alone and then on all N at once, as ``tests/reliability/test_fleet_peers.py``
does, and samples every process's CPU time (``/proc/PID/stat`` utime + stime, every
50 ms; a process's last 50 ms before it exits can be missed) by role: the hub
(``accel serve``), the node daemons (``accel node --serve-peers``, what serves peers)
and the installs (``accel install``), each with its child processes (an install's
fetch workers: counted since branch fleet10k, before which the install figures were
its main process alone). Needs root, ip, tc::

    python bench/bench_fleet.py --cpu [--rate 200mbit|none] [--cpu-nodes 5]

Per GiB: an install's CPU over the bytes it received (its start-up included: the
``tiny`` pre-seed of a 1 MiB model gives that start-up alone), the hub's over what it
sent, the daemons' over what the peers sent (N x model - what the hub sent).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.fleet import HUB_PORT, PEER_PORT, fleet
from tests.support.hub import publish_model

__all__ = ["measure_cpu"]

MiB = 1 << 20
GiB = 1 << 30
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _parents() -> dict[int, int]:
    """Every process's parent (pid -> ppid), from /proc."""
    out: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d.name)] = int(fields[1])
    return out


def _role(args: Any) -> str:
    argv = list(args)
    for role in ("install", "serve", "node"):
        if role in argv:
            return role
    return "other"


class _Sampler:
    """The largest CPU time seen of every process started in the given namespaces."""

    def __init__(self, spaces: list[Any]) -> None:
        self.spaces = spaces
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        roles: dict[int, str] = {}
        for ns in self.spaces:
            for proc in list(ns._procs):  # the namespace's own record of what it started
                roles[proc.pid] = _role(proc.args)
        # and their children, under the parent's role: an install's fetch workers are
        # processes of their own (pool.py), which do its receiving, blake3 and writes
        for pid, ppid in _parents().items():
            if ppid in roles and pid not in roles:
                roles[pid] = roles[ppid]
        for pid, role in roles.items():
            cpu = _cpu_s(pid)
            if cpu is not None:
                self.seen[pid] = (role, cpu)

    def by_role(self) -> dict[str, float]:
        self.sample()
        out: dict[str, float] = {}
        for role, cpu in self.seen.values():
            out[role] = out.get(role, 0.0) + cpu
        return out

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


#: a TCP connect every 0.2 s (this machine has no ping): SYN and SYN-ACK queue behind
#: the same ``tbf`` as the data, so its time is the loaded round trip
_PROBE = """
import socket, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
while True:
    t0 = time.perf_counter()
    try:
        socket.create_connection((addr, port), 5).close()
        print(f"time={(time.perf_counter() - t0) * 1000:.3f} ms", flush=True)
    except OSError:
        pass
    time.sleep(0.2)
"""


def _pinger(ns: Any, addr: str, port: int) -> subprocess.Popen[str]:
    """Round trips from namespace ``ns`` to ``addr:port`` while a phase runs."""
    argv = ["ip", "netns", "exec", ns.name, sys.executable, "-c", _PROBE, addr, str(port)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _rtts(proc: subprocess.Popen[str]) -> dict[str, float]:
    proc.terminate()
    text, _ = proc.communicate(timeout=10)
    ms = sorted(float(x) for x in re.findall(r"time=([0-9.]+) ms", text))
    if not ms:
        return {}
    return {"n": len(ms), "p50_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * (len(ms) - 1))],
            "max_ms": ms[-1]}  # fmt: skip


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in after}


def measure_cpu(nodes: int = 5, size: int = 256 * MiB, block: int = 4 * MiB,
                rate: str | None = "200mbit") -> dict[str, Any]:  # fmt: skip
    """The figures above for one fleet (a dict, also printed as JSON)."""
    with tempfile.TemporaryDirectory(prefix="fleetcpu-") as tmp:
        work = Path(tmp)
        root = work / "store"
        publish_model(root, "fleet", "1", {"model.bin": size}, block_size=block)
        publish_model(root, "tiny", "1", {"model.bin": MiB}, block_size=MiB)
        out: dict[str, Any] = {"nodes": nodes, "size_mib": size / MiB, "block_mib": block / MiB,
                               "rate": rate or "none", "load1_before": os.getloadavg()[0]}  # fmt: skip
        with fleet(root, work, nodes, rate=rate or "") as f, _Sampler([f.hub, *f.nodes]) as s:
            for name, ref, who, peers in (
                ("tiny", "tiny@1", [0], False),
                ("alone", "fleet@1", [0], False),
                ("fleet", "fleet@1", list(range(nodes)), True),
            ):
                before = s.by_role()
                # node 0 to the hub while it installs alone; node 0 to node 1 in the fleet
                to_peer = peers and nodes > 1
                ping = _pinger(f.nodes[0], f.nodes[1].addr if to_peer else f.hub.addr,
                               PEER_PORT if to_peer else HUB_PORT)  # fmt: skip
                t0 = time.monotonic()
                dirs = [work / name] if name != "fleet" else None
                run = f.preseed(ref, who, peers=peers, dirs=dirs)
                wall = time.monotonic() - t0
                rtt = _rtts(ping)
                assert run.codes == [0] * len(who), run.errors
                time.sleep(0.1)  # let the last samples of the daemons' serving land
                cpu = _delta(s.by_role(), before)
                out[name] = {"last_s": round(run.last, 2), "wall_s": round(wall, 2),
                             "hub_bytes": run.hub_bytes, "cpu_s": cpu, "rtt": rtt}  # fmt: skip
        fl = out["fleet"]
        got = nodes * size
        peer_bytes = max(1, got - fl["hub_bytes"])
        out["per_gib"] = {
            "install": round(fl["cpu_s"].get("install", 0.0) / (got / GiB), 2),
            "hub_send": round(fl["cpu_s"].get("serve", 0.0) / (fl["hub_bytes"] / GiB), 2),
            "peer_send": round(fl["cpu_s"].get("node", 0.0) / (peer_bytes / GiB), 2),
            "alone_install": round(out["alone"]["cpu_s"].get("install", 0.0) / (size / GiB), 2),
        }
        out["startup_cpu_s"] = out["tiny"]["cpu_s"].get("install", 0.0)
        # what the host model's cpu_recv is: past the start-ups, which it charges apart
        past = fl["cpu_s"].get("install", 0.0) - nodes * out["startup_cpu_s"]
        out["per_gib"]["install_past_startup"] = round(past / (got / GiB), 2)
        out["load1_after"] = os.getloadavg()[0]
    print(json.dumps(out))
    return out
