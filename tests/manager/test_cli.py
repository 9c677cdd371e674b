"""The model-management CLI as a user runs it: a real process, a real hub, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from accel.manager.registry import RegistryStore
from accel.schema import LockRecord, Registry
from tests.manager.hubstub import StubHub, publish, republish_file


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accel", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _env(hub: StubHub | None, models_dir: Path) -> dict[str, str]:
    env = dict(os.environ, ACCEL_MODELS_DIR=str(models_dir))
    env.pop("ACCEL_HUB", None)
    if hub is not None:
        env["ACCEL_HUB"] = hub.url
    return env


def test_path_exit_codes_and_reasons(store: Path, hub: StubHub, models_dir: Path) -> None:
    publish(store, "m", "1.0", {"a.bin": 100_000})
    env = _env(hub, models_dir)
    r = run(["path", "m"], env)
    assert r.returncode == 1 and r.stdout == ""
    assert "not_installed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run(["install", "m@1.0", "--json"], env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert {"progress", "ready", "result"} <= {line["type"] for line in lines}
    assert lines[-1] == {
        "event": "result",
        "type": "result",
        "model": "m@1.0",
        "model_id": "m",
        "version": "1.0",
        "path": str(models_dir / "m" / "1.0"),
        "schema": 1,
    }
    r = run(["path", "m@1.0"], env)
    assert r.returncode == 0 and r.stdout == f"{models_dir / 'm' / '1.0'}\n"
    assert run(["path", "m"], env).stdout.strip() == str(models_dir / "m" / "1.0")

    def downloading(reg: Registry) -> None:
        reg.installs["m@1.0"].state = "downloading"
        reg.installs["m@1.0"].owner_pid = None

    RegistryStore(models_dir).update(downloading)
    r = run(["path", "m@1.0"], env)
    assert r.returncode == 1 and "downloading" in r.stderr and r.stdout == ""


def test_usage_errors_exit_2(models_dir: Path) -> None:
    env = _env(None, models_dir)
    env.pop("ACCEL_MODELS_DIR")
    # no models dir given: the default one (here: none yet) is named, with the flag to use
    env["XDG_DATA_HOME"] = str(models_dir / "xdg-data")
    env["XDG_CONFIG_HOME"] = str(models_dir / "xdg-config")
    r = run(["path", "m"], env)
    default = models_dir / "xdg-data" / "accel" / "models"
    if not os.geteuid():
        default = Path("/var/lib/accel/models")  # root's default: outside the test's control
    if default.exists():  # e.g. an earlier `accel install` as root made it: it is used
        assert r.returncode == 1 and "accel install m" in r.stderr, r.stderr
    else:
        assert r.returncode == 1 and "--models-dir" in r.stderr
        assert str(default) in r.stderr
    r = run(["install", "m"], _env(None, models_dir))
    assert r.returncode == 2 and "ACCEL_HUB" in r.stderr
    r = run(["preseed"], _env(None, models_dir))
    assert r.returncode == 2


def test_install_failure_exit_1_and_status_names_the_file(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 10_000, "gone.bin": 20_000})
    (store / "models" / "m" / "1" / "files" / "gone.bin").unlink()
    env = _env(hub, models_dir)
    r = run(["install", "m@1", "--quiet"], env)
    assert r.returncode == 1 and "gone.bin" in r.stderr
    r = run(["status", "m"], env)
    assert "m@1\terror" in r.stdout and "gone.bin" in r.stdout


def test_update_cli_a_failed_update_leaves_the_path_usable_and_status_shows_it(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1", {"a.bin": 50_000, "b.bin": 10_000})
    env = _env(hub, models_dir)
    assert run(["install", "m@1", "--quiet"], env).returncode == 0
    old = (models_dir / "m" / "1" / "a.bin").read_bytes()
    new = os.urandom(60_000)
    republish_file(store, "m", "1", "a.bin", new)
    served = store / "models" / "m" / "1" / "files" / "a.bin"
    served.write_bytes(os.urandom(60_000))  # the hub serves bytes its manifest disowns
    r = run(["update"], env)
    assert r.returncode == 1 and "a.bin" in r.stderr, r.stderr
    r = run(["path", "m@1"], env)  # the job scheduler's view: still usable, old bytes
    assert r.returncode == 0 and r.stdout.strip() == str(models_dir / "m" / "1")
    assert (models_dir / "m" / "1" / "a.bin").read_bytes() == old
    r = run(["status", "m"], env)
    assert "m@1\tready" in r.stdout and "update to" in r.stdout and "\terror" in r.stdout
    served.write_bytes(new)  # the hub is repaired
    r = run(["update"], env)
    assert r.returncode == 0 and "updated m@1" in r.stdout, r.stderr
    assert (models_dir / "m" / "1" / "a.bin").read_bytes() == new
    assert "update to" not in run(["status", "m"], env).stdout


def test_preseed_top_locks_clean_and_logs_export(
    store: Path, hub: StubHub, models_dir: Path, tmp_path: Path
) -> None:
    for name in ("a", "b", "c"):
        publish(store, name, "1", {"f.bin": 10_000})
    (store / "usage.json").write_text(json.dumps({"a": 5, "b": 9, "c": 1}))
    env = _env(hub, models_dir)
    r = run(["preseed", "--top", "2", "--quiet"], env)
    assert r.returncode == 0, r.stderr
    r = run(["list", "--json"], env)
    assert sorted(json.loads(line)["model_id"] for line in r.stdout.splitlines()) == ["a", "b"]
    # a record left by a process that died
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = time.time()
    rec = LockRecord(
        pid=proc.pid,
        hostname="h",
        process_start_time=now,
        model_id="x",
        version="1",
        created_at=now,
        heartbeat_at=now,
        timeout_s=60,
    )
    import socket

    rec.hostname = socket.gethostname()
    locks = models_dir / ".accel" / "locks" / "tasks"
    (locks / "x@1.json").write_text(rec.model_dump_json())
    r = run(["locks", "--json"], env)  # start-up cleanup already removes the dead record
    assert r.returncode == 0 and r.stdout == ""
    assert not (locks / "x@1.json").exists()
    r = run(["logs", "export", str(tmp_path / "r.tar.gz")], env)
    assert r.returncode == 0
    with tarfile.open(tmp_path / "r.tar.gz") as tar:
        assert "accel-report/registry.json" in tar.getnames()


def test_install_lines_when_not_a_tty(store: Path, hub: StubHub, models_dir: Path) -> None:
    publish(store, "m", "1", {"a.bin": 300_000, "b.bin": 1000})
    r = run(["install", "m@1"], _env(hub, models_dir))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{models_dir / 'm' / '1'}\n"  # stdout: the path alone
    lines = r.stderr.splitlines()
    assert "m@1: downloading" in lines
    assert any(
        line.startswith(f"ready m@1 -> {models_dir / 'm' / '1'} (fetched ") for line in lines
    )
    assert any(" | total " in line and "ETA" in line for line in lines)
    assert "\x1b[" not in r.stderr  # no terminal control codes in a log


def test_install_progress_on_a_terminal(store: Path, hub: StubHub, models_dir: Path) -> None:
    """Under a real pseudo-terminal (util-linux ``script``) rich draws the version's bar,
    one line per file being fetched and a total line, then says where it is ready."""
    publish(store, "t", "1", {"weights/big.bin": 24_000_000, "tok.json": 2_000})
    env = _env(hub, models_dir)
    cmd = f"{sys.executable} -m accel install t@1 --limit-rate 12MB/s"
    r = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout
    out = r.stdout
    assert "━" in out and "total" in out and "MiB/s" in out
    assert "  weights/big.bin" in out  # the file's own line while it downloads
    assert "ready t@1 -> " in out  # (rich wraps the long path at the pty's width)
    assert out.rstrip().endswith(str(models_dir / "t" / "1"))  # stdout: the path
