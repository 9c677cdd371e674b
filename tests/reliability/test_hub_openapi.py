"""The hub's ``/openapi.json`` checked with schemathesis against the running hub.

The description must cover the API of DESIGN.md, and every generated request (valid
and invalid inputs, all checks: no 5xx, status codes, content types, headers and
bodies conforming to the schema) must pass against the real server.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.reliability.figures import record_figure
from tests.support.hub import RunningHub
from tests.support.stfuzz import ST, run_schemathesis


def test_openapi_describes_the_api(hub: RunningHub) -> None:
    with urllib.request.urlopen(f"{hub.url}/openapi.json", timeout=10) as r:
        spec = json.loads(r.read())
    assert str(spec.get("openapi", "")).startswith("3."), spec
    paths = set(spec.get("paths", {}))
    wanted = {
        "/api/models",
        "/api/models/{model_id}",
        "/api/models/{model_id}/versions/{version}/manifest",
        "/api/model-usage/ranking",
        "/api/model-usage",
    }
    assert wanted <= paths, f"missing from /openapi.json: {sorted(wanted - paths)}"
    assert any(p.startswith("/storage/") for p in paths), sorted(paths)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_schemathesis_against_running_hub(hub: RunningHub, tmp_path: Path) -> None:
    """Every check, ``positive_data_acceptance`` included (the path parameters carry the
    hub's own patterns), 200 examples per operation: ``./scripts/soak`` only. The default
    suite runs the same command with 15 examples over a store with traps:
    tests/hub/test_openapi.py::test_live_hub_conforms_to_its_description."""
    if not ST.exists():
        pytest.fail(f"schemathesis CLI not found at {ST}: run ./scripts/setup")
    runs = run_schemathesis(hub.url, tmp_path, max_examples=200, timeout=420)
    for run in runs:
        print(run.output[-3000:])
    for run in runs:
        assert run.returncode == 0, (run.command, run.output[-6000:])
    record_figure(
        "hub_openapi_schemathesis",
        "; ".join(r.command for r in runs),
        "; ".join(f"{r.name}: {r.summary}" for r in runs),
    )
