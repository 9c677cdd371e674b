"""Several hubs behind one address: two real hubs (``accel serve``), nginx as the load
balancer (an ``upstream`` with both), a real PostgreSQL for the counts and the publish
notices, and one store they share (a directory, or the S3 fixture where S3 is the point).

Short versions of the figures (bench/bench_several_hubs.py runs the full ones): reports
spread over both hubs counted exactly and read the same from either; an install through
the balancer that survives one hub killed under it; a publish seen by both hubs (at
once with a notice, within 10 s without); /healthz 503 when the database is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from accel.schema import VersionManifest
from tests.support.balancer import Balancer, start_balancer
from tests.support.hub import REPO, RunningHub, make_files, publish_model, running_hub
from tests.support.postgres import Postgres, running_postgres
from tests.support.s3 import S3Bucket, run_accel, running_s3_hub
from tests.support.wait import wait_until

MiB = 1024 * 1024


def _get(url: str, timeout: float = 10) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _ranking(url: str) -> list[dict[str, Any]]:
    status, body = _get(f"{url}/api/model-usage/ranking?limit=1000")
    assert status == 200, body
    return list(body)


Fleet = tuple[RunningHub, RunningHub, Balancer]

SPREAD_MODELS = ["asr-a", "asr-b", "mt-c"]
BIG: dict[str, int | bytes] = {"model.bin": 12 * MiB + 77}
BIG.update({f"shards/s-{i:02}.bin": 4000 + i for i in range(12)})


@pytest.fixture(scope="module")
def fleet_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet") / "store"
    for mid in SPREAD_MODELS:
        publish_model(root, mid, "1.0", {"w.bin": 100})
    publish_model(root, "big", "1.0", BIG, block_size=MiB)
    return root


@pytest.fixture(scope="module")
def fleet(fleet_store: Path, postgres: Postgres) -> Iterator[Fleet]:
    """Two hubs over one directory store and one database, nginx in front of both."""
    args = ["--usage-db", postgres.create_database()]
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(running_hub(fleet_store, extra_args=args))
        b = stack.enter_context(running_hub(fleet_store, extra_args=args))
        lb = stack.enter_context(start_balancer([a.url, b.url]))
        yield a, b, lb


def _counts(url: str) -> Counter[str]:
    return Counter({r["model_id"]: r["request_count"] for r in _ranking(url)})


def _ranked(counts: Counter[str]) -> list[dict[str, Any]]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"model_id": m, "request_count": n, "rank": i} for i, (m, n) in enumerate(ordered, 1)]


async def _report_all(urls: list[str], model_ids: list[str], n: int) -> list[tuple[str, int]]:
    """``n`` concurrent POST /api/model-usage, spread over ``urls`` and ``model_ids``."""
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> tuple[str, int]:
            mid = model_ids[i % len(model_ids)]
            async with session.post(
                f"{urls[i % len(urls)]}/api/model-usage", json={"model_id": mid}
            ) as r:
                await r.read()
                return mid, r.status

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_reports_spread_over_two_hubs_are_counted_exactly_in_both_rankings(fleet: Fleet) -> None:
    a, b, lb = fleet
    before = _counts(a.url)
    answers = asyncio.run(_report_all([a.url, b.url, lb.url], SPREAD_MODELS, 300))
    assert Counter(status for _, status in answers) == {200: 300}
    want = _ranked(before + Counter(mid for mid, _ in answers))
    # Every report answered 200 is in the ranking of every hub within 2 s.
    deadline = time.monotonic() + 2
    while True:
        seen = [_ranking(a.url), _ranking(b.url), _ranking(lb.url)]
        if all(r == want for r in seen) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen == [want, want, want]
    # The balancer really spread them: both hubs answered some of its requests.
    ups = " ".join(lb.upstreams())
    assert f"127.0.0.1:{a.port}" in ups and f"127.0.0.1:{b.port}" in ups


def test_a_hub_with_an_unreachable_database_says_so_in_one_line(hub_root: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    r = run_accel("serve", "--root", str(hub_root), "--port", "0", "--usage-db",
                  f"postgresql://accel:secret-pw@127.0.0.1:{port}/hubs", env=dict(os.environ))  # fmt: skip
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accel: error [usage_db_unavailable]:"), lines
    assert "cannot connect" in lines[0] and "secret-pw" not in r.stderr
    bad = run_accel(
        "serve", "--root", str(hub_root), "--usage-db", "mysql://x/y", env=dict(os.environ)
    )
    assert bad.returncode != 0 and "not a postgresql:// URL" in bad.stderr
    assert "Traceback" not in r.stderr + bad.stderr


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of this test's own: the test stops and starts it."""
    with running_postgres() as server:
        yield server


