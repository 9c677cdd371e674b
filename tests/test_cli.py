import argparse
import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from accel._cli import status
from accel.cli import main


def test_unknown_subcommand_is_a_usage_error(accel_cmd: list[str]) -> None:
    proc = subprocess.run(
        [*accel_cmd, "no-such-command"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "accel" in proc.stderr


def _raising(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise exc

    return handler


def test_an_unexpected_exception_is_one_internal_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("ACCEL_DEBUG", raising=False)
    monkeypatch.setattr(status, "handler", _raising(RuntimeError("boom\n  on two lines")))
    assert main(["status", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "accel: error [internal]: RuntimeError: boom on two lines (this is a bug in accel: "
        "rerun with --debug or ACCEL_DEBUG=1 to see the traceback, and report it)"
    ]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_and_the_chained_os_error(
    how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("ACCEL_DEBUG", raising=False)
    argv = ["status", "--models-dir", str(tmp_path)]
    if how == "flag":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("ACCEL_DEBUG", "1")
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "registry.json"))
    monkeypatch.setattr(status, "handler", _raising(denied))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "PermissionError" in err
    assert "The above exception was the direct cause of the following exception" in err
    assert err.splitlines()[-1].startswith(
        f"accel: error [permission_denied]: cannot access {tmp_path / 'registry.json'}: "
    )


def test_an_os_error_is_translated_once_with_its_cause(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("ACCEL_DEBUG", raising=False)
    gone = OSError(errno.EROFS, "Read-only file system", str(tmp_path))
    monkeypatch.setattr(status, "handler", _raising(gone))
    assert main(["status", "--models-dir", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"accel: error [read_only]: cannot access {tmp_path}: read-only")


def test_a_reader_that_left_is_a_quiet_exit(accel_cmd: list[str], tmp_path: Path) -> None:
    # `accel publish ... | head -0` once head has gone: writing stdout fails with EPIPE.
    (tmp_path / "src.bin").write_bytes(b"x" * 1000)
    args = ["publish", "src.bin", "--root", "store", "--model", "m", "--version", "1"]
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [*accel_cmd, *args],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        os.close(w)
    assert proc.stderr == ""
    assert proc.returncode == 1


def test_a_usage_error_from_a_handler_names_its_command(accel_cmd: list[str]) -> None:
    """Every usage error reads `accel: COMMAND: ...`, whether argparse or the command's
    own checks found it (`accel get htp://x` said `accel: URL: ...`)."""
    proc = subprocess.run([*accel_cmd, "get", "htp://x"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accel: get: URL: expected an http"), lines
    assert "e.g. accel get https://" in lines[0]
