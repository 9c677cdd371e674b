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

from tests.support.faultproxy import FaultProxy
from tests.support.hub import publish_model
from tests.support.hub import running_hub as _running_hub

REPO = Path(__file__).resolve().parents[2]


def publish(root: Path, model_id: str, version: str, files: dict[str, int | bytes]) -> None:
    """Publish a version into the hub store ``root`` with the hub's own publisher."""
    publish_model(root, model_id, version, files, block_size=1 << 20)


@dataclass
class Hub:
    """The real hub, optionally behind a pass-through proxy that counts the bytes sent."""

    url: str
    root: Path
    proxy: FaultProxy | None

    def storage_bytes(self) -> int:
        """Body bytes the node received through the proxy (files and API answers)."""
        assert self.proxy is not None, "start the hub with count_bytes=True"
        return self.proxy.client_body_bytes


@contextlib.contextmanager
def running_hub(root: Path, *, count_bytes: bool = False) -> Iterator[Hub]:
    """``accel serve`` over ``root`` as a subprocess (and the counting proxy if asked)."""
    with _running_hub(root) as hub:
        if not count_bytes:
            yield Hub(hub.url, root, None)
            return
        with FaultProxy(hub.url) as proxy:
            yield Hub(proxy.url, root, proxy)


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
