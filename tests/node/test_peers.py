"""``accel node --serve-peers``: the peer server and the announces, all real.

A real hub (``accel serve`` subprocess, with a fleet token for its tracker), a real node
daemon (``accel node`` subprocess) installing from it, real HTTP clients (curl, aiohttp)
reading from the node's peer listener:

- a ready file answers like the hub's /storage (Range, ETag, 304, 416, HEAD, the same
  answers to the same hostile paths), only with the fleet token (401 otherwise);
- a file still downloading (the hub's answers for its first chunk stalled by the fault
  proxy) answers ``?have`` with some blocks set and not all, serves the held blocks
  byte-exact and refuses a range over a missing block with 404 ``block_not_held``;
- the announce reaches the hub's tracker: ``GET .../peers`` lists the node, with its
  peer URL, zone and completeness (partial mid-download, 1.0 once ready);
- ``--peer-upload-limit`` caps what all transfers send together, ``--peer-max-clients``
  answers 503 with Retry-After past it, and a version removed mid-transfer finishes
  that transfer from the unlinked file while new requests get 404.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from accel import blockmap
from tests.hub.test_storage import HOSTILE
from tests.node.stack import NodeProcess, publish, running_node
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.hub import RunningHub, expected_bytes, running_hub
from tests.support.wait import until, wait_until

MiB = 1 << 20
TOKEN = "fleet-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIG = 6 * MiB + 12345


@contextlib.contextmanager
def peer_node(
    models: Path, hub_url: str, *extra: str, log_name: str = "node.log"
) -> Iterator[tuple[NodeProcess, str]]:
    """``accel node --serve-peers`` on loopback; yields the node and its peer URL."""
    with running_node(
        models,
        hub_url,
        "--serve-peers",
        "--peer-listen",
        "127.0.0.1:0",
        "--peer-token",
        TOKEN,
        *extra,
        log_name=log_name,
    ) as node:
        assert node.proc.stdout is not None
        line = node.proc.stdout.readline()  # printed right after the "listening" line
        assert "serving peers on" in line, line + node.log()
        yield node, line.split()[-1]


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.load(r)


def _state(node: NodeProcess) -> dict[str, Any]:
    with urllib.request.urlopen(node.url + "/api/state", timeout=30) as r:
        data: dict[str, Any] = json.load(r)
        return data


def _install_and_wait(node: NodeProcess, model_id: str, version: str) -> Path:
    status, _ = _post(node.url + "/api/install", {"model_id": model_id, "version": version})
    assert status == 202

    def ready() -> Path | None:
        for rec in _state(node)["models"]:
            if (rec["model_id"], rec["version"], rec["state"]) == (model_id, version, "ready"):
                return Path(rec["path"])
        return None

    return wait_until(ready, what=f"{model_id}@{version} ready", timeout=90)


def _tracker_peers(hub: RunningHub, model_id: str, version: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(
        f"{hub.url}/api/models/{model_id}/versions/{version}/peers", headers=AUTH
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        peers: list[dict[str, Any]] = json.load(r)["peers"]
        return peers


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """curl's status, headers (lower-case names) and body for ``args``."""
    out = subprocess.run(
        ["curl", "-sS", "--path-as-is", "-D", "/dev/stderr", "-o", "-", *args],
        capture_output=True,
        check=True,
        timeout=60,
    )
    head = out.stderr.split(b"\r\n\r\n")[-2] if b"\r\n\r\n" in out.stderr else out.stderr
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, out.stdout


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "models").mkdir(parents=True)
    publish(root, "asr", "1.0", {"model.bin": BIG, "cfg.json": 2000})
    return root


