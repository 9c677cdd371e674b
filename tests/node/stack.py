"""The real stack for node tests: a hub subprocess over a published store, and
``accel node`` as a subprocess, both on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.manager.hubstub import publish as _publish
from tests.manager.hubstub import running_stub

REPO = Path(__file__).resolve().parents[2]


def publish(root: Path, model_id: str, version: str, files: dict[str, int | bytes]) -> None:
    """Publish a version into the hub store ``root`` (seeded random content)."""
    _publish(root, model_id, version, files)


@contextlib.contextmanager
def running_hub(root: Path) -> Iterator[Any]:
    """A hub subprocess over ``root``; yields an object with ``.url``."""
    with running_stub(root) as hub:
        yield hub


@dataclass
class NodeProcess:
    proc: subprocess.Popen[str]
    url: str
    log_path: Path

    def terminate(self, timeout_s: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_node(
    models_dir: Path, hub_url: str, *extra: str, log_name: str = "node.log"
) -> Iterator[NodeProcess]:
    """``accel node`` as a subprocess; yields once it printed its URL; stops it on exit."""
    log_path = models_dir.parent / log_name
    cmd = [
        sys.executable,
        "-m",
        "accel",
        "node",
        "--models-dir",
        str(models_dir),
        "--hub",
        hub_url,
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "node-under-test",
        *extra,
    ]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        if not line or "listening on" not in line[0]:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"accel node did not start:\n{log_path.read_text()}")
        yield NodeProcess(proc, line[0].split()[-1], log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
