"""Crash loop at the ModelManager level: a multi-file install SIGKILLed at random moments.

After every kill: ``registry.json`` parses and validates, a version recorded ready has
every file whole and verified. At the end: ready and verified, the origin sent at most
the version's size plus 64 MiB per kill, the killed process's workers exited, and no
lock record survives the start-up cleanup. Default suite: 5 kills; ``ACCEL_SOAK=1``: 30.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from accel.manager.manager import ModelManager
from accel.schema import Registry
from tests.reliability.crashloop import crash_loop, install_kill_window
from tests.reliability.figures import record_figure
from tests.reliability.store import publish_catalog
from tests.support.faultproxy import FaultProxy
from tests.support.hub import running_hub

SOAK = os.environ.get("ACCEL_SOAK") == "1"
MiB = 1024 * 1024
MODEL, VERSION = "crash-model", "1.0"


def version_spec(scale: int) -> dict[str, int]:
    return {
        "weights/part-1.bin": 12 * MiB * scale,
        "weights/part-2.bin": 9 * MiB * scale,
        "weights/part-3.bin": 7 * MiB * scale,
        "tokenizer.json": 300_000,
        "config.json": 1_000,
        "empty.txt": 0,
    }


@pytest.mark.timeout(1800 if SOAK else 150)
def test_install_killed_repeatedly_ends_ready_and_verified(tmp_path: Path) -> None:
    files = publish_catalog(tmp_path / "store", {(MODEL, VERSION): version_spec(3 if SOAK else 1)})[
        (MODEL, VERSION)
    ]
    size = sum(len(b) for b in files.values())
    models = tmp_path / "models"
    kills = 30 if SOAK else 5
    registry_checks = 0

    def check(_: int) -> None:
        nonlocal registry_checks
        reg_path = models / "registry.json"
        if not reg_path.exists():
            return
        reg = Registry.model_validate(json.loads(reg_path.read_bytes()))
        registry_checks += 1
        for rec in reg.installs.values():
            if rec.state == "ready":
                for f in rec.files:
                    data = (Path(rec.path) / f.path).read_bytes()
                    assert hashlib.sha256(data).hexdigest() == f.sha256, f.path

    with (
        running_hub(tmp_path / "store") as hub,
        FaultProxy(hub.url) as proxy,
    ):
        argv = ["-m", "tests.reliability.drivers", "install", str(models), proxy.url]
        argv += [MODEL, VERSION, "3M" if SOAK else "4M"]
        report = crash_loop(
            argv,
            kills=kills,
            seed=3,
            **install_kill_window(SOAK),
            check=check,
            progress=lambda: proxy.client_body_bytes,
        )
        sent = proxy.client_body_bytes
    line = (
        f"{report.kills} kills, {report.finished_early} early, "
        f"origin sent {sent / MiB:.1f} MiB for {size / MiB:.1f} MiB "
        f"({(sent - size) / max(report.kills, 1) / MiB:.1f} MiB extra per kill, budget 64), "
        f"{registry_checks} registry parses OK, orphans {len(report.orphans)}, "
        f"final rc {report.final_rc}, {report.elapsed_s:.1f} s"
    )
    record_figure(
        "crash_loop_install",
        f"{len(files)}-file install (ModelManager, limit 3M) SIGKILLed U(0.1, 1.2) s after "
        "its first byte, restarted",
        line,
    )
    print(
        f"crash loop (install): {report.kills} kills, {report.finished_early} early, "
        f"origin sent {sent / MiB:.1f} MiB for {size / MiB:.1f} MiB, "
        f"{registry_checks} registry checks, {report.elapsed_s:.1f} s"
    )
    assert report.final_rc == 0, report.final_err[-3000:]
    assert report.finished_early == 0, "the install finished before it was killed enough"
    assert report.orphans == [], "worker processes outlived their killed parent"
    assert registry_checks >= kills - 1
    assert sent <= size + report.kills * 64 * MiB
    out = json.loads(report.final_out.strip().splitlines()[-1])
    assert not any(out["bad"].values())
    vdir = Path(out["path"])
    for rel, data in files.items():
        assert (vdir / rel).read_bytes() == data
    leftovers = [
        p
        for p in vdir.rglob("*")
        if p.is_file() and p.name.endswith((".part", ".json.part", ".part.json"))
    ]
    assert leftovers == []
    mm = ModelManager(models, None)  # its start-up cleans records of dead holders
    try:
        assert mm.get_model_path(MODEL, VERSION) == vdir
        assert mm.lock_records() == [], mm.lock_records()
    finally:
        mm.close()