def test_ready_file_is_served_like_the_hub_only_with_the_fleet_token(
    tmp_path: Path, store: Path
) -> None:
    # a 2 s TTL: the node must keep announcing to stay listed
    with (
        running_hub(store, extra_args=["--peer-token", TOKEN, "--peer-ttl", "2"]) as hub,
        peer_node(tmp_path / "models", hub.url, "--zone", "rack-1") as (node, peer),
    ):
        path = _install_and_wait(node, "asr", "1.0")
        url = f"{peer}/storage/models/asr/1.0/model.bin"
        want = expected_bytes("model.bin", BIG)
        bearer = f"Authorization: Bearer {TOKEN}"

        # the fleet token, or nothing but /healthz
        for headers in ([], ["-H", "Authorization: Bearer wrong"], ["-H", "Authorization: tok"]):
            for target in (url, url + "?have", f"{peer}/storage/models/asr/1.0/nope"):
                status, h, body = curl(*headers, "-r", "0-9", target)
                assert status == 401, (headers, target)
                assert h["www-authenticate"].startswith("Bearer")
                assert json.loads(body)["error"]["code"] == "unauthorized"
        assert curl(f"{peer}/healthz")[0] == 200

        # Range, validators and HEAD as the hub answers them
        status, h, body = curl("-H", bearer, "-r", "1000-1999", url)
        assert status == 206 and body == want[1000:2000]
        assert h["content-range"] == f"bytes 1000-1999/{BIG}"
        hub_status, hub_h, _ = curl("-r", "0-0", f"{hub.url}/storage/models/asr/1.0/model.bin")
        assert hub_status == 206 and h["etag"] == hub_h["etag"]  # the file's sha256
        sha = hashlib.sha256(want).hexdigest()
        assert h["etag"] == f'"{sha[:40]}"' and h["accept-ranges"] == "bytes"
        assert curl("-H", bearer, "-H", f"If-None-Match: {h['etag']}", url)[0] == 304
        status, _h2, body = curl("-H", bearer, "-r", "0-9", "-H", 'If-Range: "other"', url)
        assert status == 200 and hashlib.sha256(body).hexdigest() == sha
        status, h3, _ = curl("-H", bearer, "-r", f"{BIG}-", url)
        assert status == 416 and h3["content-range"] == f"bytes */{BIG}"
        status, h4, _ = curl("-H", bearer, "-I", url)
        assert status == 200 and int(h4["content-length"]) == BIG

        # real multi-connection clients read it whole: aria2c -x4, and accel's own engine
        subprocess.run(
            ["aria2c", "-q", "-x4", "-s4", "-k1M", "--header", bearer, "-d", str(tmp_path),
             "-o", "by-aria2.bin", url],
            check=True, timeout=60,
        )  # fmt: skip
        assert hashlib.sha256((tmp_path / "by-aria2.bin").read_bytes()).hexdigest() == sha
        subprocess.run(
            [sys.executable, "-m", "accel", "get", "--quiet", "--header-secret", bearer,
             "--sha256", sha, "-o", str(tmp_path / "by-accel.bin"), url],
            check=True, timeout=60,
        )  # fmt: skip
        assert (tmp_path / "by-accel.bin").read_bytes() == want

        # ?have of a ready file: every block
        status, _, body = curl("-H", bearer, url + "?have")
        have = json.loads(body)
        assert status == 200 and have["size"] == BIG and have["block_size"] == MiB
        n = blockmap.block_count(BIG, MiB)
        assert base64.b64decode(have["have"]) == blockmap.full(n) == b"\xfe"  # 7 blocks

        # the hub's hostile paths get the hub's answers (and never a byte of outside)
        (path / "leak").symlink_to("/etc/passwd")
        (path / "unlisted.bin").write_bytes(b"not listed")
        for hostile in HOSTILE:
            tail = hostile.replace("/demo-asr/1.0.0/", "/asr/1.0/")
            p_status, _, p_body = curl("-H", bearer, peer + tail)
            h_status, _, h_body = curl(hub.url + tail)
            assert b"root:x:0:0" not in p_body and str(tmp_path).encode() not in p_body
            assert p_status in (400, 404), tail
            assert (p_status, json.loads(p_body)["error"]["code"]) == (
                h_status,
                json.loads(h_body)["error"]["code"],
            ), tail
        # a listed file swapped for a symlink out of the models dir is not followed
        (path / "cfg.json").unlink()
        (path / "cfg.json").symlink_to("/etc/passwd")
        status, _, body = curl("-H", bearer, f"{peer}/storage/models/asr/1.0/cfg.json")
        assert status == 404 and b"root:x" not in body

        # the control API is not on the peer listener, nor the peer routes on the API's
        assert curl("-H", bearer, f"{peer}/api/state")[0] == 404
        assert curl(f"{node.url}/storage/models/asr/1.0/model.bin")[0] == 404

        # the announce reached the hub's tracker: listed, whole, with its URL and zone
        def listed() -> dict[str, Any] | None:
            for p in _tracker_peers(hub, "asr", "1.0"):
                if p["node_id"] == "node-under-test" and p["complete"] == 1.0:
                    return p
            return None

        seen = wait_until(listed, what="the node listed whole by the tracker", timeout=30)
        assert seen == {
            "node_id": "node-under-test",
            "url": peer,
            "zone": "rack-1",
            "complete": 1.0,
        }
        announce = _state(node)["peers"]["announce"]
        assert announce["last_error"] is None and announce["interval_s"] <= 1.0
        # heartbeats: three more announces (over two TTLs) and still listed
        beats = announce["sent"]
        wait_until(
            lambda: _state(node)["peers"]["announce"]["sent"] >= beats + 3,
            what="three heartbeats",
            timeout=30,
        )
        assert listed() is not None
        assert node.terminate() == 0
        # a clean stop withdraws what it held: askers are no longer sent to it
        assert _tracker_peers(hub, "asr", "1.0") == []


