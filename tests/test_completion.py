"""`accel completion bash` works in a real bash: it completes subcommands and options."""

from __future__ import annotations

import subprocess
import sys


def _complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(words)
    probe = (
        f"{script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
        f"COMP_POINT=${{#COMP_LINE}}; _shtab_accel accel; printf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    r = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completes_subcommands_and_options() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "accel", "completion", "bash"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert {"install", "pull", "search", "get"} <= set(
        _complete(r.stdout, ["accel", "p"]) + _complete(r.stdout, ["accel", ""])
    )
    assert "--max-connection-per-server" in _complete(r.stdout, ["accel", "get", "--max-c"])
