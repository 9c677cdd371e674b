"""The real hub for tests: publish deterministic models and run ``accel serve`` on loopback.

Helpers (import them from ``tests.support.hub``):

- ``make_files(dir, {relpath: size_or_bytes}, seed=0) -> dict[str, Path]`` writes
  deterministic pseudo-random files (an int is a size, bytes are written as is); the
  same relpath and seed always give the same bytes (``expected_bytes`` recomputes them).
- ``publish_model(root, model_id, version, {relpath: size_or_bytes}, default=True,
  task="asr", languages=("zh",), seed=0, block_size=...) -> VersionManifest`` makes the
  files in a temp dir and publishes them into the store ``root`` with ``accel.hub.publish``
  (inside ``without_fsync()``: a test store need not survive a power cut).
- ``running_hub(root, token=None) -> ContextManager[RunningHub]`` starts the REAL hub as a
  subprocess (``python -m accel serve --root ROOT --port 0``), waits for ``/healthz``
  and stops it (SIGTERM, then SIGKILL) on exit. ``RunningHub`` has ``.url``, ``.root``,
  ``.token``, ``.port``, ``.headers`` (Authorization when a token is set),
  ``file_url(model_id, version, path)``, ``store_path(model_id, version, path)`` and
  ``restart()`` (same port, same store).

Fixtures (registered in tests/conftest.py):

- ``hub_root``: an empty store directory (``tmp_path / "store"``).
- ``hub``: a running hub over a small store with ``demo-asr`` (1.0.0 and default 1.1.0:
  ``model.bin`` 3 MiB + 12345 bytes, ``config.json`` and ``sub/vocab.txt``; version 1.1.0
  changes ``model.bin``) and ``demo-mt`` 1.0.0 (task "mt", 30 small files), published with
  a 1 MiB block size so that files have several chunk digests. ``SMALL_STORE`` describes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import accel.durable as durable_mod
import accel.hub.publish as publish_mod
from accel.hub.demo import pseudo_random_bytes, write_pseudo_random
from accel.hub.publish import publish
from accel.schema import VersionManifest

__all__ = [
    "SMALL_STORE",
    "RunningHub",
    "expected_bytes",
    "hub",
    "hub_root",
    "make_files",
    "publish_model",
    "publish_small_store",
    "running_hub",
    "without_fsync",
]

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024

Spec = Mapping[str, int | bytes]


def expected_bytes(relpath: str, size: int, seed: int = 0) -> bytes:
    """The bytes ``make_files`` writes for ``relpath`` of ``size`` bytes with ``seed``."""
    return pseudo_random_bytes(relpath, size, seed)


def make_files(directory: Path, spec: Spec, seed: int = 0) -> dict[str, Path]:
    """Write ``spec`` ({relpath: size or bytes}) under ``directory``; returns relpath -> path."""
    out: dict[str, Path] = {}
    for rel, what in spec.items():
        target = Path(directory) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, bytes):
            target.write_bytes(what)
        else:
            write_pseudo_random(target, what, name=rel, seed=seed)
        out[rel] = target
    return out


def publish_model(
    root: Path,
    model_id: str,
    version: str,
    spec: Spec,
    *,
    default: bool = True,
    task: str | None = "asr",
    languages: tuple[str, ...] = ("zh",),
    name: str | None = None,
    seed: int = 0,
    block_size: int = 16 * MiB,
) -> VersionManifest:
    """Make ``spec`` in a temp dir and publish it into the store ``root`` (no fsync)."""
    with tempfile.TemporaryDirectory(prefix="accel-src-") as tmp, without_fsync():
        make_files(Path(tmp), spec, seed=seed)
        return publish(
            Path(tmp),
            Path(root),
            model_id,
            version,
            name=name,
            task=task,
            languages=languages,
            default=default,
            block_size=block_size,
        )


class _OsWithoutFsync(types.ModuleType):
    """``os`` with ``fsync`` a no-op: what a store built for a test never needs."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def fsync(fd: int) -> None:
        del fd


