"""The tracker's routes on a real hub app (in-process aiohttp server on loopback):
announce, ask, the fleet token, malformed announces."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from accel.hub.app import create_app
from tests.hub.test_api import call
from tests.support.hub import publish_model, running_hub

FLEET = "fleet-secret"
HUB = "hub-secret"
PEERS = "/api/models/m/versions/1/peers"


def _announce(node: str, zone: str = "a", complete: float = 1.0) -> dict[str, Any]:
    return {
        "node_id": node,
        "url": f"http://10.0.0.{node[-1]}:8700",
        "zone": zone,
        "versions": [{"model_id": "m", "version": "1", "complete": complete}],
    }


async def _calls(
    root: Path, steps: list[tuple[str, str, Any, str | None]], **app_kw: Any
) -> list[tuple[int, Any]]:
    """Run (method, path, json body, bearer token) against a hub over ``root``."""
    server = TestServer(create_app(root, **app_kw), host="127.0.0.1")
    await server.start_server()
    out: list[tuple[int, Any]] = []
    try:
        async with aiohttp.ClientSession() as s:
            for method, path, body, token in steps:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                raw = (
                    None
                    if body is None
                    else body
                    if isinstance(body, bytes)
                    else json.dumps(body).encode()
                )
                data = None if raw is None else io.BytesIO(raw)
                async with s.request(
                    method, server.make_url(path), data=data, headers=headers
                ) as r:
                    text = await r.text()
                    out.append((r.status, json.loads(text) if text else None))
                    if r.status == 200 and "peer" in path:
                        assert r.headers["Cache-Control"] == "no-store"
    finally:
        await server.close()
    return out


def _store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    publish_model(root, "m", "1", {"a.bin": 1000})
    publish_model(root, "org/big", "2", {"a.bin": 1000})
    return root


def test_announced_nodes_are_handed_to_askers_same_zone_first(tmp_path: Path) -> None:
    root = _store(tmp_path)
    steps = [
        ("POST", "/api/peers/announce", _announce("n1", "a"), None),
        ("POST", "/api/peers/announce", _announce("n2", "b"), None),
        ("POST", "/api/peers/announce", _announce("n3", "a", complete=0.0), None),
        ("GET", PEERS + "?zone=b&node_id=n9", None, None),
        ("GET", PEERS + "?zone=b&node_id=n2", None, None),
        ("GET", PEERS + "?k=1&zone=a", None, None),
        (
            "POST",
            "/api/peers/announce",
            {
                **_announce("n4"),
                "versions": [{"model_id": "org/big", "version": "2", "complete": 0.5}],
            },
            None,
        ),
        ("GET", "/api/models/org/big/versions/2/peers", None, None),
    ]
    r = asyncio.run(_calls(root, steps))
    assert r[0] == (200, {"ttl": 30.0, "interval": 10.0})
    assert [p["node_id"] for p in r[3][1]["peers"]] == ["n2", "n1", "n3"]
    assert r[3][1]["peers"][0] == {
        "node_id": "n2",
        "url": "http://10.0.0.2:8700",
        "zone": "b",
        "complete": 1.0,
    }
    assert [p["node_id"] for p in r[4][1]["peers"]] == ["n1", "n3"]  # never the asker itself
    assert [p["node_id"] for p in r[5][1]["peers"]] == ["n1"]
    assert [p["node_id"] for p in r[7][1]["peers"]] == ["n4"]


def test_bad_announces_and_asks_get_one_clear_error(tmp_path: Path) -> None:
    root = _store(tmp_path)
    bad = [
        b"not json",
        {"node_id": "../x", "url": "http://h:1"},
        {"node_id": "n1", "url": "file:///etc/passwd"},
        {
            "node_id": "n1",
            "url": "http://h:1",
            "versions": [{"model_id": "m", "version": "1", "complete": 2}],
        },
    ]
    bad.append(
        {
            "node_id": "n1",
            "url": "http://h:1",
            "versions": [{"model_id": "m", "version": "1", "complete": False}],
        }
    )
    bad.append(b'{"node_id": "n1", "url": "http://h:1", "zone": "' + b"z" * (3 << 20) + b'"}')
    steps = [("POST", "/api/peers/announce", b, None) for b in bad]
    steps += [
        ("GET", "/api/models/m/versions/9/peers", None, None),
        ("GET", "/api/models/nope/versions/1/peers", None, None),
        ("GET", PEERS + "?k=0", None, None),
        ("GET", PEERS + "?k=٣", None, None),
    ]
    r = asyncio.run(_calls(root, steps))
    assert [s for s, _ in r] == [400, 400, 400, 400, 400, 413, 404, 404, 400, 400]
    assert "versions.0.complete" in r[3][1]["error"]["message"]
    assert r[5][1]["error"]["code"] == "payload_too_large"
    assert r[6][1]["error"]["code"] == "version_not_found"


def test_the_fleet_token_opens_the_tracker_and_nothing_else(tmp_path: Path) -> None:
    root = _store(tmp_path)
    steps = [
        ("POST", "/api/peers/announce", _announce("n1"), None),
        ("POST", "/api/peers/announce", _announce("n1"), "wrong"),
        ("POST", "/api/peers/announce", _announce("n1"), FLEET),
        ("GET", PEERS, None, HUB),  # a hub token works here too
        ("GET", PEERS, None, None),
        ("GET", "/api/models", None, FLEET),  # the fleet token is not a hub token
        ("GET", "/api/models", None, HUB),
    ]
    r = asyncio.run(_calls(root, steps, tokens=[HUB], peer_tokens=[FLEET]))
    assert [s for s, _ in r] == [401, 401, 200, 200, 401, 401, 200]
    assert "fleet token" in r[0][1]["error"]["message"]
    assert [p["node_id"] for p in r[3][1]["peers"]] == ["n1"]


def test_without_a_fleet_token_the_tracker_is_under_the_hubs_auth(tmp_path: Path) -> None:
    root = _store(tmp_path)
    steps = [
        ("POST", "/api/peers/announce", _announce("n1"), None),
        ("POST", "/api/peers/announce", _announce("n1"), HUB),
        ("GET", PEERS, None, None),
        ("GET", PEERS, None, HUB),
    ]
    r = asyncio.run(_calls(root, steps, tokens=[HUB]))
    assert [s for s, _ in r] == [401, 200, 401, 200]


def test_accel_serve_takes_the_fleet_token_and_the_ttl(tmp_path: Path) -> None:
    """The real `accel serve --peer-token T --peer-ttl 6`, with two workers: each worker
    checks the token and answers the TTL it was given."""
    root = _store(tmp_path)
    body = json.dumps(_announce("n1")).encode()
    args = ["--peer-token", FLEET, "--peer-ttl", "6", "--workers", "2"]
    with running_hub(root, extra_args=args) as h:
        for _ in range(4):  # SO_REUSEPORT spreads connections over both workers
            status, _, _ = call(h.url + "/api/peers/announce", "POST", body, {})
            assert status == 401
            status, _, answer = call(
                h.url + "/api/peers/announce", "POST", body, {"Authorization": f"Bearer {FLEET}"}
            )
            assert status == 200 and json.loads(answer) == {"ttl": 6.0, "interval": 2.0}
    r = subprocess.run(
        [sys.executable, "-m", "accel", "serve", "--root", str(root), "--peer-ttl", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--peer-ttl" in r.stderr and "Traceback" not in r.stderr
