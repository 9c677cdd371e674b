"""Commands that say what they found, and errors that name the real cause (issue 14).

Each case runs the real CLI against the stub hub on loopback and reads what a person
reads: exit code, stdout, and one error line on stderr.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.manager.hubstub import StubHub, publish


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


def _one_error_line(r: subprocess.CompletedProcess[str], code: str) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr  # one line: no progress display's own "failed ..." line
    assert lines[0].startswith(f"accel: error [{code}]: "), lines[0]
    return lines[0]


def test_unknown_version_names_the_versions_that_exist_once(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    publish(store, "m", "1.0", {"a.bin": 1000})
    publish(store, "m", "1.1", {"a.bin": 1000})
    r = run(["install", "m@9.9"], _env(hub, models_dir))
    assert r.returncode == 1
    line = _one_error_line(r, "not_found")
    assert "1.0, 1.1" in line and "/api/" not in line and "accel install m@1.1" in line
    r = run(["install", "nosuch"], _env(hub, models_dir))
    line = _one_error_line(r, "not_found")
    assert "no model 'nosuch'" in line and "accel search" in line and "--hub URL" not in line


def test_verify_says_what_it_found(store: Path, hub: StubHub, models_dir: Path) -> None:
    env = _env(hub, models_dir)
    r = run(["verify"], env)
    assert r.returncode == 0 and "nothing installed" in r.stdout
    publish(store, "m", "1", {"a.bin": 50_000, "b.bin": 2000})
    assert run(["install", "m@1"], env).returncode == 0
    assert run(["install", "m@9"], env).returncode == 1  # leaves m@9 in error
    (models_dir / "m" / "1" / "b.bin").write_bytes(b"x" * 2000)
    r = run(["verify"], env)
    assert r.returncode == 1
    assert "m@1: DAMAGED 1 of 2 files: b.bin" in r.stdout
    assert "deleted them" in r.stdout and "accel install m@1" in r.stdout
    assert "m@9: not verified: its state is error" in r.stdout
    r = run(["verify", "nosuch"], env)
    assert r.returncode == 1 and "nothing to verify" in _one_error_line(r, "model_not_available")


def test_read_only_commands_do_not_create_a_mistyped_models_dir(tmp_path: Path) -> None:
    typo = tmp_path / "modles"
    env = _env(None, typo)
    for cmd in (["status"], ["list"], ["locks"], ["verify"], ["remove", "m"]):
        r = run(cmd, env)
        assert r.returncode == 1, (cmd, r.stderr)
        assert "no models dir at" in _one_error_line(r, "file_not_found")
    assert not typo.exists()


def test_locks_and_remove_say_what_they_found(models_dir: Path) -> None:
    env = _env(None, models_dir)
    r = run(["locks"], env)
    assert r.returncode == 0 and "no locks held" in r.stdout
    r = run(["remove", "nosuch"], env)
    line = _one_error_line(r, "model_not_available")
    assert "nothing to remove" in line and "accel install" not in line


def test_nothing_listening_is_not_reported_as_kept_chunks(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = run(
            ["get", f"http://127.0.0.1:{port}/x.bin", "-o", str(tmp_path / "x"), "-q"],
            dict(os.environ),
        )
    assert r.returncode == 1
    line = _one_error_line(r, "download_failed")
    assert f"nothing listens at 127.0.0.1:{port}" in line and "chunks are kept" not in line


def test_a_wrong_size_is_a_size_mismatch(store: Path, hub: StubHub, tmp_path: Path) -> None:
    publish(store, "m", "1", {"a.bin": 100_000})
    url = f"{hub.url}/storage/models/m/1/a.bin"
    r = run(["get", url, "-o", str(tmp_path / "a"), "--size", "5000", "-q"], dict(os.environ))
    assert r.returncode == 1
    line = _one_error_line(r, "size_mismatch")
    assert "100000 bytes, expected 5000" in line and "rerun to refetch" not in line


def test_version_and_usage_errors_read_once(models_dir: Path) -> None:
    env = _env(None, models_dir)
    r = run(["--version"], env)
    assert r.returncode == 0 and r.stdout.startswith("accel ")
    r = run(["install"], env)
    assert r.returncode == 2 and r.stderr.startswith("accel: install: ")
    assert "accel: accel" not in r.stderr


def test_a_hub_nothing_listens_on_is_said_in_words(models_dir: Path) -> None:
    """'connection refused', not '[Errno 111] Connection refused'."""
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = run(["install", "m", "--hub", f"http://127.0.0.1:{port}", "-q"], _env(None, models_dir))
    assert r.returncode == 1
    line = _one_error_line(r, "hub_error")
    assert f"cannot reach the hub at http://127.0.0.1:{port}: connection refused" in line
    assert "Errno" not in line
