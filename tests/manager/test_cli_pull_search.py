"""The ecosystem's conventions: `accel search`, `accel pull --local-dir`, aria2c/curl
flags on `accel get`, all against the stub hub on loopback with the real CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.manager.hubstub import StubHub, publish


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accel", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _env(hub: StubHub, models_dir: Path) -> dict[str, str]:
    return dict(os.environ, ACCEL_MODELS_DIR=str(models_dir), ACCEL_HUB=hub.url)


def test_search_lists_the_catalog_with_versions_sizes_and_the_pull_command(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "whisper-zh", "1.0", {"w.bin": 3 << 20}, default=False)
    publish(store, "whisper-zh", "1.1", {"w.bin": 2 << 20})
    publish(store, "marian-en", "2", {"m.bin": 1000})
    env = _env(hub, models_dir)
    r = run(["search"], env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("marian-en@2\t")
    assert lines[1].startswith("whisper-zh@1.1 (+1 more)\t2.0 MiB\t")
    assert lines[1].endswith("accel pull whisper-zh@1.1")
    r = run(["search", "WHISP"], env)
    assert r.stdout.count("\n") == 1 and "whisper-zh" in r.stdout
    r = run(["search", "nothing-like-it"], env)
    assert r.returncode == 0 and r.stdout.strip() == "no model matches"


def test_pull_installs_and_places_the_files_in_local_dir(
    store: Path, hub: StubHub, models_dir: Path, tmp_path: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 70_000, "sub/b.json": 300})
    local = tmp_path / "here"
    r = run(["pull", "m", "--local-dir", str(local)], _env(hub, models_dir))
    assert r.returncode == 0, r.stderr
    ready = models_dir / "m" / "1"
    assert r.stdout.splitlines()[0] == str(ready)
    assert "placed 2 files in" in r.stdout
    for rel in ("a.bin", "sub/b.json"):
        placed, src = local / rel, ready / rel
        assert (
            hashlib.sha256(placed.read_bytes()).digest()
            == hashlib.sha256(src.read_bytes()).digest()
        )
        assert placed.stat().st_ino == src.stat().st_ino  # a hard link: no second copy
    # pulling again is a no-op install and places the same files again
    assert (
        run(["pull", "m@1", "--local-dir", str(local), "-q"], _env(hub, models_dir)).returncode == 0
    )


def test_get_takes_aria2c_and_curl_flags(store: Path, hub: StubHub, tmp_path: Path) -> None:
    publish(store, "m", "1", {"a.bin": 8 << 20})
    url = f"{hub.url}/storage/models/m/1/a.bin"
    dest = tmp_path / "a.bin"
    args = ["get", url, "-o", str(dest), "-x", "4", "-s", "4", "-k", "1M", "-c"]
    r = run([*args, "--max-download-limit", "50M", "--json"], dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert dest.stat().st_size == 8 << 20
    assert '"connections": 4' in r.stdout.splitlines()[-1]
    helptext = run(["get", "--help"], dict(os.environ)).stdout
    for flag in ("--max-connection-per-server", "--split", "--min-split-size", "--continue"):
        assert flag in helptext
    assert "25M = 25 MiB/s" in helptext
