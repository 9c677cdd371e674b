"""The node's per-request choice (``accel.fetch.sources_order.assign``), timed on the
states a fleet really reaches: the calls of a simulated fleet (policy ``real``, as
``bench_fleet.py`` runs it) are recorded, then replayed through ``assign`` and through
the per-block scan it replaced (the reference in
tests/fetch/test_sources_order_reference.py), each answer checked equal.

    nice -n 19 python bench/bench_assign.py --nodes 100 --every 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import accel.fetch.sources_order as sources_order  # noqa: E402
from bench.fleet.sim import FleetConfig, simulate  # noqa: E402
from tests.fetch.test_sources_order_reference import reference_assign  # noqa: E402

GB = 10**9


def record(nodes: int, gb: float, every: int) -> list[tuple[Any, ...]]:
    """Every ``every``-th call of ``assign`` in a fleet of ``nodes`` x ``gb`` GB."""
    calls: list[tuple[Any, ...]] = []
    real = sources_order.assign
    count = 0

    def spy(*args: Any, **kw: Any) -> Any:
        nonlocal count
        count += 1
        if count % every == 0:
            calls.append((args, kw))
        return real(*args, **kw)

    sources_order.assign = spy  # type: ignore[assignment]
    try:
        cfg = FleetConfig(nodes=nodes, model_bytes=int(gb * GB), peers=True, have_refresh=0.5)
        simulate(cfg, real_order=True)
    finally:
        sources_order.assign = real  # type: ignore[assignment]
    return calls


def per_call(fn: Any, calls: list[tuple[Any, ...]], rounds: int) -> float:
    """Median over ``rounds`` of the mean seconds per call."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for args, kw in calls:
            fn(*args, **kw)
        times.append((time.perf_counter() - t0) / len(calls))
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--gb", type=float, default=10.0)
    ap.add_argument("--every", type=int, default=10, help="record every N-th call")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    calls = record(args.nodes, args.gb, args.every)
    for a, kw in calls:
        assert sources_order.assign(*a, **kw) == reference_assign(*a, **kw), (a, kw)
    peers = statistics.mean(len(a[0].sources) - 1 for a, _ in calls)

    def blocks(spans: Any, bs: int) -> int:
        return sum(-(-sp.end // bs) - sp.start // bs for sp in spans)

    pending = statistics.mean(blocks(a[1], kw["block_size"]) for a, kw in calls)
    spans = statistics.mean(len(a[1]) for a, _ in calls)
    new = per_call(sources_order.assign, calls, args.rounds)
    old = per_call(reference_assign, calls, args.rounds)
    print(
        f"{len(calls)} calls of a {args.nodes}-node x {args.gb:g} GB fleet (every "
        f"{args.every}-th; mean {peers:.1f} peers, {pending:.0f} pending blocks in {spans:.0f} "
        f"spans), answers "
        f"equal: per-block scan {old * 1e3:.3f} ms a call, bitmaps {new * 1e3:.3f} ms "
        f"({old / new:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
