"""Stress: many models installing at once, and many start/stop cycles (seed 4.3).

- ten models installing at the same time on one manager: all ready, verified, the
  registry consistent, each ``ready`` event once;
- start/stop cycles: each cycle either pauses and resumes installs in process, stops
  the manager mid-install (graceful), or SIGKILLs a process installing several models;
  afterwards every model reaches ready and verified, the registry is consistent and no
  lock record is left. Default suite: 10 cycles; ``ACCEL_SOAK=1``: 100.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from accel.manager.events import ReadyEvent, StateEvent
from accel.manager.manager import ModelManager
from accel.schema import Registry
from tests.reliability.crashloop import REPO
from tests.reliability.figures import record_figure
from tests.reliability.store import Catalog, Expected, publish_catalog
from tests.support.faultproxy import FaultProxy
from tests.support.hub import running_hub

SOAK = os.environ.get("ACCEL_SOAK") == "1"
MiB = 1024 * 1024


def catalog(n_models: int, seed: int, scale: float = 1.0) -> Catalog:
    rnd = random.Random(seed)
    out: Catalog = {}
    for m in range(n_models):
        spec = {f"model-{i}.bin": int(rnd.randint(1, 3) * MiB * scale) for i in range(2)}
        spec["config.json"] = 200 + m
        out[(f"model-{m:02d}", "1.0")] = spec
    return out


def check_consistent(models: Path, expected: Expected) -> None:
    """Every model ready in the registry, with the exact bytes on disk."""
    reg = Registry.model_validate(json.loads((models / "registry.json").read_bytes()))
    for (model_id, version), files in expected.items():
        rec = reg.installs[f"{model_id}@{version}"]
        assert rec.state == "ready", (model_id, rec.state, rec.error)
        assert rec.bytes_done == rec.bytes_total == sum(len(b) for b in files.values())
        for rel, data in files.items():
            assert (Path(rec.path) / rel).read_bytes() == data


@pytest.mark.timeout(600 if SOAK else 120)
async def test_ten_models_install_at_once(tmp_path: Path) -> None:
    expected = publish_catalog(tmp_path / "store", catalog(10, seed=1, scale=3.0 if SOAK else 1.0))
    ids = [m for m, _ in expected]
    models = tmp_path / "models"
    events: list[object] = []
    # 4 MB/s per response keeps every install running long enough to overlap.
    with (
        running_hub(tmp_path / "store") as hub,
        FaultProxy(hub.url, trickle_bps=4_000_000) as proxy,
    ):
        async with ModelManager(models, proxy.url, workers=2, max_parallel_installs=10) as mm:
            mm.subscribe(events.append)
            paths = await asyncio.gather(*(mm.ainstall(m) for m in ids))
            bad = await mm.averify()
    assert len(set(paths)) == 10
    record_figure(
        "ten_models_at_once",
        "10 models x 3 files, one ModelManager(max_parallel_installs=10), 4 MB/s per response",
        f"{len(paths)} ready, verify clean: {not any(bad.values())}",
    )
    assert not any(bad.values()), bad
    check_consistent(models, expected)
    ready = [e.model_id for e in events if isinstance(e, ReadyEvent)]
    assert sorted(ready) == sorted(ids)
    # They really ran at the same time: all ten were downloading before the first ready.
    order = [(type(e).__name__, getattr(e, "state", None)) for e in events]
    first_ready = order.index(("ReadyEvent", None))
    downloading = {
        e.model_id
        for e in events[:first_ready]
        if isinstance(e, StateEvent) and e.state == "downloading"
    }
    assert len(downloading) == 10, downloading


def _kill_cycle(models: Path, hub_url: str, ids: list[str], wait_s: float) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.reliability.drivers",
            "install-many",
            str(models),
            hub_url,
            "8M",
            *ids,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


async def _remove_one(models: Path, model_id: str) -> int:
    async with ModelManager(models, None) as mm:
        return len(await mm.aremove(model_id))


async def _pause_cycle(models: Path, hub_url: str, ids: list[str], rnd: random.Random) -> None:
    async with ModelManager(models, hub_url, workers=1, limit_rate="8M") as mm:
        for m in ids:
            await mm.ainstall(m, wait=False)
        await asyncio.sleep(rnd.uniform(0.2, 0.8))
        victim = rnd.choice(ids)
        await mm.apause(victim)
        await asyncio.sleep(rnd.uniform(0.0, 0.3))
        await mm.aresume(victim)
        await asyncio.sleep(rnd.uniform(0.1, 0.5))
        # leaving the block stops the manager mid-install (graceful stop)


@pytest.mark.timeout(1800 if SOAK else 150)
def test_start_stop_cycles_end_consistent(tmp_path: Path) -> None:
    cycles = 100 if SOAK else 10
    expected = publish_catalog(tmp_path / "store", catalog(6, seed=2, scale=2.0))
    ids = [m for m, _ in expected]
    models = tmp_path / "models"
    rnd = random.Random(43)
    kinds: list[str] = []
    with running_hub(tmp_path / "store") as hub, FaultProxy(hub.url) as proxy:
        removed = 0
        for _ in range(cycles):
            chosen = rnd.sample(ids, rnd.randint(1, 4))
            if rnd.random() < 0.4:
                # Churn: remove a model so that later cycles always have work to interrupt.
                removed += asyncio.run(_remove_one(models, rnd.choice(ids)))
            if rnd.random() < 0.5:
                kinds.append("kill")
                _kill_cycle(models, proxy.url, chosen, rnd.uniform(0.5, 2.0))
            else:
                kinds.append("pause/stop")
                asyncio.run(_pause_cycle(models, proxy.url, chosen, rnd))
            reg_path = models / "registry.json"
            if reg_path.exists():  # absent only if no cycle got as far as writing it
                Registry.model_validate(json.loads(reg_path.read_bytes()))
        sent_before_final = proxy.client_body_bytes

        async def final() -> dict[str, list[str]]:
            async with ModelManager(models, proxy.url, workers=2, max_parallel_installs=6) as mm:
                await asyncio.gather(*(mm.ainstall(m) for m in ids))
                bad = await mm.averify()
                mm.cleanup_locks()
                assert mm.lock_records() == [], mm.lock_records()
                return bad

        bad = asyncio.run(final())
        sent = proxy.client_body_bytes
    size = sum(len(b) for files in expected.values() for b in files.values())
    record_figure(
        "start_stop_cycles",
        f"{cycles} cycles over 6 models: pause/resume + graceful stop, SIGKILL, removals",
        f"{kinds.count('kill')} kills, {kinds.count('pause/stop')} pause/stop, {removed} "
        f"removals; origin sent {sent / MiB:.1f} MiB for {size / MiB:.1f} MiB; all ready "
        "and verified, registry consistent, no lock records",
    )
    print(
        f"start/stop: {cycles} cycles ({kinds.count('kill')} kills, "
        f"{kinds.count('pause/stop')} pause/stop, {removed} removals), origin sent {sent / MiB:.1f} MiB "
        f"({sent_before_final / MiB:.1f} before the final run) for {size / MiB:.1f} MiB"
    )
    assert not any(bad.values()), bad
    check_consistent(models, expected)
    mm = ModelManager(models, None)
    try:
        assert mm.lock_records() == []
    finally:
        mm.close()
