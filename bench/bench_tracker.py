"""The tracker's shared table under load: announces/s and asks/s with their p99, against
a real ``accel serve`` over SQLite (the default) or PostgreSQL (``--db postgresql``,
a real one started by tests/support/postgres.py), with ``--workers N``.

The load client is wrk (C, with a Lua script building each request), so the client
costs little of this machine's two cores. Each phase runs ``--duration`` s over
``--connections`` keep-alive connections:

1. fill: every one of ``--nodes`` nodes announces (node ``n{i}`` in zone ``z{i % 10}``,
   holding ``m@1`` at a completeness by ``i`` (a tenth at 0) and ``m{i % 50}@1`` whole);
2. announce: heartbeats of random nodes (the steady state: 10,000 nodes at the default
   TTL of 30 s announce 1,000 times a second);
3. ask: ``GET /api/models/m/versions/1/peers?zone=&k=10&node_id=`` from random nodes,
   the version every node holds (the most holders an ask can have);
4. mixed: both at once, on half the connections each.

Run it nice'd: ``nice -n 19 ionice -c 3 python bench/bench_tracker.py --db sqlite``.
Prints one JSON line per phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.hub import publish_model, running_hub  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402

FLEET = "bench-fleet"

_COMMON = r"""
local nodes = tonumber(os.getenv("NODES"))
local mode = os.getenv("MODE")
local auth = "Bearer " .. os.getenv("FLEET")
local seq = tonumber(os.getenv("START") or "0")
math.randomseed(os.time() + seq)
local function announce(i)
  local complete = (i % 10 == 0) and 0 or ((i % 7) + 1) / 8
  local body = string.format(
    '{"node_id":"n%d","url":"http://10.%d.%d.%d:8700","zone":"z%d","versions":' ..
    '[{"model_id":"m","version":"1","complete":%s},' ..
    '{"model_id":"m%d","version":"1","complete":1.0}]}',
    i, math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256, i % 10, tostring(complete), i % 50)
  return wrk.format("POST", "/api/peers/announce",
    {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end
local function ask(i)
  return wrk.format("GET", string.format(
    "/api/models/m/versions/1/peers?zone=z%d&k=10&node_id=n%d", i % 10, i),
    {["Authorization"] = auth})
end
request = function()
  if mode == "fill" then
    local i = seq % nodes
    seq = seq + 1
    return announce(i)
  elseif mode == "announce" then
    return announce(math.random(0, nodes - 1))
  else
    return ask(math.random(0, nodes - 1))
  end
end
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"errors":%d,"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f}\n',
    summary.requests, summary.duration / 1e6, bad,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def _wrk_cmd(connections: int, seconds: float, script: str, url: str) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
            "-s", script, url]  # fmt: skip


def _wrk(url: str, mode: str, *, nodes: int, seconds: float, connections: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_COMMON)
        script = f.name
    try:
        env = dict(os.environ, NODES=str(nodes), MODE=mode, FLEET=FLEET)
        out = subprocess.run(
            _wrk_cmd(connections, seconds, script, url),
            capture_output=True,
            text=True,
            env=env,
            timeout=seconds + 60,
            check=True,
        )
    finally:
        os.unlink(script)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result["per_s"] = round(result["requests"] / result["seconds"], 1)
    return result


def _mixed(url: str, *, nodes: int, seconds: float, connections: int) -> dict[str, Any]:
    """Announces and asks at once, each on half the connections (two wrk processes)."""
    half = max(1, connections // 2)
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for mode in ("announce", "ask"):
            script = Path(tmp) / f"{mode}.lua"
            script.write_text(_COMMON)
            env = dict(os.environ, NODES=str(nodes), MODE=mode, FLEET=FLEET)
            procs.append(
                subprocess.Popen(
                    _wrk_cmd(half, seconds, str(script), url),
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        out: dict[str, Any] = {}
        for mode, proc in zip(("announce", "ask"), procs, strict=True):
            stdout, _ = proc.communicate(timeout=seconds + 60)
            line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
            r = json.loads(line[len("RESULT ") :])
            r["per_s"] = round(r["requests"] / r["seconds"], 1)
            out[mode] = r
    return out


def _nodes_listed(db: Path | str) -> int:
    """Live nodes in the shared table, read from the database itself."""
    if isinstance(db, Path):
        import sqlite3

        with contextlib.closing(sqlite3.connect(db)) as conn:
            sql = "SELECT count(DISTINCT node_id) FROM tracker_peers WHERE expires_at > ?"
            return int(conn.execute(sql, (time.time(),)).fetchone()[0])
    import psycopg

    with psycopg.connect(db) as pg:
        sql = "SELECT count(DISTINCT node_id) FROM accel_peers WHERE expires_at > now()"
        row = pg.execute(sql).fetchone()
        return int(row[0]) if row else 0


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) so far of ``pids`` and all their descendants."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


@contextlib.contextmanager
def _usage_db(kind: str) -> Iterator[tuple[list[str], list[int]]]:
    """The hub's --usage-db arguments and the database's pids (to count its CPU)."""
    if kind == "sqlite":
        yield [], []
        return
    with running_postgres() as pg:
        assert pg.proc is not None
        yield ["--usage-db", pg.create_database()], [pg.proc.pid]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="accel-bench-tracker-") as tmp:
        root = Path(tmp) / "store"
        publish_model(root, "m", "1", {"w.bin": 1000})
        with _usage_db(args.db) as (db_args, db_pids):
            extra = [*db_args, "--peer-token", FLEET, "--workers", str(args.workers)]
            with running_hub(root, extra_args=extra) as hub:
                run = {"db": args.db, "workers": args.workers, "nodes": args.nodes,
                       "connections": args.connections}  # fmt: skip
                fill_s = max(args.duration, 1.0)
                for phase in ("fill", "announce", "ask"):
                    hub0, db0 = _cpu_s([hub.proc.pid]), _cpu_s(db_pids)
                    r = _wrk(
                        hub.url,
                        phase,
                        nodes=args.nodes,
                        seconds=fill_s if phase == "fill" else args.duration,
                        connections=args.connections,
                    )
                    r["hub_cpu_ms_per_req"] = round(
                        (_cpu_s([hub.proc.pid]) - hub0) * 1000 / max(1, r["requests"]), 3
                    )
                    r["db_cpu_ms_per_req"] = round(
                        (_cpu_s(db_pids) - db0) * 1000 / max(1, r["requests"]), 3
                    )
                    print(json.dumps({**run, "phase": phase, **r}), flush=True)
                mixed = _mixed(
                    hub.url, nodes=args.nodes, seconds=args.duration, connections=args.connections
                )
                for mode, r in mixed.items():
                    print(json.dumps({**run, "phase": f"mixed-{mode}", **r}), flush=True)
                nodes = _nodes_listed(root / "usage.sqlite3" if not db_args else db_args[1])
                print(json.dumps({**run, "phase": "after", "nodes_in_table": nodes}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
