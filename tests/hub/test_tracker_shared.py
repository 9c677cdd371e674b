"""The tracker's table shared by every hub process over one usage database, all real:
hubs as ``accel serve`` subprocesses, a real PostgreSQL (tests/support/postgres.py),
nginx as the load balancer (tests/support/balancer.py), a real node daemon announcing.

- a node that announced through one hub (or through the balancer) is handed out by
  every hub, same zone first;
- the two ``--workers`` of one hub over its default SQLite file share it too, and an
  announce not renewed is gone after the TTL whichever worker answers;
- while the database is gone, announces and asks answer 503 ``tracker_unavailable``
  and the rest of the hub keeps serving; once it is back, announces list again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accel.hub.tracker import peer_rank
from tests.node.stack import running_node
from tests.support.balancer import Balancer, start_balancer
from tests.support.hub import RunningHub, publish_model, running_hub
from tests.support.postgres import Postgres, running_postgres
from tests.support.wait import wait_until

FLEET = "fleet-secret"
AUTH = {"Authorization": f"Bearer {FLEET}", "Content-Type": "application/json"}
PEERS = "/api/models/m/versions/1/peers"


def _call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request on a new connection (so SO_REUSEPORT and nginx spread them)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def _announce(
    hub: str, node: str, zone: str = "a", complete: float = 1.0
) -> tuple[int, dict[str, str], Any]:
    body = {
        "node_id": node,
        "url": f"http://{node}.test:8700",
        "zone": zone,
        "versions": [{"model_id": "m", "version": "1", "complete": complete}],
    }
    return _call(f"{hub}/api/peers/announce", body)


def _listed(hub: str, query: str = "k=50") -> list[dict[str, Any]]:
    status, _, body = _call(f"{hub}{PEERS}?{query}")
    assert status == 200, body
    peers: list[dict[str, Any]] = body["peers"]
    return peers


def _ids(hub: str, query: str = "k=50") -> set[str]:
    return {p["node_id"] for p in _listed(hub, query)}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tracker") / "store"
    publish_model(root, "m", "1", {"w.bin": 3000})
    publish_model(root, "asr", "1.0", {"model.bin": 70_000, "cfg.json": 200}, block_size=1 << 16)
    return root


Fleet = tuple[RunningHub, RunningHub, Balancer]


@pytest.fixture(scope="module")
def fleet(shared_store: Path, postgres: Postgres) -> Iterator[Fleet]:
    """Two hubs over one store and one PostgreSQL, nginx in front of both."""
    args = ["--usage-db", postgres.create_database(), "--peer-token", FLEET]
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(running_hub(shared_store, extra_args=args))
        b = stack.enter_context(running_hub(shared_store, extra_args=args))
        lb = stack.enter_context(start_balancer([a.url, b.url]))
        yield a, b, lb


def test_a_node_announced_through_one_hub_is_listed_by_every_hub(fleet: Fleet) -> None:
    a, b, lb = fleet
    assert _announce(a.url, "via-a")[0] == 200
    assert _announce(b.url, "via-b")[0] == 200
    for i in range(4):  # round robin: through both hubs
        assert _announce(lb.url, f"via-lb{i}")[0] == 200
    want = {"via-a", "via-b", *(f"via-lb{i}" for i in range(4))}
    for hub in (a.url, b.url, lb.url, lb.url):
        assert _ids(hub) >= want
        assert want - _ids(hub, "k=50&node_id=via-a") == {"via-a"}  # never the asker
    ups = " ".join(lb.upstreams())
    assert f"127.0.0.1:{a.port}" in ups and f"127.0.0.1:{b.port}" in ups


def test_same_zone_first_over_announces_spread_over_both_hubs(fleet: Fleet) -> None:
    a, b, _ = fleet
    for i in range(3):
        assert _announce(a.url, f"zone-near{i}", "z-near")[0] == 200
        assert _announce(b.url, f"zone-far{i}", "z-far")[0] == 200
        assert _announce(a.url, f"zone-empty{i}", "z-near", complete=0.0)[0] == 200
    ours = {f"zone-{g}{i}" for g in ("near", "far", "empty") for i in range(3)}
    for hub in (a.url, b.url):
        got = [p for p in _listed(hub, "zone=z-near&k=50") if p["node_id"] in ours]
        ranks = [peer_rank(p["complete"], p["zone"], "z-near") for p in got]
        assert ranks == [0, 0, 0, 1, 1, 1, 2, 2, 2], got
        # k=2 from the nearest group alone
        first = _listed(hub, "zone=z-near&k=2")
        assert {p["zone"] for p in first} == {"z-near"} and len(first) == 2


def test_a_real_node_announcing_through_the_balancer_is_listed_by_both_hubs(
    fleet: Fleet, tmp_path: Path
) -> None:
    a, b, lb = fleet
    models = tmp_path / "models"
    extra = ["--serve-peers", "--peer-listen", "127.0.0.1:0", "--peer-token", FLEET,
             "--zone", "rack-9"]  # fmt: skip
    with running_node(models, lb.url, *extra) as node:
        status, _, _ = _call(node.url + "/api/install", {"model_id": "asr", "version": "1.0"})
        assert status == 202

        def whole_on_both() -> bool:
            for hub in (a.url, b.url):
                status, _, body = _call(f"{hub}/api/models/asr/versions/1.0/peers")
                mine = [p for p in body["peers"] if p["node_id"] == "node-under-test"]
                if status != 200 or [p["complete"] for p in mine] != [1.0]:
                    return False
                assert mine[0]["zone"] == "rack-9"
            return True

        wait_until(whole_on_both, what="the node listed whole by both hubs", timeout=90)
        assert node.terminate() == 0
    # its leaving announce, through either hub, took it off both
    for hub in (a.url, b.url):
        status, _, body = _call(f"{hub}/api/models/asr/versions/1.0/peers")
        assert status == 200 and body["peers"] == []


def test_the_workers_of_one_hub_share_its_default_sqlite_table(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "m", "1", {"w.bin": 3000})
    with running_hub(root, extra_args=["--workers", "2", "--peer-token", FLEET]) as hub:
        nodes = {f"w{i}" for i in range(16)}
        for node in sorted(nodes):  # each on its own connection: spread over both workers
            assert _announce(hub.url, node)[0] == 200
        assert [_ids(hub.url) for _ in range(12)] == [nodes] * 12
        # in the usage SQLite file beside the store, whichever worker took them
        with contextlib.closing(sqlite3.connect(root / "usage.sqlite3")) as conn:
            (rows,) = conn.execute("SELECT count(DISTINCT node_id) FROM tracker_peers").fetchone()
        assert rows == 16
        # a node leaving through one worker is gone for both
        status, _, _ = _call(
            f"{hub.url}/api/peers/announce", {"node_id": "w3", "url": "http://w3.test:8700"}
        )
        assert status == 200
        assert [_ids(hub.url) for _ in range(8)] == [nodes - {"w3"}] * 8


def test_an_announce_not_renewed_is_gone_after_the_ttl_from_every_worker(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    publish_model(root, "m", "1", {"w.bin": 3000})
    args = ["--workers", "2", "--peer-token", FLEET, "--peer-ttl", "1"]
    with running_hub(root, extra_args=args) as hub:
        announced = time.monotonic()
        for i in range(8):
            status, _, answer = _announce(hub.url, f"e{i}")
            assert status == 200 and answer == {"ttl": 1.0, "interval": pytest.approx(1 / 3)}
        wait_until(lambda: all(not _ids(hub.url) for _ in range(4)), what="all expired", timeout=10)
        assert time.monotonic() - announced >= 1.0  # not before the TTL
        # a heartbeat brings a node back: the next ask lists it
        wait_until(
            lambda: _announce(hub.url, "e0")[0] == 200 and _ids(hub.url) == {"e0"},
            what="listed again after a heartbeat",
            timeout=10,
        )


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of this test's own: the test stops and starts it."""
    with running_postgres() as server:
        yield server


