"""Peers as sources of an install, for real: a second ``accel serve`` holding the same
version plays a peer that holds the whole file (it does not know ``?have``, so it
answers with the file: a whole source), in front of it tests/support/faultproxy.py
counts its bytes or injects the fault a test names. The hub is the last resort; every
install must end verified, whatever the peer does.

Faults: a lying peer (every answer has a flipped byte), a peer killed mid-transfer, a
peer that is not there at all; and the tracker path (an announce posted by the test,
the install asking the hub with the fleet token).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from accel.manager import ModelManager
from accel.manager.peers import peer_file_url
from tests.support.faultproxy import FaultKind, FaultProxy
from tests.support.hub import RunningHub, expected_bytes, publish_model, running_hub
from tests.support.wait import until

MiB = 1 << 20
FLEET = "fleet-token-1"
HUBTOK = "hub-token-1"
BIG = "weights/model.bin"
SIZE = 24 * MiB + 4321  # 25 blocks of 1 MiB, the last one short
SPEC: dict[str, int | bytes] = {BIG: SIZE, "config.json": b'{"layers": 2}\n'}


@dataclass
class Fleet:
    hub: RunningHub  #: the hub: token HUBTOK, tracker with the fleet token FLEET
    hub_proxy: FaultProxy  #: counts what the hub sends
    peer: RunningHub  #: another hub with the same version, playing a whole peer (FLEET)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    for root in (tmp_path / "hub-store", tmp_path / "peer-store"):
        publish_model(root, "asr", "1.0", SPEC, block_size=MiB)
    with (
        running_hub(tmp_path / "hub-store", HUBTOK, extra_args=["--peer-token", FLEET]) as hub,
        running_hub(tmp_path / "peer-store", FLEET) as peer,
        FaultProxy(hub.url) as hub_proxy,
    ):
        yield Fleet(hub, hub_proxy, peer)


def check_installed(path: Path) -> None:
    data = (path / BIG).read_bytes()
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected_bytes(BIG, SIZE)).digest()


def manager(tmp_path: Path, fleet: Fleet, **kw: object) -> ModelManager:
    return ModelManager(
        tmp_path / "models",
        fleet.hub_proxy.url,
        token=HUBTOK,
        workers=2,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_peer_serves_the_version_and_the_hub_little(tmp_path: Path, fleet: Fleet) -> None:
    """A static ``--peer`` holding the whole version takes the chunks (it gets the fleet
    token, which the peer requires: the hub's token would be a 401 there); the hub
    serves the small file and the probe's head, the install is verified."""
    with FaultProxy(fleet.peer.url) as peer:
        async with manager(tmp_path, fleet, peer_token=FLEET, peers=[peer.url]) as mm:
            path = await mm.ainstall("asr", "1.0")
        check_installed(path)
        assert peer.client_body_bytes >= SIZE * 0.9, peer.client_body_bytes
        assert fleet.hub_proxy.client_body_bytes < SIZE * 0.3, fleet.hub_proxy.client_body_bytes


async def test_a_lying_peer_is_quarantined_and_the_install_still_verified(
    tmp_path: Path, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """Every answer of the peer has one byte flipped: its blocks fail their blake3
    digest, it is quarantined at the second, the hub sends the rest; the file's SHA256
    matches."""
    with FaultProxy(fleet.peer.url, corrupt_rate=1.0, corrupt_kinds=[FaultKind.FLIP]) as liar:
        with caplog.at_level(logging.WARNING, logger="accel.fetch"):
            async with manager(tmp_path, fleet, peer_token=FLEET, peers=[liar.url]) as mm:
                path = await mm.ainstall("asr", "1.0")
        check_installed(path)
        said = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
        assert any(liar.url in m and "block" in m for m in said), said
        # the liar got one measuring chunk, then one more after its first bad block
        # (plus what was in flight when each was dropped): a small part of the file
        assert liar.client_body_bytes <= SIZE // 3, liar.client_body_bytes
        assert fleet.hub_proxy.client_body_bytes >= SIZE * 2 // 3


async def test_a_peer_killed_mid_transfer_changes_nothing_but_time(
    tmp_path: Path, fleet: Fleet
) -> None:
    """The peer (slowed to 4 MB/s, so it is still sending) dies after 2 MiB: its
    connections are cut and new ones refused; the hub sends the rest, verified."""
    peer = FaultProxy(fleet.peer.url, trickle_bps=4_000_000).start()
    killed = threading.Event()
    try:
        async with manager(tmp_path, fleet, peer_token=FLEET, peers=[peer.url]) as mm:
            job = mm.ainstall("asr", "1.0")
            import asyncio

            task = asyncio.ensure_future(job)
            await until(lambda: peer.client_body_bytes >= 2 * MiB or task.done(),
                        what="2 MiB from the peer", timeout=60)  # fmt: skip
            assert not task.done(), "the install ended before the peer sent 2 MiB"
            peer.stop()
            killed.set()
            path = await task
    finally:
        if not killed.is_set():
            peer.stop()
    check_installed(path)
    assert fleet.hub_proxy.client_body_bytes >= SIZE // 2


async def test_a_peer_that_is_not_there_costs_nothing(tmp_path: Path, fleet: Fleet) -> None:
    """A static peer nothing listens on: its ``?have`` fails, it holds nothing, the hub
    serves everything (with its full connections: nobody is waited on)."""
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    async with manager(tmp_path, fleet, peer_token=FLEET, peers=[dead]) as mm:
        path = await mm.ainstall("asr", "1.0")
    check_installed(path)
    assert fleet.hub_proxy.client_body_bytes >= SIZE


def announce(hub: RunningHub, node_id: str, url: str, token: str = FLEET) -> int:
    body = json.dumps(
        {"node_id": node_id, "url": url, "zone": "z1",
         "versions": [{"model_id": "asr", "version": "1.0", "complete": 1.0}]}
    ).encode()  # fmt: skip
    req = urllib.request.Request(
        f"{hub.url}/api/peers/announce",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_the_tracker_names_the_peers_with_the_fleet_token(
    tmp_path: Path, fleet: Fleet
) -> None:
    """A node announced to the hub's tracker (posted by the test); an install with the
    fleet token asks the tracker, finds it, and reads from it. The install's own node
    id is left out of the answer (it would read from itself)."""
    assert announce(fleet.hub, "me", "http://127.0.0.1:9") == 200  # this node: excluded
    with FaultProxy(fleet.peer.url) as peer:
        assert announce(fleet.hub, "node-2", peer.url) == 200
        assert announce(fleet.hub, "node-3", peer.url, token="wrong") == 401
        async with manager(tmp_path, fleet, peer_token=FLEET, node_id="me", peer_zone="z1") as mm:
            path = await mm.ainstall("asr", "1.0")
            assert mm.peers.asks >= 1
        check_installed(path)
        assert peer.client_body_bytes >= SIZE * 0.9, peer.client_body_bytes


async def test_without_the_fleet_token_the_tracker_is_not_asked(
    tmp_path: Path, fleet: Fleet
) -> None:
    with FaultProxy(fleet.peer.url) as peer:
        assert announce(fleet.hub, "node-2", peer.url) == 200
        async with manager(tmp_path, fleet) as mm:
            path = await mm.ainstall("asr", "1.0")
            assert mm.peers.asks == 0
        check_installed(path)
        assert peer.client_body_bytes == 0


def test_the_cli_takes_peers_and_the_token_from_the_environment(
    tmp_path: Path, fleet: Fleet
) -> None:
    with FaultProxy(fleet.peer.url) as peer:
        out = subprocess.run(
            [sys.executable, "-m", "accel", "install", "asr@1.0", "--models-dir",
             str(tmp_path / "models"), "--hub", fleet.hub.url, "--token", HUBTOK,
             "--peer", peer.url, "-q"],
            capture_output=True, text=True, timeout=120,
            env={**_env(), "ACCEL_PEER_TOKEN": FLEET},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        check_installed(Path(out.stdout.strip()))
        assert peer.client_body_bytes >= SIZE * 0.9


def test_a_file_url_at_a_peer_is_the_hubs_layout() -> None:
    assert (
        peer_file_url("http://n1:8001/", "org/m", "1.0", "a b/c.bin")
        == "http://n1:8001/storage/models/org/m/1.0/a%20b/c.bin"
    )


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
