"""The fleet past this machine (issue 21): simulated with the real policies, against Kraken.

Runs :func:`bench.fleet.sim.simulate` (the node's SourcePolicy, the hub's Tracker and
choose_peers, a stand-in chunk order until the node's own lands) over a matrix of
fleets, each run saved to ``bench/out/fleet/NAME.json`` (a rerun skips what is saved
unless ``--force``), then writes ``bench/out/fleet.md`` and the plots
``bench/fleet_ready.png``, ``bench/fleet_store.png``, ``bench/fleet_cdf.png``.

Policies (``--policies``): ``off`` (no peers: the store only), ``engine`` (peers with the
engine's source policy as it is: every connection may go to the store, which is never
given up), ``tuned`` (one store connection per node, the store only when no peer holds
a block the node lacks, and a store that answers 64 requests at once and 503s the
rest: the levers this simulation points at).

    nice -n 19 python bench/bench_fleet.py                # the matrix, tables, plots
    nice -n 19 python bench/bench_fleet.py --calibrate    # the 5-node netns test's figures
    nice -n 19 python bench/bench_fleet.py --kraken       # Kraken's 2,600 hosts x 3 GB
    nice -n 19 python bench/bench_fleet.py --hub          # tracker req/s of the real hub
    nice -n 19 python bench/bench_fleet.py --cpu          # the netns fleet's CPU (root)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.fleet.assign import available  # noqa: E402
from bench.fleet.order import ORDERS  # noqa: E402
from bench.fleet.sim import FleetConfig, FleetResult, simulate  # noqa: E402

OUT = REPO / "bench" / "out" / "fleet"
#: the matrix's rows as bench/RESULTS.md has them, for the plots of a machine without
#: those saved runs (``--report`` draws a saved run over its row)
ROWS = REPO / "bench" / "fleet_rows.json"
GB = 10**9
MiB = 1 << 20
Mbit = 1e6 / 8

#: left out of the default matrix: an hour or more each on this machine (the engine's
#: start at 10,000 nodes; the real order's per-request scan of every pending block)
LONG = [
    (10000, 10 * GB, "engine"),
    (10000, 100 * GB, "engine"),
    (1000, 100 * GB, "engine"),
    (10000, 10 * GB, "real"),  # 42 min here on 934d368 (was ~1.5 h of assign alone)
    (10000, 100 * GB, "real"),
    (1000, 100 * GB, "real"),
    (100, 100 * GB, "real"),
]

POLICIES: dict[str, dict[str, Any]] = {
    "off": {"peers": False},
    "engine": {"peers": True},
    "tuned": {
        "peers": True,
        "store_connections": 1,
        "store_fallback": "useful",
        "store_max_clients": 64,
    },
    # the node's own source-and-block rule (accel.fetch.sources_order.assign, issue 20),
    # bitmaps asked every 0.5 s as that node does; only once accel has it
    "real": {"peers": True, "have_refresh": 0.5},
}


def _summary(name: str, r: FleetResult) -> dict[str, Any]:
    cfg = r.config
    mean_rps, peak_rps = r.tracker_rate()
    return {
        "name": name,
        "config": dataclasses.asdict(cfg),
        "store_x": r.store_x,
        "peer_x": r.peer_bytes / cfg.model_bytes,
        "discarded_x": r.discarded_bytes / cfg.model_bytes,
        "p50": r.pct(50),
        "p99": r.pct(99),
        "max": float(r.ready.max()),
        "last_ready_at": float(r.ready_at.max()),
        "ready": sorted(float(x) for x in r.ready),
        "announces": len(r.announces),
        "asks": len(r.asks),
        "have_asks": r.have_asks,
        "tracker_mean_rps": mean_rps,
        "tracker_peak_rps": peak_rps,
        "transfers": r.transfers,
        "windows": r.windows,
        "races": r.races,
        "quarantined": r.quarantined,
        "delivered_ok": bool((r.delivered == cfg.model_bytes).all()),
        "wall_s": r.wall_s,
    }


def run_one(
    name: str, cfg: FleetConfig, order: str, force: bool, policy: str = ""
) -> dict[str, Any]:
    """Simulate ``cfg`` (or read its saved run) and save the summary."""
    path = OUT / f"{name}.json"
    if path.exists() and not force:
        return dict(json.loads(path.read_text()))
    t0 = time.time()
    r = simulate(cfg, chunk_order=ORDERS[order], real_order=(policy or name).startswith("real"))
    summary = _summary(name, r)
    summary["order"] = order
    summary["policy"] = policy or name.split("-")[0]
    summary["started_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0))
    summary["load"] = os.getloadavg()[0]
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    print(_row(summary), flush=True)
    return summary


def _size_label(nbytes: int) -> str:
    return f"{nbytes / GB:g} GB" if nbytes >= GB else f"{nbytes / MiB:g} MiB"


def _row(s: dict[str, Any]) -> str:
    c = s["config"]
    return (
        f"| {c['nodes']:,} | {_size_label(c['model_bytes'])} | {s['policy']} | "
        f"{c['piece_bytes'] // MiB} MiB | {s['store_x']:.2f}x | {s['p50']:.1f} | {s['p99']:.1f} | "
        f"{s['max']:.1f} | {s['tracker_mean_rps']:.0f} / {s['tracker_peak_rps']:.0f} | "
        f"{s['wall_s']:.0f} s |"
    )


HEADER = (
    "| nodes | model | policy | piece | store egress | ready p50 s | p99 s | max s | "
    "tracker req/s mean / peak | sim wall |\n|---|---|---|---|---|---|---|---|---|---|"
)


def matrix(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for size in args.sizes:
        for n in args.nodes:
            for pol in args.policies:
                if (n, size, pol) in {tuple(x) for x in args.skip}:
                    continue
                if pol == "real" and not available():
                    print("skipped: policy real needs accel.fetch.sources_order (issue 20)")
                    continue
                tracker: Literal["hub", "index"] = "hub" if n <= 1000 else "index"
                cfg = FleetConfig(nodes=n, model_bytes=size, tracker=tracker, **POLICIES[pol])
                out.append(run_one(f"{pol}-{n}-{size // GB}GB", cfg, args.order, args.force))
    return out


#: the netns test's machine, measured (``--cpu``: bench/fleet/cpucost.py, three runs of
#: the 5-node fleet at 200 Mbit/s, 2026-12-02 18:28-18:33 UTC, load 9-20 before each,
#: every process with its child processes: an install's two fetch workers receive,
#: hash and write its bytes, and the figures of branch fleetcal, which counted the
#: install's main process alone, were a quarter of its CPU): every node and the hub
#: on one 2-core host; an install's CPU 19.5 / 19.1 / 15.6 s per GiB received past
#: its start-up, a daemon's 10.9 / 10.9 / 9.7 s per GiB served to peers, the hub's
#: 3.4 / 3.1 / 3.6 s per GiB sent, an install's start-up 0.94 / 1.11 / 1.25 CPU-s (a
#: 1 MiB model); a TCP connect from node 0 to node 1 during the fleet took 10 ms (p50,
#: fleetcal's; p90 53 ms); TCP/IPv4 with timestamps over Ethernet at MTU 1500 carries
#: 1448 payload bytes per 1514 the tbf counts
HOST_5NODE: dict[str, Any] = {
    "nodes_per_host": 0,
    "host_cores": 2.0,
    "store_on_host": True,
    "cpu_recv": 18.07,
    "cpu_peer_send": 10.51,
    "cpu_store_send": 3.37,
    "startup_cpu": 1.10,
    "wire_efficiency": 1448 / 1514,
    "request_latency": 0.010,
}

#: the same as measured on branch fleetcal (the install's main process alone): kept to
#: show what counting the fetch workers changed (``--host-model fleetcal``)
HOST_5NODE_FLEETCAL: dict[str, Any] = {
    **HOST_5NODE,
    "cpu_recv": 4.86,
    "cpu_peer_send": 4.83,
    "cpu_store_send": 1.97,
    "startup_cpu": 0.31,
}


def calibrate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Issue 20's netns proof: hub link 200 Mbit/s, 5 nodes at 200 Mbit/s, 256 MiB in
    4 MiB blake3 blocks (tests/reliability/test_fleet_peers.py); there every node is
    given the others with ``--peer``, here they find them through the tracker at once
    (a re-ask after 0.1 s)."""
    base: dict[str, Any] = {
        "model_bytes": 256 * MiB,
        "piece_bytes": 4 * MiB,
        "ask_retry": 0.1,
        "node_down": 200 * Mbit,
        "node_up": 200 * Mbit,
        "store_egress": 200 * Mbit,
        "zone_size": 5,
        "zone_uplink": math.inf,
        "start_spread": 0.0,
    }
    if args.host_model:
        base.update(HOST_5NODE if args.host_model == "measured" else HOST_5NODE_FLEETCAL)
    out = [
        run_one("calib-alone", FleetConfig(nodes=1, peers=False, **base), args.order, True, "off"),
        run_one("calib-off", FleetConfig(nodes=5, peers=False, **base), args.order, True, "off"),
    ]
    for pol in ("engine", "tuned", "real"):
        if pol == "real" and not available():
            continue
        cfg = FleetConfig(nodes=5, **{**base, **POLICIES[pol]})
        out.append(run_one(f"calib-{pol}", cfg, args.order, True, pol))
    if available():
        print(calibrate_seeds(base, args.seeds))
    return out