def test_the_database_gone_and_back(shared_store: Path, own_postgres: Postgres) -> None:
    args = ["--usage-db", own_postgres.create_database(), "--peer-token", FLEET]
    with running_hub(shared_store, extra_args=args) as hub:
        assert _announce(hub.url, "before")[0] == 200
        assert _ids(hub.url) == {"before"}
        own_postgres.stop()
        try:
            status, headers, body = _announce(hub.url, "during")
            assert status == 503, body
            assert body["error"]["code"] == "tracker_unavailable"
            assert (
                "try again" in body["error"]["message"]
                and "postgresql://" in (body["error"]["message"])
            )
            assert headers["Retry-After"] == "1"
            status, _, body = _call(f"{hub.url}{PEERS}")
            assert status == 503 and body["error"]["code"] == "tracker_unavailable"
            # everything that needs no database still answers
            status, _, manifest = _call(f"{hub.url}/api/models/m/versions/1/manifest")
            assert status == 200 and manifest["version"] == "1"
            assert _call(f"{hub.url}/api/models")[0] == 200
            with urllib.request.urlopen(f"{hub.url}/storage/models/m/1/w.bin", timeout=30) as r:
                assert r.status == 200 and len(r.read()) == 3000
        finally:
            own_postgres.start()
        wait_until(
            lambda: _announce(hub.url, "after")[0] == 200, what="announces again", timeout=20
        )
        assert "after" in _ids(hub.url) and "during" not in _ids(hub.url)