def test_a_file_still_downloading_serves_its_verified_blocks_only(
    tmp_path: Path, store: Path
) -> None:
    size = 24 * MiB
    publish(store, "big", "1.0", {"weights.bin": size})
    want = expected_bytes("weights.bin", size)
    # The hub's answers for the file's first bytes stall: block 0 cannot be verified
    # while the other chunks arrive.
    stall = FaultRule(
        FaultKind.STALL_BODY, path="weights.bin", range_start=0, times=None, stall_s=120
    )
    with (
        running_hub(store, extra_args=["--peer-token", TOKEN]) as hub,
        FaultProxy(hub.url, rules=[stall]) as proxy,
        peer_node(tmp_path / "models", proxy.url, "--zone", "z1") as (node, peer),
    ):
        status, _ = _post(node.url + "/api/install", {"model_id": "big", "version": "1.0"})
        assert status == 202
        url = f"{peer}/storage/models/big/1.0/weights.bin"
        n = blockmap.block_count(size, MiB)

        def partial() -> bytes | None:
            req = urllib.request.Request(url + "?have", headers=AUTH)
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    have = json.load(r)
            except urllib.error.HTTPError:
                return None  # not listed yet (the install has not recorded its files)
            assert (have["size"], have["block_size"]) == (size, MiB)
            bits = blockmap.decode(have["have"], n)
            held = blockmap.held_bytes(bits, size, MiB)
            return bits if 2 * MiB <= held < size else None

        bits = wait_until(partial, what="some blocks held, not all", timeout=90)
        assert not blockmap.covers(bits, 0, 0, MiB)  # block 0 stalls at the hub
        first_held = next(i for i in range(n) if blockmap.covers(bits, i * MiB, i * MiB, MiB))
        start = first_held * MiB

        bearer = f"Authorization: Bearer {TOKEN}"
        status, h, body = curl("-H", bearer, "-r", f"{start + 7}-{start + MiB - 1}", url)
        assert status == 206 and body == want[start + 7 : start + MiB]
        assert h["etag"] == f'"{hashlib.sha256(want).hexdigest()[:40]}"'  # as when whole
        # any range touching block 0 (even by one byte), and the whole file
        for rng in ([], ["-r", "0-99"], ["-r", f"{MiB - 1}-{start + 10}"], ["-r", "-1"], ["-I"]):
            status, _, body = curl("-H", bearer, *rng, url)
            if rng == ["-r", "-1"] and status == 206:
                # the last block may have arrived since ``bits`` was read (the install
                # goes on): then it is served, byte-exact
                assert body == want[-1:]
                continue
            assert status == 404, rng
            if rng != ["-I"]:  # a HEAD has no body
                assert json.loads(body)["error"]["code"] == "block_not_held", rng

        # the tracker lists the node as a partial holder
        def listed_partial() -> dict[str, Any] | None:
            for p in _tracker_peers(hub, "big", "1.0"):
                if p["node_id"] == "node-under-test" and 0 < p["complete"] < 1:
                    return p
            return None

        seen = wait_until(listed_partial, what="the node listed as partial", timeout=30)
        assert seen["url"] == peer and seen["zone"] == "z1"


