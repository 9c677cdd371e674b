"""``accel serve``: start-up errors are one clear line, and SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support.hub import REPO, running_hub


def test_port_in_use_is_a_clear_error(tmp_path: Path, accel_cmd: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [*accel_cmd, "serve", "--root", str(tmp_path), "--port", str(port)],
            capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
        )  # fmt: skip
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_token_and_tokens_file_are_exclusive(tmp_path: Path, accel_cmd: list[str]) -> None:
    out = subprocess.run(
        [*accel_cmd, "serve", "--root", str(tmp_path), "--token", "a", "--tokens-file", "f"],
        capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2 and "not allowed with" in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--header-timeout", "0"],
        ["--header-timeout", "-1"],
        ["--header-timeout", "nan"],
        ["--max-connections", "0"],
    ],
)
def test_bad_listener_limits_are_one_line(
    tmp_path: Path, accel_cmd: list[str], args: list[str]
) -> None:
    out = subprocess.run(
        [*accel_cmd, "serve", "--root", str(tmp_path), *args],
        capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2 and args[0] in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_sigterm_stops_cleanly_and_empty_store_serves(tmp_path: Path) -> None:
    with running_hub(tmp_path / "new-store") as hub:
        with urllib.request.urlopen(f"{hub.url}/api/models") as r:
            assert r.read() == b"[]"
        hub.proc.send_signal(signal.SIGTERM)
        assert hub.proc.wait(10) == 0
    assert (tmp_path / "new-store" / "usage.sqlite3").exists()