def test_healthz_is_503_while_the_database_is_gone_and_a_refused_report_is_not_counted(
    hub_root: Path, own_postgres: Postgres
) -> None:
    publish_model(hub_root, "m", "1.0", {"w.bin": 100})
    url = own_postgres.create_database()
    with running_hub(hub_root, extra_args=["--usage-db", url, "--report-timeout", "1"]) as hub:
        assert _get(f"{hub.url}/healthz") == (200, {"status": "ok"})
        assert asyncio.run(_report_all([hub.url], ["m"], 20)) == [("m", 200)] * 20
        own_postgres.stop()
        deadline = time.monotonic() + 10
        while (health := _get(f"{hub.url}/healthz"))[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body = health
        assert status == 503, body
        assert body["store"] == "ok" and body["usage_db"] != "ok"
        assert body["error"]["code"] == "unhealthy"
        # A report it cannot commit is refused, and so not counted
        [(_, refused)] = asyncio.run(_report_all([hub.url], ["m"], 1))
        assert refused == 503
        status, body = _get(f"{hub.url}/api/model-usage/ranking")
        assert status == 503 and body["error"]["code"] == "usage_db_unavailable"
        # The catalog and manifests need no database: installs keep working
        status, manifest = _get(f"{hub.url}/api/models/m/versions/1.0/manifest")
        assert status == 200 and manifest["version"] == "1.0"
        own_postgres.start()
        deadline = time.monotonic() + 15
        while _get(f"{hub.url}/healthz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(f"{hub.url}/healthz") == (200, {"status": "ok"})
        # 20 answered + the manifest fetch (counted when the database came back)
        want = [{"model_id": "m", "request_count": 21, "rank": 1}]
        wait_until(lambda: _ranking(hub.url) == want, what="all 21 counts", timeout=10)


def test_healthz_is_503_when_the_store_cannot_be_read(hub_root: Path, pg_url: str) -> None:
    publish_model(hub_root, "m", "1.0", {"w.bin": 100})
    with running_hub(hub_root, extra_args=["--usage-db", pg_url]) as hub:
        assert _get(f"{hub.url}/healthz")[0] == 200
        hidden = hub_root.with_name("store-gone")
        hub_root.rename(hidden)  # the store's mount went away
        try:
            deadline = time.monotonic() + 5
            while (health := _get(f"{hub.url}/healthz"))[0] != 503 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert health[0] == 503 and health[1]["store"] != "ok", health
            assert health[1]["usage_db"] == "ok"
        finally:
            hidden.rename(hub_root)
        wait_until(lambda: _get(f"{hub.url}/healthz")[0] == 200, what="healthz 200", timeout=5)


def _install_json(hub_url: str, models_dir: Path, spec: str, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    for k in ("ACCEL_HUB", "ACCEL_TOKEN", "ACCEL_MODELS_DIR"):
        env.pop(k, None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "accel",
            "install",
            spec,
            "--hub",
            hub_url,
            "--models-dir",
            str(models_dir),
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_an_install_through_the_balancer_survives_a_hub_killed_under_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    a, b, lb = fleet
    manifest = VersionManifest.model_validate_json(
        (a.root / "models" / "big" / "1.0" / "manifest.json").read_bytes()
    )
    before = _counts(a.url)
    proc = _install_json(lb.url, tmp_path / "models", "big@1.0", "--limit-rate", "6M")
    assert proc.stdout is not None
    killed = False
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        event = json.loads(line)
        done = (event.get("total") or {}).get("bytes_done", event.get("bytes_done", 0))
        if not killed and event.get("type") == "progress" and done >= 3 * MiB:
            os.kill(a.proc.pid, signal.SIGKILL)  # mid-install, chunks in flight on it
            a.proc.wait()
            killed = True
    assert proc.wait(120) == 0, (lines[-5:], proc.stderr.read() if proc.stderr else "")
    assert killed, "the install ended before the hub could be killed"
    for f in manifest.files:
        path = tmp_path / "models" / "big" / "1.0" / f.path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
    a.restart()  # the killed hub comes back on its port, and reads the same counts
    want = _ranked(before + Counter({"big": 1}))
    wait_until(
        lambda: [_ranking(a.url), _ranking(b.url)] == [want, want],
        what="the install counted on both hubs",
        timeout=2,
    )


def test_a_publish_notice_reaches_every_hub_at_once(
    s3_bucket: S3Bucket, pg_url: str, tmp_path: Path
) -> None:
    make_files(tmp_path / "v1", {"w.bin": 1000})
    make_files(tmp_path / "v2", {"w.bin": 2000})
    env = s3_bucket.env
    r = run_accel("publish", str(tmp_path / "v1"), "--root", s3_bucket.url, "--model", "m",
                  "--version", "1.0", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Polling every 10 minutes: only the notice can make the new version visible in time
    args = ("--usage-db", pg_url, "--catalog-poll", "600")
    with (
        running_s3_hub(s3_bucket, tmp_path / "a", *args) as a,
        running_s3_hub(s3_bucket, tmp_path / "b", *args) as b,
    ):
        for hub in (a, b):
            assert [v["version"] for v in _get(f"{hub.url}/api/models/m")[1]["versions"]] == ["1.0"]
        _wait_listening(pg_url, 2)
        r = run_accel("publish", str(tmp_path / "v2"), "--root", s3_bucket.url, "--model", "m",
                      "--version", "2.0", "--notify-db", pg_url, env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        published = time.monotonic()
        for hub in (a, b):
            while True:
                versions = [v["version"] for v in _get(f"{hub.url}/api/models/m")[1]["versions"]]
                if versions == ["1.0", "2.0"]:
                    break
                assert time.monotonic() - published < 5, (versions, hub.log()[-2000:])
                time.sleep(0.05)


def _wait_listening(url: str, n: int) -> None:
    """Until ``n`` sessions LISTEN on the database (the hubs' catalog feeds)."""
    import psycopg

    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN %%'"
            ).fetchone()
            if row is not None and row[0] >= n:
                return
            assert time.monotonic() < deadline, row
            time.sleep(0.05)


def test_a_version_put_straight_into_the_store_is_seen_by_every_hub_within_10_s(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    make_files(tmp_path / "v1", {"w.bin": 1000})
    env = s3_bucket.env
    with (
        running_s3_hub(s3_bucket, tmp_path / "a") as a,
        running_s3_hub(s3_bucket, tmp_path / "b") as b,
        start_balancer([a.url, b.url]) as lb,
    ):
        assert _get(f"{lb.url}/api/models")[1] == []
        r = run_accel(
            "publish",
            str(tmp_path / "v1"),
            "--root",
            s3_bucket.url,
            "--model",
            "m",
            "--version",
            "1.0",
            env=env,
        )  # fmt: skip (no notice: the poll finds it)
        assert r.returncode == 0, r.stderr
        published = time.monotonic()
        for url in (a.url, b.url, lb.url, lb.url):
            while [m["id"] for m in _get(f"{url}/api/models")[1]] != ["m"]:
                assert time.monotonic() - published < 10
                time.sleep(0.1)


def test_workers_of_one_hub_count_into_the_database_named_in_the_environment(
    hub_root: Path, pg_url: str
) -> None:
    import psutil
    import psycopg

    publish_model(hub_root, "m", "1.0", {"w.bin": 100})
    env = dict(os.environ, ACCEL_USAGE_DB=pg_url, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "accel",
            "serve",
            "--root",
            str(hub_root),
            "--port",
            "0",
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " at http://" in line and "(2 workers)" in line, line
        url = line.split(" at ", 1)[1].split()[0]
        assert asyncio.run(_report_all([url], ["m"], 40)) == [("m", 200)] * 40
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute("SELECT request_count FROM accel_usage WHERE model_id = 'm'")
            assert row.fetchone() == (40,)
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        for p in [psutil.Process(proc.pid), *children]:
            assert not any("postgresql://" in arg for arg in p.cmdline())  # no password in ps
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
