"""Per-node timelines of the 5-node netns pre-seed, measured and simulated (issue 21).

The calibration's last node is ready later in the netns test than in the simulation;
this says where the real nodes wait. ``python bench/fleet/timeline.py run`` (root)
runs the fleet of ``tests/support/fleet.py`` (the same hub, node daemons, installs and
links as ``tests/reliability/test_fleet_peers.py``) with every process traced; ``sim``
runs the simulation with the calibration's parameters and traces it the same way;
``report DIR`` sets them side by side.

What is traced (monkeypatched from ``sitecustomize`` in each install and node daemon,
nothing in accel changes; ``time.monotonic`` is one clock for every namespace):

- an install: its interpreter up, each file's download start and end, the probe,
  every ``?have`` round (and what each peer then holds), every call of ``assign`` and
  its answer, every chunk's request, first byte and end (source, bytes), every
  checkpoint written, the SHA256 finish, the process's exit;
- a node daemon: every ``?have`` it answers (blocks held) and every range it sends;
- the driver: each link's bytes (the host ends' counters) every 20 ms.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20

# --- the hooks (in the traced processes) ---------------------------------------------
_out: Any = None
_lock = threading.Lock()


def _log(ev: str, **kw: Any) -> None:
    line = json.dumps({"t": time.monotonic(), "ev": ev, **kw})
    with _lock:
        _out.write(line + "\n")
        _out.flush()


def _arg(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def install_hooks() -> None:
    """Trace this process if it is an ``accel install`` or ``accel node`` of the fleet
    (``FLEET_TRACE`` names the directory); any other process (a worker, the hub) is
    left alone."""
    global _out
    where = os.environ.get("FLEET_TRACE")
    argv = list(getattr(sys, "orig_argv", []))
    if not where or "accel" not in argv:
        return
    rest = argv[argv.index("accel") + 1 :]
    role = rest[0] if rest else ""
    if role not in ("install", "node"):
        return
    node = _arg(rest, "--node-id") or "alone"
    _out = open(Path(where) / f"{role}-{node}-{os.getpid()}.jsonl", "a")  # noqa: SIM115
    _log("start", role=role, node=node)
    atexit.register(_at_exit)
    if role == "install":
        _hook_install()
        if os.environ.get("FLEET_TRACE_STACKS"):
            threading.Thread(target=_stacks, args=(float(os.environ["FLEET_TRACE_STACKS"]),),
                             daemon=True).start()  # fmt: skip
    else:
        _hook_node()


def _at_exit() -> None:
    """The exit, with this process's CPU and its waited-for children's (the fetch
    workers: the host model's CPU figures count only the install process itself)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    _log("exit", cpu_self=me.ru_utime + me.ru_stime, cpu_children=kids.ru_utime + kids.ru_stime)


def _stacks(seconds: float) -> None:
    """Every 50 ms for ``seconds``: where the main thread is (a poor man's profiler of
    the install's start, whose own events say only when it ends)."""
    main = threading.main_thread().ident
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = sys._current_frames().get(main or 0)
        where = []
        while frame is not None and len(where) < 40:
            code = frame.f_code
            where.append(f"{Path(code.co_filename).name}:{frame.f_lineno}:{code.co_name}")
            frame = frame.f_back
        _log("stack", where=where)
        time.sleep(0.05)


def _hook_install() -> None:
    import accel.fetch.drive as drive
    import accel.fetch.recorder as recorder
    import accel.fetch.supervisor as sup
    import accel.manager.install as minstall

    fd_cls = sup.FileDownload
    run, probe, finish = fd_cls._run, fd_cls._probe, fd_cls._finish
    run_chunk, ask, progress = fd_cls._run_chunk, fd_cls._ask_haves, fd_cls._on_progress
    real_assign, save = drive.assign, recorder.ChunkRecorder._save
    syncfs = minstall.sync_filesystem

    def t_syncfs(path: Any) -> None:
        _log("syncfs_start")
        syncfs(path)
        _log("syncfs_end")

    seen: set[tuple[int, int]] = set()

    def name(self: Any) -> str:
        return str(self.dest.name)

    def src_of(self: Any, i: int) -> str:
        s = self.policy.sources[i]
        return "hub" if s.last_resort else s.url.split("//", 1)[1].split("/", 1)[0]

    async def t_run(self: Any) -> Any:
        _log("file_start", file=name(self))
        try:
            return await run(self)
        finally:
            _log("file_end", file=name(self))

    async def t_probe(self: Any, start: int, length: int) -> Any:
        _log("probe_start", file=name(self), start=start, length=length)
        got = await probe(self, start, length)
        _log("probe_end", file=name(self))
        return got

    async def t_finish(self: Any) -> Any:
        _log("finish_start", file=name(self))
        got = await finish(self)
        _log("finish_end", file=name(self))
        return got

    async def t_run_chunk(self: Any, chunk: Any, handle: Any, src: int = 0) -> None:
        f = name(self)
        _log("req", file=f, chunk=chunk.id, start=chunk.start, end=chunk.end, src=src_of(self, src))
        err = ""
        try:
            await run_chunk(self, chunk, handle, src)
        except BaseException as exc:
            err = type(exc).__name__
            raise
        finally:
            _log("req_end", file=f, chunk=chunk.id, start=chunk.start, end=chunk.end,
                 src=src_of(self, src), err=err)  # fmt: skip

    def t_progress(self: Any, old: int, new: int) -> None:
        for cid, h in list(self.handles.items()):
            if h.position > h.task.start and (id(self), cid) not in seen:
                seen.add((id(self), cid))
                _log("first_byte", file=name(self), chunk=cid, start=h.task.start)
        progress(self, old, new)

    async def t_ask(self: Any) -> None:
        _log("have_ask", file=name(self))
        await ask(self)
        held = {
            src_of(self, i): (None if s.have is None else s.have.bits)
            for i, s in enumerate(self.policy.sources)
            if s.peer
        }
        _log("have_got", file=name(self), held={k: _hex(v) for k, v in held.items()})

    def t_assign(policy: Any, pending: Any, **kw: Any) -> Any:
        got = real_assign(policy, pending, **kw)
        src = None
        if got is not None:
            s = policy.sources[got.source]
            src = "hub" if s.last_resort else s.url.split("//", 1)[1].split("/", 1)[0]
        _log("assign", pending=len(pending), got=None if got is None else [src, got.start, got.end])
        return got

    def t_save(self: Any, value: Any, number: int) -> None:
        save(self, value, number)
        _log("checkpoint", file=self.dest.name, chunks=[[c.start, c.end] for c in value.chunks])

    fd_cls._run = t_run  # type: ignore[method-assign]
    fd_cls._probe = t_probe  # type: ignore[method-assign]
    fd_cls._finish = t_finish  # type: ignore[method-assign]
    fd_cls._run_chunk = t_run_chunk  # type: ignore[method-assign]
    fd_cls._on_progress = t_progress  # type: ignore[method-assign]
    fd_cls._ask_haves = t_ask  # type: ignore[method-assign]
    drive.assign = t_assign  # type: ignore[assignment]
    recorder.ChunkRecorder._save = t_save  # type: ignore[method-assign]
    minstall.sync_filesystem = t_syncfs  # type: ignore[assignment]


def _hex(bits: int | None) -> str | None:
    return None if bits is None else format(bits, "x")


def _hook_node() -> None:
    from accel.node import peerserver

    storage = peerserver.PeerServer._storage

    async def t_storage(self: Any, request: Any) -> Any:
        have = "have" in request.query
        rng = request.headers.get("Range", "")
        t0 = time.monotonic()
        status = 0
        body = None
        try:
            resp = await storage(self, request)
            status = resp.status
            if have and isinstance(getattr(resp, "body", None), bytes):
                body = json.loads(resp.body).get("have")
            return resp
        except Exception as exc:
            status = getattr(exc, "status", -1)
            raise
        finally:
            _log("serve", have=have, range=rng, status=status, t0=t0, bits=body,
                 file=request.path.rsplit("/", 1)[-1])  # fmt: skip

    peerserver.PeerServer._storage = t_storage  # type: ignore[method-assign]


# --- the driver (root): the traced netns fleet ----------------------------------------
def run_fleet(out: Path, *, nodes: int = 5, size: int = 256 * MiB, block: int = 4 * MiB,
              rate: str = "200mbit") -> dict[str, Any]:  # fmt: skip
    """The netns pre-seed of test_fleet_peers.py (an alone run, then ``nodes`` at once),
    every install and daemon traced into ``out``, the links sampled every 20 ms."""
    import tempfile

    from tests.support.fleet import fleet
    from tests.support.hub import publish_model

    out.mkdir(parents=True, exist_ok=True)
    hook = out / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('FLEET_TRACE'):\n"
        "    from bench.fleet.timeline import install_hooks\n    install_hooks()\n"
    )
    os.environ["PYTHONPATH"] = str(hook)
    figures: dict[str, Any] = {"nodes": nodes, "size": size, "block": block, "rate": rate}
    with tempfile.TemporaryDirectory(prefix="fleet-timeline-") as tmp:
        work = Path(tmp)
        root = work / "store"
        spec: dict[str, int | bytes] = {"model.bin": size, "config.json": b'{"layers": 2}\n'}
        publish_model(root, "fleet", "1", spec, block_size=block)
        with fleet(root, work, nodes, rate=rate) as f:
            links = {
                "hub": f.hub.host_if,
                **{f"node{k}": ns.host_if for k, ns in enumerate(f.nodes)},
            }
            for label, kw in (("alone", {"peers": False, "dirs": [work / "alone"]}), ("fleet", {})):
                trace = out / label
                trace.mkdir(exist_ok=True)
                os.environ["FLEET_TRACE"] = str(trace)
                samples: list[list[float]] = []
                stop = threading.Event()
                sampler = threading.Thread(target=_sample, args=(links, samples, stop))
                sampler.start()
                load = os.getloadavg()[0]
                t0 = time.monotonic()
                try:
                    run = f.preseed("fleet@1", [0] if label == "alone" else list(range(nodes)),
                                    **kw)  # type: ignore[arg-type]  # fmt: skip
                finally:
                    stop.set()
                    sampler.join()
                assert run.codes == [0] * len(run.codes), run.errors
                figures[label] = {"t0": t0, "seconds": run.seconds, "hub_bytes": run.hub_bytes,
                                  "load_before": load, "load_after": os.getloadavg()[0]}  # fmt: skip
                (trace / "links.json").write_text(
                    json.dumps({"links": list(links), "samples": samples})
                )
            os.environ.pop("FLEET_TRACE", None)
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    return figures


