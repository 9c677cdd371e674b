"""A node daemon's installs read from peers, all real: a hub (with the fleet token for its
tracker) behind tests/support/faultproxy.py (counting what it sends), node A installs a
version and announces it, node B (``--peer-token``, its own ``--node-id``) installs the
same version: the tracker names A, B reads it from A's peer listener, and the hub sends
B little more than the small file. Then A dies and node C installs: nothing but time
changes (the hub sends it all, verified)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.node.stack import publish
from tests.node.test_peers import TOKEN, _install_and_wait, _tracker_peers, peer_node
from tests.support.faultproxy import FaultProxy
from tests.support.hub import expected_bytes, running_hub
from tests.support.wait import wait_until

MiB = 1 << 20
BIG = 12 * MiB + 777


def _same(path: Path) -> bool:
    want = hashlib.sha256(expected_bytes("model.bin", BIG)).digest()
    return hashlib.sha256((path / "model.bin").read_bytes()).digest() == want


def test_a_nodes_install_reads_from_the_peer_the_tracker_names(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "models").mkdir(parents=True)
    publish(root, "asr", "1.0", {"model.bin": BIG, "cfg.json": 2000})
    with (
        running_hub(root, extra_args=["--peer-token", TOKEN, "--peer-ttl", "3"]) as hub,
        FaultProxy(hub.url) as counted,
    ):
        (tmp_path / "a").mkdir()
        with peer_node(
            tmp_path / "a" / "models", counted.url, "--node-id", "a", log_name="a.log"
        ) as (a, _):
            assert _same(_install_and_wait(a, "asr", "1.0"))
            wait_until(
                lambda: any(p["node_id"] == "a" and p["complete"] == 1.0
                            for p in _tracker_peers(hub, "asr", "1.0")),
                what="node a listed as holding asr@1.0", timeout=30,
            )  # fmt: skip
            before = counted.client_body_bytes
            (tmp_path / "b").mkdir()
            with peer_node(
                tmp_path / "b" / "models", counted.url, "--node-id", "b", log_name="b.log"
            ) as (b, _):
                assert _same(_install_and_wait(b, "asr", "1.0"))
            from_hub = counted.client_body_bytes - before
            assert from_hub < BIG // 4, from_hub  # the rest came from node a
        # node a is gone (its announce expires after the tracker's 3 s TTL, or is
        # withdrawn at its clean stop): node c installs from the hub, verified
        before = counted.client_body_bytes
        (tmp_path / "c").mkdir()
        with peer_node(
            tmp_path / "c" / "models", counted.url, "--node-id", "c", log_name="c.log"
        ) as (c, _):
            assert _same(_install_and_wait(c, "asr", "1.0"))
        assert counted.client_body_bytes - before >= BIG
