"""An ``hf://`` install is the usual install: environment settings, repair of a wrong
byte, resume after an interruption, verify and retry, also from a new process.

The endpoint is our own hub's HF API on loopback (``accel serve``), behind the fault
proxy where a test needs to corrupt an answer or count what the origin sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accel.manager import ModelManager
from accel.manager.events import Event, FailedEvent, ReadyEvent
from tests.support.faultproxy import FaultKind, FaultProxy, FaultRule
from tests.support.hub import REPO, expected_bytes, publish_model, running_hub

MiB = 1 << 20
SPEC: dict[str, int | bytes] = {"model.safetensors": 6 * MiB + 7, "config.json": b'{"a": 1}'}
BIG = expected_bytes("model.safetensors", 6 * MiB + 7)


def _sha(root: Path, model_dir: str, version: str) -> str:
    m = json.loads((root / "models" / model_dir / version / "manifest.json").read_bytes())
    return str(m["checksum_sha256"][:40])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ACCEL_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_endpoint_and_token_from_the_environment(tmp_path: Path) -> None:
    """``HF_ENDPOINT`` and ``HF_TOKEN`` are what ``--hf-endpoint`` and the token default to."""
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    models = tmp_path / "models"
    cmd = [sys.executable, "-m", "accel", "install", "hf://org/m@1.0", "--models-dir", str(models)]
    with running_hub(root, token="hf-env-secret") as h:
        refused = subprocess.run(
            cmd, env=_env(HF_ENDPOINT=h.url), capture_output=True, text=True, timeout=120
        )
        ok = subprocess.run(
            cmd,
            env=_env(HF_ENDPOINT=h.url, HF_TOKEN="hf-env-secret"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("accel: error [") and "HF_TOKEN" in refused.stderr
    assert ok.returncode == 0, ok.stderr
    path = Path(ok.stdout.strip())
    assert path == models / "org--m" / _sha(root, "org--m", "1.0")
    assert (path / "model.safetensors").read_bytes() == BIG


async def test_a_wrong_byte_from_the_endpoint_is_repaired(tmp_path: Path) -> None:
    """No blake3 blocks: the whole-file sha256 catches the flipped byte, the engine's
    repair fetches the file's bad part again, and the version ends ready and right."""
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    rule = FaultRule(FaultKind.FLIP, path="/storage/models/org/m/1.0/model.safetensors")
    with running_hub(root) as h, FaultProxy(h.url, rules=[rule]) as proxy:
        async with ModelManager(tmp_path / "models", None, hf_endpoint=proxy.url) as mm:
            path = await mm.ainstall("hf://org/m@1.0")
        faults = proxy.faults
        sent = proxy.client_body_bytes
    assert faults[FaultKind.FLIP] == 1
    assert path is not None and (path / "model.safetensors").read_bytes() == BIG
    assert sent < 2 * len(BIG)  # the repair refetched a part, not the whole file again


async def test_an_interrupted_install_resumes_in_a_new_manager(tmp_path: Path) -> None:
    """Stopped half way (the manager closed: the version is paused, resumable), the next
    manager keeps what was fetched and fetches only the rest."""
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    models = tmp_path / "models"
    sha = _sha(root, "org--m", "1.0")
    part = models / "org--m" / sha / "model.safetensors.part"
    with running_hub(root) as h:
        async with ModelManager(models, None, hf_endpoint=h.url, limit_rate=2 * MiB) as mm:
            task = asyncio.ensure_future(mm.ainstall("hf://org/m@1.0"))
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline and not task.done():
                rec = mm.registry.get("org/m", sha)
                done = sum(f.bytes_done for f in rec.files) if rec is not None else 0
                if done >= 2 * MiB and part.exists():
                    break
                await asyncio.sleep(0.02)
            assert not task.done(), "the capped install finished before it was stopped"
        with pytest.raises(BaseException):  # noqa: B017 (cancelled or paused: either way)
            await task
        rec_after = mm.registry.get("org/m", sha)
        assert rec_after is not None and rec_after.state != "ready"
        ready: list[ReadyEvent] = []
        async with ModelManager(models, None, hf_endpoint=h.url) as mm2:
            mm2.subscribe(lambda ev: ready.append(ev) if isinstance(ev, ReadyEvent) else None)
            path = await mm2.ainstall("hf://org/m@1.0")
    assert path is not None and (path / "model.safetensors").read_bytes() == BIG
    assert ready and ready[-1].bytes_kept >= 1 * MiB
    assert ready[-1].bytes_fetched <= len(BIG) - 1 * MiB


async def test_verify_and_retry_of_an_hf_version_in_a_new_manager(tmp_path: Path) -> None:
    """A damaged file of an hf:// version is found by verify and fetched again by retry
    (``accel retry org/m@SHA``), from the endpoint the install recorded, in a process
    that never resolved the revision itself."""
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    models = tmp_path / "models"
    sha = _sha(root, "org--m", "1.0")
    with running_hub(root) as h:
        async with ModelManager(models, None, hf_endpoint=h.url) as mm:
            path = await mm.ainstall("hf://org/m@1.0")
        assert path is not None
        damaged = bytearray((path / "model.safetensors").read_bytes())
        damaged[4321] ^= 0xFF
        (path / "model.safetensors").write_bytes(bytes(damaged))
        async with ModelManager(models, None) as mm2:  # no endpoint given: the recorded one
            assert await mm2.averify("org/m", sha) == {f"org/m@{sha}": ["model.safetensors"]}
            ended: asyncio.Queue[Event] = asyncio.Queue()
            mm2.subscribe(
                lambda ev: (
                    ended.put_nowait(ev) if isinstance(ev, ReadyEvent | FailedEvent) else None
                )
            )
            await mm2.aretry("org/m", sha)
            outcome = await asyncio.wait_for(ended.get(), 60)
            assert isinstance(outcome, ReadyEvent), outcome
            rec = mm2.registry.get("org/m", sha)
            assert rec is not None and rec.state == "ready", rec and rec.error
            assert mm2.get_model_path("org/m", "1.0") == path
    assert (path / "model.safetensors").read_bytes() == BIG


def test_the_blocking_install_takes_an_hf_ref(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(root, "org/m", "1.0", {"config.json": b'{"a": 1}'})
    with running_hub(root) as h:
        mm = ModelManager(tmp_path / "models", None, hf_endpoint=h.url, workers=1)
        try:
            path = mm.install("hf://org/m@1.0")
        finally:
            mm.close()
    assert path is not None and (path / "config.json").read_bytes() == b'{"a": 1}'
    assert path.name == _sha(root, "org--m", "1.0")
