"""Crash loop of a staged update: ``accel``'s update of a re-published version SIGKILLed
at random moments, then run to its end.

After every kill: ``registry.json`` parses, the version is still ``ready`` at its path,
and every file there is whole: it matches the ready record, or (killed between the swap
and its record) the staged record whose swap the next start-up finishes. At the end:
the new content is ready, no staging, trash or lock record is left, the killed
processes' workers exited, and the origin sent at most the changed bytes plus 64 MiB per
kill. Default suite: 5 kills; ``ACCEL_SOAK=1``: 30.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from accel.manager.manager import ModelManager
from accel.schema import Registry
from tests.manager.hubstub import publish, republish_file, running_stub
from tests.reliability.crashloop import crash_loop, install_kill_window
from tests.reliability.figures import record_figure

SOAK = os.environ.get("ACCEL_SOAK") == "1"
MiB = 1024 * 1024
KEY = "m@1"


@pytest.mark.timeout(1800 if SOAK else 150)
def test_update_killed_repeatedly_keeps_the_version_usable_and_ends_updated(
    tmp_path: Path,
) -> None:
    scale = 3 if SOAK else 1
    store, models = tmp_path / "store", tmp_path / "models"
    (store / "models").mkdir(parents=True)
    publish(store, "m", "1", {"a.bin": 10 * MiB, "b.bin": 6 * MiB, "same.bin": 3 * MiB})
    new = {"a.bin": os.urandom(12 * MiB * scale), "b.bin": os.urandom(5 * MiB * scale)}
    changed = sum(len(b) for b in new.values())
    kills = 30 if SOAK else 5
    checks = 0

    def check(_: int) -> None:
        nonlocal checks
        reg = Registry.model_validate_json((models / "registry.json").read_bytes())
        rec = reg.installs[KEY]
        assert rec.state == "ready"
        staged = reg.updates.get(KEY)
        swapped = {f.path: f.sha256 for f in staged.files} if staged and staged.swap_ino else {}
        for f in rec.files:
            sha = hashlib.sha256((Path(rec.path) / f.path).read_bytes()).hexdigest()
            assert sha in (f.sha256, swapped.get(f.path)), f"{f.path} is neither old nor new"
        checks += 1

    with running_stub(store) as hub:
        mm = ModelManager(models, hub.url, workers=1)
        try:
            mm.install("m", "1")
        finally:
            mm.close()
        for rel, data in new.items():
            republish_file(store, "m", "1", rel, data)
        before = hub.storage_bytes()
        argv = ["-m", "tests.manager.updater", str(models), hub.url]
        # Slow enough for its kills: a kill keeps what the running chunks wrote, so
        # 17 MiB at 4 MB/s could end before the fifth kill (U(0.2, 1.5) s apart); at
        # 2 MB/s more kills land mid-chunk (where a resumed probe once asked for an
        # empty range: tests/fetch/test_probe.py).
        argv.append("--limit-rate=3M" if SOAK else "--limit-rate=2M")
        report = crash_loop(
            argv,
            kills=kills,
            seed=5,
            **install_kill_window(SOAK),
            check=check,
            progress=lambda: hub.storage_bytes("/storage/"),
        )
        sent = hub.storage_bytes() - before
    line = (
        f"{report.kills} kills, {report.finished_early} early, origin sent "
        f"{sent / MiB:.1f} MiB for {changed / MiB:.1f} MiB changed "
        f"({(sent - changed) / max(report.kills, 1) / MiB:.1f} MiB extra per kill, "
        f"budget 64), {checks} checks: ready and whole after every kill, "
        f"orphans {len(report.orphans)}, final rc {report.final_rc}, {report.elapsed_s:.1f} s"
    )
    record_figure(
        "crash_loop_update",
        "staged update of a re-published 3-file version (2 files changed, limit "
        f"{'3M' if SOAK else '2M'}) SIGKILLed U(0.1, 1.2) s after its first byte, restarted",
        line,
    )
    print(f"crash loop (update): {line}")
    assert report.final_rc == 0, report.final_err[-3000:]
    assert report.finished_early == 0, "the update finished before it was killed enough"
    assert report.orphans == [], "worker processes outlived their killed parent"
    assert checks == report.kills
    assert json.loads(report.final_out.strip().splitlines()[-1]) == {"updated": [KEY]}
    assert sent <= changed + report.kills * 64 * MiB
    vdir = models / "m" / "1"
    for rel, data in new.items():
        assert (vdir / rel).read_bytes() == data
    assert (vdir / "same.bin").stat().st_size == 3 * MiB
    state = models / ".accel"
    assert [p for d in ("staging", "trash") for p in (state / d).glob("*")] == []
    mm = ModelManager(models, None)  # its start-up cleans records of dead holders
    try:
        reg = Registry.model_validate_json((models / "registry.json").read_bytes())
        assert reg.updates == {}
        assert mm.get_model_path("m", "1") == vdir
        assert mm.lock_records() == [], mm.lock_records()
    finally:
        mm.close()
