"""Several processes installing into one models dir: exactly one fetches each version,
the others wait (or, with wait=False, hear 'downloading'); all end with the same path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from accel.errors import ModelNotAvailableError
from accel.manager import ModelManager
from accel.schema import Registry
from tests.manager.hubstub import StubHub, publish
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]


def spawn(
    models_dir: Path, hub: StubHub, *refs: str, extra: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.manager.installer", str(models_dir), hub.url, *refs, *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def results(procs: list[subprocess.Popen[str]]) -> list[dict[str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=150)
        assert p.returncode == 0, stderr
        out += [json.loads(line) for line in stdout.splitlines()]
    return out


def test_two_processes_same_version_fetch_it_once(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    manifest = publish(store, "m", "1", {"a.bin": 6_000_000, "b.bin": 2_000_000, "c.bin": 10_000})
    procs = [spawn(models_dir, hub, "m@1") for _ in range(2)]
    res = results(procs)
    assert [r["path"] for r in res] == [str(models_dir / "m" / "1")] * 2
    sent = hub.storage_bytes()
    assert manifest["size_bytes"] <= sent <= manifest["size_bytes"] * 1.05  # about once
    reg = Registry.model_validate_json((models_dir / "registry.json").read_bytes())
    assert reg.installs["m@1"].state == "ready"
    assert not list((models_dir / ".accel" / "locks").rglob("*.json"))  # records released


def test_ten_processes_five_models_each_fetched_once(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    total = 0
    for i in range(5):
        total += int(
            publish(store, f"m{i}", "1", {"w.bin": 1_500_000, "x.bin": 300_000})["size_bytes"]
        )  # type: ignore[call-overload]
    # every model wanted by two processes; each process wants two models
    procs = [spawn(models_dir, hub, f"m{i % 5}@1", f"m{(i + 1) % 5}@1") for i in range(10)]
    res = results(procs)
    assert len(res) == 20 and all("path" in r for r in res)
    assert total <= hub.storage_bytes() <= total * 1.05
    reg = Registry.model_validate_json((models_dir / "registry.json").read_bytes())
    assert sorted(reg.installs) == [f"m{i}@1" for i in range(5)]
    assert all(r.state == "ready" for r in reg.installs.values())


async def test_wait_false_while_another_process_downloads(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "slow", "1", {"a.bin": 20_000_000})
    proc = spawn(models_dir, hub, "slow@1", extra=("--limit-rate=5M",))
    try:
        async with ModelManager(models_dir, hub.url, workers=1) as mm:
            await until(
                lambda: mm.status("slow", "1") and mm.status("slow", "1")[0].state == "downloading",
                what="slow@1 downloading in the other process",
            )
            with pytest.raises(ModelNotAvailableError) as e:
                await mm.ainstall("slow", "1", wait=False)
            assert e.value.reason == "downloading" and f"pid {proc.pid}" in str(e.value)
            with pytest.raises(ModelNotAvailableError) as e:
                mm.get_model_path("slow", "1")
            assert e.value.reason == "downloading"
            # wait=True: waits for the other process, then answers with the same path
            path = await mm.ainstall("slow", "1")
            assert path == models_dir / "slow" / "1"
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert hub.storage_bytes() <= 20_000_000 * 1.05