@contextlib.contextmanager
def without_fsync() -> Iterator[None]:
    """Publish without fsync: a test store need not survive a power cut, and on a loaded
    disk each fsync costs milliseconds (2,345 small files took 27 s, 2 s without).

    Only the ``os`` seen by accel.hub.publish and accel.durable is replaced, for the
    duration. Publish's own durability is tested with the real calls
    (tests/hub/test_publish.py, ``accel publish`` in subprocesses).
    """
    with (
        mock.patch.object(publish_mod, "os", _OsWithoutFsync("os")),
        mock.patch.object(durable_mod, "os", _OsWithoutFsync("os")),
    ):
        yield


@dataclass
class RunningHub:
    """A hub subprocess serving ``root`` at ``url`` (``http://127.0.0.1:PORT``)."""

    url: str
    root: Path
    token: str | None
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    _extra_args: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def file_url(self, model_id: str, version: str, path: str) -> str:
        return f"{self.url}/storage/models/{model_id}/{version}/{path}"

    def store_path(self, model_id: str, version: str, path: str) -> Path:
        return self.root / "models" / model_id / version / "files" / path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        _stop(self.proc)

    def restart(self) -> None:
        """Stop and start again on the same port and store (counts must survive)."""
        self.stop()
        self.proc, url = _start(self.root, self.token, self.port, self.log_path, self._extra_args)
        self.url = url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hub exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError("hub did not become healthy in time")


def _start(
    root: Path, token: str | None, port: int, log_path: Path, extra: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, "-m", "accel", "serve", "--root", str(root), "--port", str(port)]
    if token:
        cmd += ["--token", token]
    cmd += extra
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ACCEL_HUB_TOKEN", None)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=REPO, start_new_session=True
        )
    assert proc.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(20)
    text = line[0].decode() if line else ""
    if " at http://" not in text:
        _stop(proc)
        raise RuntimeError(f"hub did not start: {text!r}\n{log_path.read_text(errors='replace')}")
    url = text.split(" at ", 1)[1].split()[0]
    try:
        _wait_healthy(url, proc, time.monotonic() + 20)
    except RuntimeError:
        _stop(proc)
        raise
    return proc, url


@contextlib.contextmanager
def running_hub(
    root: Path, token: str | None = None, *, port: int = 0, extra_args: list[str] | None = None
) -> Iterator[RunningHub]:
    """Run ``accel serve`` over ``root`` on 127.0.0.1 (a free port unless ``port``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="accel-hub-", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    extra = list(extra_args or [])
    proc, url = _start(root, token, port, log_path, extra)
    handle = RunningHub(
        url=url,
        root=root,
        token=token,
        port=int(url.rsplit(":", 1)[1]),
        proc=proc,
        log_path=log_path,
        _extra_args=extra,
    )
    try:
        yield handle
    finally:
        handle.stop()
        log_path.unlink(missing_ok=True)


#: The small store behind the ``hub`` fixture: {(model_id, version): spec}.
SMALL_STORE: dict[tuple[str, str], dict[str, int | bytes]] = {
    ("demo-asr", "1.0.0"): {
        "model.bin": 3 * MiB + 12345,
        "config.json": b'{"arch": "demo-asr", "layers": 4}\n',
        "sub/vocab.txt": 5000,
    },
    ("demo-asr", "1.1.0"): {
        "model.bin": 3 * MiB + 20000,
        "config.json": b'{"arch": "demo-asr", "layers": 4}\n',
        "sub/vocab.txt": 5000,
    },
    ("demo-mt", "1.0.0"): {f"shards/part-{i:02d}.bin": 1000 + 37 * i for i in range(30)},
}


def publish_small_store(root: Path) -> dict[tuple[str, str], VersionManifest]:
    """Publish ``SMALL_STORE`` into ``root`` (seed 0, 1 MiB blocks)."""
    out = {}
    for (model_id, version), spec in SMALL_STORE.items():
        task, langs = ("mt", ("zh", "en")) if model_id == "demo-mt" else ("asr", ("zh",))
        out[(model_id, version)] = publish_model(
            root, model_id, version, spec, task=task, languages=langs, block_size=MiB
        )
    return out


@pytest.fixture
def hub_root(tmp_path: Path) -> Path:
    """An empty hub store directory."""
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def hub(hub_root: Path) -> Iterator[RunningHub]:
    """A running hub (no token) over ``SMALL_STORE``."""
    publish_small_store(hub_root)
    with running_hub(hub_root) as h:
        yield h