# --- limits and removal: one node with a ready version, several transfers -------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    """A node capped at 2 MiB/s upload and 2 transfers, with asr 1.0 and 2.0 ready."""
    tmp = tmp_path_factory.mktemp("limited")
    root = tmp / "store"
    (root / "models").mkdir(parents=True)
    publish(root, "asr", "1.0", {"model.bin": BIG})
    publish(root, "asr", "2.0", {"other.bin": BIG})
    with (
        running_hub(root) as hub,
        peer_node(
            tmp / "models",
            hub.url,
            "--peer-upload-limit",
            "2M",
            "--peer-max-clients",
            "2",
        ) as (node, peer),
    ):
        _install_and_wait(node, "asr", "1.0")
        _install_and_wait(node, "asr", "2.0")
        yield node, peer


@contextlib.asynccontextmanager
async def _opened(s: aiohttp.ClientSession, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
    async with s.get(url, headers=AUTH) as r:
        yield r


async def _read_all(r: aiohttp.ClientResponse) -> bytes:
    parts = []
    async for piece in r.content.iter_chunked(256 * 1024):
        parts.append(piece)
    return b"".join(parts)


async def test_upload_limit_caps_all_transfers_together_and_max_clients_503(
    limited: tuple[NodeProcess, str],
) -> None:
    _, peer = limited
    url = f"{peer}/storage/models/asr/1.0/model.bin"
    want = expected_bytes("model.bin", BIG)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        t0 = time.monotonic()
        async with _opened(s, url) as a, _opened(s, url) as b:
            assert a.status == b.status == 200
            # both slots taken: a third transfer is refused, ?have and HEAD are not transfers
            async with s.get(url, headers=AUTH) as c:
                assert c.status == 503 and c.headers["Retry-After"] == "1"
                assert (await c.json())["error"]["code"] == "busy"
            async with s.get(url + "?have", headers=AUTH) as h:
                assert h.status == 200
            async with s.head(url, headers=AUTH) as h:
                assert h.status == 200
            got_a, got_b = await asyncio.gather(_read_all(a), _read_all(b))
        elapsed = time.monotonic() - t0
    assert got_a == want and got_b == want
    # 2 x 6 MiB at 2 MiB/s in all: about 6 s; the bucket's burst and the socket
    # buffers may carry a little more at first. Loosely: well over 3 s.
    assert elapsed >= 4.0, f"{2 * BIG} bytes in {elapsed:.2f} s: the upload limit did not hold"
    # slots free again once the transfers ended
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, headers={**AUTH, "Range": "bytes=0-9"}) as r,
    ):
        assert r.status == 206 and await r.read() == want[:10]


async def test_a_version_removed_mid_transfer_finishes_it_and_404s_new_requests(
    limited: tuple[NodeProcess, str],
) -> None:
    node, peer = limited
    url = f"{peer}/storage/models/asr/2.0/other.bin"
    want = expected_bytes("other.bin", BIG)
    version_dir = Path(next(r["path"] for r in _state(node)["models"] if r["version"] == "2.0"))
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.get(url, headers=AUTH) as r:
        assert r.status == 200
        head = await r.content.readexactly(MiB)
        status, _ = await asyncio.to_thread(
            _post, node.url + "/api/remove", {"model_id": "asr", "version": "2.0"}
        )
        assert status == 200
        await until(lambda: not version_dir.exists(), what="the version dir gone")
        # new requests: not found (the registry no longer lists it)
        for tail in ("", "?have"):
            async with s.get(url + tail, headers=AUTH) as again:
                assert again.status == 404
                assert (await again.json())["error"]["code"] == "not_found"
        rest = await _read_all(r)
    assert head + rest == want  # the open transfer finished from the unlinked file
    assert not os.path.exists(version_dir)