def _sample(links: dict[str, str], samples: list[list[float]], stop: threading.Event) -> None:
    """Every 20 ms: the hub's bytes sent, then each node's bytes received and sent."""
    paths = []
    for label, dev in links.items():
        base = f"/sys/class/net/{dev}/statistics/"
        paths.append(base + "rx_bytes")  # what the namespace sent
        if label != "hub":
            paths.append(base + "tx_bytes")  # what it received
    while not stop.is_set():
        row = [time.monotonic()]
        for p in paths:
            with open(p) as fh:
                row.append(float(fh.read()))
        samples.append(row)
        stop.wait(0.02)


# --- the simulation's timeline -------------------------------------------------------
def run_sim(out: Path, *, seed: int = 0, host_model: bool = False,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The calibration's fleet (``bench_fleet.py --calibrate``, policy ``real``) with
    every transfer's start and end recorded, written as a trace ``report`` reads."""
    import bench.bench_fleet as bf
    from bench.fleet import sim

    base: dict[str, Any] = {
        "model_bytes": 256 * MiB, "piece_bytes": 4 * MiB, "ask_retry": 0.1,
        "node_down": 200 * bf.Mbit, "node_up": 200 * bf.Mbit, "store_egress": 200 * bf.Mbit,
        "zone_size": 5, "zone_uplink": float("inf"), "start_spread": 0.0,
    }  # fmt: skip
    if host_model:
        base.update(bf.HOST_5NODE)
    base.update(extra or {})
    cfg = sim.FleetConfig(nodes=5, seed=seed, **{**base, **bf.POLICIES["real"]})
    events: list[dict[str, Any]] = []
    start, complete, handle = sim._Sim._start, sim._Sim._complete, sim._Sim._handle

    def t_start(
        self: Any, node: Any, i: int, pid: int, block: int, nbytes: float, now: float
    ) -> int:
        f = start(self, node, i, pid, block, nbytes, now)
        events.append({"t": now, "ev": "req", "node": node.nid, "flow": f, "block": block,
                       "src": "hub" if pid < 0 else f"node{pid}", "bytes": nbytes})  # fmt: skip
        return f

    def t_complete(self: Any, f: int, now: float) -> None:
        events.append({"t": now, "ev": "req_end", "node": self.f_dst[f], "flow": f,
                       "block": self.f_block[f]})  # fmt: skip
        complete(self, f, now)

    def t_handle(self: Any, kind: int, nid: int, now: float) -> None:
        if kind == sim._START:
            events.append({"t": now, "ev": "node_start", "node": nid})
        handle(self, kind, nid, now)

    sim._Sim._start, sim._Sim._complete, sim._Sim._handle = t_start, t_complete, t_handle  # type: ignore[method-assign]
    try:
        r = sim.simulate(cfg, real_order=True)
    finally:
        sim._Sim._start, sim._Sim._complete, sim._Sim._handle = start, complete, handle  # type: ignore[method-assign]
    out.mkdir(parents=True, exist_ok=True)
    summary = {"ready": r.ready.tolist(), "store_x": r.store_x, "seed": seed,
               "host_model": host_model, "extra": extra or {}}  # fmt: skip
    (out / "sim.json").write_text(json.dumps({"summary": summary, "events": events}))
    return summary


# --- the report ----------------------------------------------------------------------
def _phases_real(d: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    fig = json.loads((d.parent / "figures.json").read_text())[d.name]
    t0 = fig["t0"]
    rows = []
    for k, f in enumerate(sorted(d.glob("install-*.jsonl"))):
        evs = [json.loads(x) for x in f.open()]

        def times(ev: str, evs: list[dict[str, Any]] = evs) -> list[float]:
            return [
                e["t"] - t0
                for e in evs
                if e["ev"] == ev and e.get("file", "model.bin") == "model.bin"
            ]

        def first(ev: str) -> float:
            return min(times(ev))

        def last(ev: str) -> float:
            return max(times(ev))

        reqs = [e for e in evs if e["ev"] == "req" and e["file"] == "model.bin"]
        rows.append({
            "node": k, "first_req": first("req"), "last_byte": last("req_end"),
            "finish_start": first("finish_start"), "finish_end": first("finish_end"),
            "exit": first("exit"), "ready": fig["seconds"][k],
            "hub_reqs": sum(1 for e in reqs if e["src"] == "hub"), "reqs": len(reqs),
        })  # fmt: skip
    return rows, fig


def _phases_sim(path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    doc = json.loads(path.read_text())
    evs = doc["events"]
    rows = []
    for k in range(len(doc["summary"]["ready"])):
        mine = [e for e in evs if e["node"] == k]
        reqs = [e for e in mine if e["ev"] == "req"]
        rows.append({
            "node": k, "first_req": min(e["t"] for e in reqs),
            "last_byte": max(e["t"] for e in mine if e["ev"] == "req_end"),
            "ready": doc["summary"]["ready"][k],
            "hub_reqs": sum(1 for e in reqs if e["src"] == "hub"), "reqs": len(reqs),
        })  # fmt: skip
    return rows, doc["summary"]


def report(d: Path) -> str:
    """Per node: the start-up (to the first block's request), the download (to the last
    byte), and what follows the last byte until the install is ready."""
    sim = (d / "sim.json").exists()
    rows, _ = _phases_sim(d / "sim.json") if sim else _phases_real(d)
    out = [f"{d} ({'simulated' if sim else 'measured'})",
           "| node | to first request | download | last byte | after it: hash + publish + commit + exit | ready | hub requests |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(
            f"| {r['node']} | {r['first_req']:.2f} s | {r['last_byte'] - r['first_req']:.2f} s | "
            f"{r['last_byte']:.2f} s | {r['ready'] - r['last_byte']:.2f} s | {r['ready']:.2f} s | "
            f"{r['hub_reqs']} of {r['reqs']} |"
        )
    return "\n".join(out)


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="the traced netns fleet (root)")
    r.add_argument("out", type=Path)
    s = sub.add_parser("sim", help="the simulation's timeline, calibration parameters")
    s.add_argument("out", type=Path)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--host-model", action="store_true")
    p = sub.add_parser("report", help="a traced run's (or the sim's) timeline, summed up")
    p.add_argument("dirs", type=Path, nargs="+")
    args = ap.parse_args()
    if args.cmd == "run":
        print(json.dumps(run_fleet(args.out), indent=1))
        for label in ("alone", "fleet"):
            print(report(args.out / label))
    elif args.cmd == "sim":
        print(json.dumps(run_sim(args.out, seed=args.seed, host_model=args.host_model)))
    else:
        for d in args.dirs:
            print(report(d))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
