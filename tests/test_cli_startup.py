"""The CLI starts without the heavy libraries: every ``accel`` run builds the whole parser.

``accel --help``, ``accel status`` or ``accel completion`` must not pay for aiohttp,
pydantic or boto3 (a third of a second of CPU for aiohttp alone), and neither must each
of the suite's ``python -m accel`` subprocesses. A command that needs one imports it when
it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiohttp", "yarl", "multidict", "pydantic", "boto3", "botocore", "huggingface_hub")

_PROBE = """
import contextlib, io, json, sys
from accel.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    for argv in (["--help"], ["serve", "--help"], ["node", "--help"]):
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
"""


def test_help_imports_none_of_the_heavy_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE % (HEAVY,)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded == [], f"imported at start-up: {loaded}"


def test_serve_help_still_shows_the_listener_defaults(accel_cmd: list[str]) -> None:
    out = subprocess.run(
        [*accel_cmd, "serve", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    flat = " ".join(out.split())
    assert "default 30)" in flat and "(default 10000)" in flat
