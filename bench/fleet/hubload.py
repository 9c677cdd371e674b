"""The tracker's request rate on the real hub, beside what the simulated fleet needs.

Starts ``accel serve --peer-token T`` over a one-model store, fills its tracker with
10,000 announced nodes (40 zones, half of them holding something), then drives it with
``wrk`` and a Lua script that makes every request a different node: announces only,
asks (``GET .../peers?zone=&k=10&node_id=``) only, and the two alternated. The hub runs
as one process (the tracker's table is per process), both it and wrk under ``nice``.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import textwrap
import urllib.request
from pathlib import Path

__all__ = ["measure"]

TOKEN = "fleet-bench-token"
MODEL = "fleet-model"
NODES = 10_000
ZONES = 40

_LUA = textwrap.dedent(
    """
    local n = 0
    local N = %(nodes)d
    local mode = "mixed"
    local auth = "Bearer %(token)s"
    init = function(args)
      mode = args[1] or "mixed"
      n = math.random(0, N - 1)
    end
    request = function()
      n = n + 1
      local id = n %% N
      if mode == "announce" or (mode == "mixed" and n %% 2 == 0) then
        local complete = (id %% 2 == 0) and 0 or ((id %% 97) / 100.0 + 0.01)
        local body = string.format(
          '{"node_id":"n%%d","url":"http://10.%%d.%%d.%%d:7071","zone":"z%%d",' ..
          '"versions":[{"model_id":"%(model)s","version":"1","complete":%%.2f}]}',
          id, id %% 250, math.floor(id / 250) %% 250, id %% 7 + 1, id %% %(zones)d, complete)
        return wrk.format("POST", "/api/peers/announce",
          {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
      end
      return wrk.format("GET", string.format(
        "/api/models/%(model)s/versions/1/peers?zone=z%%d&k=10&node_id=n%%d", id %% %(zones)d, id),
        {["Authorization"] = auth})
    end
    """
)


def _lua(nodes: int) -> str:
    return _LUA % {"nodes": nodes, "token": TOKEN, "model": MODEL, "zones": ZONES}


def _wrk(url: str, script: Path, mode: str, duration: int) -> tuple[float, float, str]:
    out = subprocess.run(
        ["nice", "-n", "19", "wrk", "-t1", "-c32", f"-d{duration}s", "--latency",
         "-s", str(script), url, "--", mode],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m is not None, out
    p = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p is not None, out
    p99 = float(p.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p.group(2)]
    errors = ""
    if "Non-2xx" in out or "Socket errors" in out:
        errors = " ".join(
            line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket" in line
        )
    return float(m.group(1)), p99, errors


def measure(duration: int = 10, tables: tuple[int, ...] = (1_000, NODES)) -> str:
    """Run the three loads on a tracker of each size in ``tables``; a markdown table of
    req/s and p99 per load."""
    from tests.support.hub import publish_model

    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="accel-bench-fleet-") as tmp:
        root = Path(tmp) / "store"
        publish_model(root, MODEL, "1", {"model.bin": 1000})
        for nodes in tables:
            script = Path(tmp) / f"tracker-{nodes}.lua"
            script.write_text(_lua(nodes))
            rows += _one_table(root, script, nodes, duration)
    load_after = os.getloadavg()[0]
    lines = [
        "Real hub (`accel serve --peer-token T`, one process), N nodes announced in its "
        f"tracker ({ZONES} zones, half holding part of the version), `wrk -t1 -c32 "
        f"-d{duration}s`, every request a different node id; load {load_before:.1f} "
        f"before, {load_after:.1f} after:",
        "",
        "| nodes in the tracker | load | req/s | p99 | errors |",
        "|---|---|---|---|---|",
    ]
    names = {
        "announce": "`POST /api/peers/announce`",
        "peers": "`GET .../versions/1/peers?k=10`",
        "mixed": "both, alternated",
    }
    for nodes, mode, rps, p99, errors in rows:
        lines.append(
            f"| {nodes:,} | {names[mode]} | {rps:.0f} | {p99:.1f} ms | {errors or 'none'} |"
        )
    return "\n".join(lines)


def _one_table(
    root: Path, script: Path, nodes: int, duration: int
) -> list[tuple[int, str, float, float, str]]:
    from tests.support.hub import running_hub

    rows = []
    with running_hub(root, extra_args=["--peer-token", TOKEN]) as hub:
        # the table first: every node announced (wrk's node ids run on from a random
        # start, so any `nodes` requests in a row cover them all: at >= 1,500/s, this)
        _wrk(hub.url, script, "announce", max(3, math.ceil(nodes / 1500)))
        ask = urllib.request.Request(
            f"{hub.url}/api/models/{MODEL}/versions/1/peers?zone=z1&k=10&node_id=n1",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(ask) as r:
            body = r.read()
        assert b'"peers"' in body and body.count(b"node_id") == 10, body[:300]
        for mode in ("announce", "peers", "mixed"):
            rps, p99, errors = _wrk(hub.url, script, mode, duration)
            rows.append((nodes, mode, rps, p99, errors))
    return rows
