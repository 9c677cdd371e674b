"""The install's questions to the hub survive what a load balancer in front of several hubs
shows when one of them dies: a 502/503/504, a connection reset, an answer cut short.
The real hub behind tests/support/faultproxy.py, which injects exactly those."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.hub import REPO, RunningHub, publish_small_store, running_hub


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """The real hub (this directory's ``hub`` fixture is the stub) over the small store."""
    root = tmp_path_factory.mktemp("retry") / "store"
    publish_small_store(root)
    with running_hub(root) as h:
        yield h


def _install(hub_url: str, models_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    for k in ("ACCEL_HUB", "ACCEL_TOKEN", "ACCEL_MODELS_DIR"):
        env.pop(k, None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accel",
            "install",
            "demo-asr@1.1.0",
            "--hub",
            hub_url,
            "--models-dir",
            str(models_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(
            [FaultRule(FaultKind.STATUS_503, path="/api/models/demo-asr", times=2)], id="503-twice"
        ),
        pytest.param(
            [FaultRule(FaultKind.RESET, path="/manifest", after_bytes=10)], id="manifest-reset"
        ),
        pytest.param(
            [FaultRule(FaultKind.TRUNCATE, path="/manifest", after_bytes=100)],
            id="manifest-cut-short",
        ),
    ],
)
def test_an_install_asks_again_when_the_hub_cannot_answer_right_now(
    real_hub: RunningHub, tmp_path: Path, rules: list[FaultRule]
) -> None:
    with FaultProxy(real_hub.url, rules=rules) as proxy:
        r = _install(proxy.url, tmp_path / "models")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert sum(proxy.faults.values()) >= 1  # the fault did happen
    [installed] = (tmp_path / "models").rglob("model.bin")
    want = real_hub.store_path("demo-asr", "1.1.0", "model.bin").read_bytes()
    assert hashlib.sha256(installed.read_bytes()).digest() == hashlib.sha256(want).digest()
