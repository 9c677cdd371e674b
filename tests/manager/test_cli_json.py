"""One NDJSON schema (issue 14): every line has `event` and `schema`, model lines have
`model_id`; progress lines carry only the files that changed; --json --quiet prints
results and errors only; usage errors are JSON too; `accel schema events` documents it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.manager.hubstub import StubHub, publish


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accel", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_install_json_lines_share_one_schema(store: Path, hub: StubHub, models_dir: Path) -> None:
    files: dict[str, int | bytes] = {f"f{i:02d}.bin": 2000 for i in range(20)}
    files["big.bin"] = 3 << 20
    publish(store, "m", "1", files)
    env = dict(os.environ, ACCEL_MODELS_DIR=str(models_dir), ACCEL_HUB=hub.url)
    r = run(["install", "m@1", "--json", "--limit-rate", "4M"], env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(line["schema"] == 1 and "event" in line for line in lines)
    assert all(line["model_id"] == "m" for line in lines)
    progress = [line for line in lines if line["event"] == "progress"]
    assert len(progress) >= 3
    assert len(progress[0]["files"]) == 21  # the first carries every file ...
    # ... later ones only those whose figures changed since the line before (how many
    # that is depends on timing: under load ten small files can finish between lines).
    last = {f["path"]: f for f in progress[0]["files"]}
    for p in progress[1:]:
        for f in p["files"]:
            before = last[f["path"]]
            assert (before["state"], before["bytes_done"]) != (f["state"], f["bytes_done"]), f
            last[f["path"]] = f
    assert len(last) == 21 and all(f["bytes_done"] == f["bytes_total"] for f in last.values())
    assert lines[-1]["event"] == "result" and lines[-1]["version"] == "1"


def test_json_quiet_prints_only_results_and_errors(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 100_000})
    env = dict(os.environ, ACCEL_MODELS_DIR=str(models_dir), ACCEL_HUB=hub.url)
    r = run(["install", "m@1", "m@7", "--json", "--quiet"], env)
    assert r.returncode == 1
    events = sorted(json.loads(line)["event"] for line in r.stdout.splitlines())
    assert events == ["error", "failed", "result"], events


def test_usage_errors_are_json_under_json_and_the_schema_is_exported(models_dir: Path) -> None:
    env = dict(os.environ, ACCEL_MODELS_DIR=str(models_dir))
    r = run(["install", "--json", "--limit-rate", "fast", "m"], env)
    assert r.returncode == 2
    err = json.loads(r.stdout)
    assert err["event"] == "error" and err["code"] == "usage_error" and err["schema"] == 1
    r = run(["schema", "events"], env)
    doc = json.loads(r.stdout)
    names = set(doc["$defs"])
    assert {"ProgressEvent", "ReadyEvent", "FailedEvent", "ResumeEvent"} <= names
