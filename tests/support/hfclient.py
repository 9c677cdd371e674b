"""The real ``huggingface_hub`` client (pinned in the test extras), run against our hub.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is
imported, so every call runs in a child Python (or the ``hf`` CLI) with its own
environment: the endpoint is the hub on loopback, the caches are temp dirs, telemetry
is off and ``hf_transfer`` is off. Nothing here can reach the internet.

- ``hf_env(endpoint, home, token=None, offline=False) -> dict``
- ``run_hf(code, env) -> Any``: runs ``code`` (which must ``print(json.dumps(...))`` as
  its last line of output) and returns the parsed JSON; raises with stderr on failure.
- ``run_hf_error(code, env) -> str``: runs ``code`` expecting an exception and returns
  its class name (the last line ``ERROR <ClassName>``).
- ``hf_cli(args, env) -> CompletedProcess``: the ``hf`` command of the same install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["hf_cli", "hf_env", "run_hf", "run_hf_error"]

_HF = Path(sys.executable).with_name("hf")


def hf_env(
    endpoint: str, home: Path, token: str | None = None, offline: bool = False
) -> dict[str, str]:
    """An environment in which ``huggingface_hub`` talks only to ``endpoint``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_XET="1",
        NO_PROXY="*",
    )
    env.pop("HTTP_PROXY", None)
    env.pop("HTTPS_PROXY", None)
    env.pop("http_proxy", None)
    env.pop("https_proxy", None)
    if token:
        env["HF_TOKEN"] = token
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


_PRELUDE = """
import json, sys
import huggingface_hub as hh
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
"""


def run_hf(code: str, env: dict[str, str], timeout: float = 120) -> Any:
    """Run ``code`` with the client imported; returns the JSON its last output line holds."""
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_hf_error(code: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run ``code`` that must raise; returns the exception's class name."""
    wrapped = (
        "try:\n"
        + "".join(f"    {line}\n" for line in code.strip().splitlines())
        + "except Exception as e:\n    print('ERROR', type(e).__name__)\nelse:\n    print('NO ERROR')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + wrapped],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    return last.removeprefix("ERROR ")


def hf_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The ``hf`` command installed with the pinned ``huggingface_hub``."""
    return subprocess.run(
        [str(_HF), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
