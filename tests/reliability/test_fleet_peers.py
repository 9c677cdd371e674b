"""Peers, the proof (issue 20): a hub and nodes, each in its own network namespace with a
``tc tbf`` cap, pre-seeding one model at once (tests/support/fleet.py). Every node ends
verified; the hub sends the model about once instead of once per node, and the last
node is ready not long after one node alone would be.

The default suite runs 3 nodes and a 48 MiB model on 100 Mbit/s links; the full proof
(5 nodes, 256 MiB, 200 Mbit/s: hub egress <= 1.5x the model, last node ready within
2.5x of one node alone) is a soak test (``./scripts/soak -k fleet``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.support.fleet import fleet
from tests.support.hub import expected_bytes, publish_model
from tests.support.netns import require_root

pytestmark = pytest.mark.root

MiB = 1 << 20
FIGURES = Path(__file__).resolve().parents[2] / "bench" / "out" / "fleet.jsonl"


def proof(tmp_path: Path, *, nodes: int, size: int, block: int, rate: str) -> dict[str, float]:
    require_root()
    root = tmp_path / "store"
    spec: dict[str, int | bytes] = {"model.bin": size, "config.json": b'{"layers": 2}\n'}
    publish_model(root, "fleet", "1", spec, block_size=block)
    total = size + len(spec["config.json"])  # type: ignore[arg-type]
    want = hashlib.sha256(expected_bytes("model.bin", size)).hexdigest()
    with fleet(root, tmp_path, nodes, rate=rate) as f:
        alone = f.preseed("fleet@1", [0], peers=False, dirs=[tmp_path / "alone"])
        assert alone.codes == [0], alone.errors
        run = f.preseed("fleet@1", list(range(nodes)))
        assert run.codes == [0] * nodes, run.errors
        for d in f.dirs:
            got = hashlib.sha256((d / "fleet" / "1" / "model.bin").read_bytes()).hexdigest()
            assert got == want
    figures = {
        "nodes": nodes,
        "size_mib": size / MiB,
        "block_mib": block / MiB,
        "rate": rate,
        "alone_s": round(alone.last, 2),
        "alone_hub_ratio": round(alone.hub_bytes / total, 3),
        "last_s": round(run.last, 2),
        "ready_ratio": round(run.last / alone.last, 2),
        "hub_egress_ratio": round(run.hub_bytes / total, 3),
        "load1": round(os.getloadavg()[0], 1),
    }
    FIGURES.parent.mkdir(exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(json.dumps(figures) + "\n")
    print(json.dumps(figures))
    return figures


def test_three_nodes_fill_from_each_other(tmp_path: Path) -> None:
    """The short version: 3 nodes, 48 MiB in 1 MiB blocks, 100 Mbit/s links."""
    fig = proof(tmp_path, nodes=3, size=48 * MiB, block=MiB, rate="100mbit")
    # today without peers the hub sends 3x; the fleet must stay well under that
    assert fig["hub_egress_ratio"] <= 1.8, fig
    assert fig["ready_ratio"] <= 3.0, fig


@pytest.mark.soak
def test_five_nodes_preseed_256_mib(tmp_path: Path) -> None:
    """The proof of issue 20: 5 nodes, 256 MiB, every link capped at 200 Mbit/s."""
    fig = proof(tmp_path, nodes=5, size=256 * MiB, block=4 * MiB, rate="200mbit")
    assert fig["hub_egress_ratio"] <= 1.5, fig
    assert fig["ready_ratio"] <= 2.5, fig