def calibrate_seeds(base: dict[str, Any], seeds: int) -> str:
    """The ``real`` policy's 5-node fleet over ``seeds`` seeds (each node's block order,
    the tracker's shuffle): a run's last node and hub egress vary as much as the netns
    test's do, so a distribution is what compares with the measured runs."""
    last, egress = [], []
    for seed in range(seeds):
        cfg = FleetConfig(nodes=5, seed=seed, **{**base, **POLICIES["real"]})
        r = simulate(cfg, real_order=True)
        last.append(float(r.ready.max()))
        egress.append(r.store_x)
    return (
        f"real, {seeds} seeds: last node ready mean {sum(last) / seeds:.2f} s "
        f"({min(last):.2f}-{max(last):.2f}), hub egress mean {sum(egress) / seeds:.3f}x "
        f"({min(egress):.3f}-{max(egress):.3f})"
    )


def kraken(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Kraken's benchmark: a 3 GB image to 2,600 hosts at 300 MB/s per agent (5
    origins, 5 trackers). The origins' bandwidth is not published: 5 x 300 MB/s and
    5 x 10 Gbit/s are run."""
    out = []
    for label, egress in (("5x300MBps", 5 * 300e6), ("5x10Gbit", 5 * 10e9 / 8)):
        for pol in ("off", "engine", "tuned", "real"):
            if pol == "real" and not available():
                continue
            cfg = FleetConfig(
                nodes=2600,
                model_bytes=3 * GB,
                node_down=300e6,
                node_up=300e6,
                store_egress=egress,
                zone_size=2600,
                tracker="hub",
                **POLICIES[pol],
            )
            out.append(run_one(f"{pol}-kraken-{label}", cfg, args.order, args.force))
    return out


def plots(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["config"]["model_bytes"] for r in runs})
    styles = {"off": ("tab:red", "no peers"), "engine": ("tab:blue", "peers, engine policy"),
              "tuned": ("tab:green", "peers, tuned"),
              "real": ("tab:purple", "peers, node's own order (real)")}  # fmt: skip
    for what, fname, ylabel in (
        ("ready", "fleet_ready.png", "ready time, s (p50 solid, p99 dashed)"),
        ("store", "fleet_store.png", "store egress, x model size"),
    ):
        fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.2), squeeze=False)
        for ax, size in zip(axes[0], sizes, strict=True):
            for pol, (color, label) in styles.items():
                pts = sorted(
                    (r["config"]["nodes"], r)
                    for r in runs
                    if r["config"]["model_bytes"] == size and r["name"].startswith(pol + "-")
                    and "kraken" not in r["name"]
                )  # fmt: skip
                if not pts:
                    continue
                xs = [n for n, _ in pts]
                if what == "ready":
                    ax.plot(xs, [r["p50"] for _, r in pts], "o-", color=color, label=label)
                    ax.plot(xs, [r["p99"] for _, r in pts], "s--", color=color)
                else:
                    ax.plot(xs, [r["store_x"] for _, r in pts], "o-", color=color, label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("nodes")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{_size_label(size)} model")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(REPO / "bench" / fname, dpi=110)
        plt.close(fig)
    at_1000 = [r for r in runs if r["name"].endswith("-1000-10GB")]
    if not at_1000 or not all(r.get("ready") for r in at_1000):
        return  # a restored row has no distribution: keep the CDF as it was drawn
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for pol, (color, label) in styles.items():
        for r in runs:
            if r["name"] == f"{pol}-1000-10GB" and r.get("ready"):
                xs = r["ready"]
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, color=color, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("ready time, s (from each node's start)")
    ax.set_ylabel("share of nodes ready")
    ax.set_title("1,000 nodes, 10 GB model: ready-time CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(REPO / "bench" / "fleet_cdf.png", dpi=110)
    plt.close(fig)


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()


def report(runs: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title} (commit {_commit()})", "", HEADER]
    lines += [_row(r) for r in runs]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[100, 1000, 10000])  # fmt: skip
    ap.add_argument("--sizes", type=lambda s: [int(float(x) * GB) for x in s.split(",")],
                    default=[10 * GB, 100 * GB], help="model sizes in GB, e.g. 10,100")  # fmt: skip
    ap.add_argument("--policies", type=lambda s: s.split(","), default=list(POLICIES))
    ap.add_argument("--skip", type=lambda s: [(int(a), int(float(b) * GB), c) for a, b, c in
                    (x.split(":") for x in s.split(",") if x)], default=LONG,
                    help="NODES:GB:POLICY,... runs to leave out (default: the ones that "
                    "take an hour or more here; --skip '' runs everything)")  # fmt: skip
    ap.add_argument("--order", choices=sorted(ORDERS), default="random")
    ap.add_argument("--force", action="store_true", help="rerun saved runs")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--kraken", action="store_true")
    ap.add_argument("--seeds", type=int, default=20, help="--calibrate: seeds of `real`")
    ap.add_argument("--host-model", nargs="?", const="measured", choices=["measured", "fleetcal"],
                    help="--calibrate: with the measured host model (HOST_5NODE; "
                    "'fleetcal': its figures before the fetch workers were counted)")  # fmt: skip
    ap.add_argument("--hub", action="store_true", help="measure the real hub's tracker")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="measure the netns fleet's CPU per GiB (root; bench/fleet/cpucost.py)",
    )
    ap.add_argument("--rate", default="200mbit", help="--cpu: the links' tbf rate, or none")
    ap.add_argument("--cpu-nodes", type=int, default=5, help="--cpu: nodes")  # fmt: skip
    ap.add_argument("--report", action="store_true", help="tables and plots from saved runs")
    args = ap.parse_args()
    md: list[str] = []
    if args.calibrate:
        md.append(report(calibrate(args), "Calibration: issue 20's 5-node netns parameters"))
    elif args.kraken:
        md.append(report(kraken(args), "Kraken's benchmark parameters"))
    elif args.cpu:
        from bench.fleet.cpucost import measure_cpu

        got = measure_cpu(args.cpu_nodes, rate=None if args.rate == "none" else args.rate)
        md.append("```\n" + json.dumps(got, indent=1) + "\n```")
    elif args.hub:
        from bench.fleet.hubload import measure

        md.append(measure())
    else:
        runs = matrix(args) if not args.report else []
        saved = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
        runs = [r for r in saved if "-kraken-" not in r["name"] and "calib" not in r["name"]]
        # the table's rows this machine has not run (their saved runs are not in git)
        have = {r["name"] for r in runs}
        runs += [r for r in json.loads(ROWS.read_text())["rows"] if r["name"] not in have]
        runs.sort(key=lambda r: (r["config"]["model_bytes"], r["config"]["nodes"], r["name"]))
        plots(runs)
        md.append(report(runs, "Fleet matrix"))
    text = "\n\n".join(md)
    print(text)
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    with open(REPO / "bench" / "out" / "fleet.md", "a") as f:
        f.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
