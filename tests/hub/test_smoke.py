"""The fixtures other suites build on: a published store served by a real hub."""

from __future__ import annotations

import json
import urllib.request

from tests.support.hub import SMALL_STORE, RunningHub, expected_bytes


def test_hub_fixture_serves_catalog_and_files(hub: RunningHub) -> None:
    with urllib.request.urlopen(f"{hub.url}/api/models") as r:
        models = json.loads(r.read())
    assert [m["id"] for m in models] == ["demo-asr", "demo-mt"]
    size = SMALL_STORE[("demo-asr", "1.0.0")]["model.bin"]
    assert isinstance(size, int)
    req = urllib.request.Request(
        hub.file_url("demo-asr", "1.0.0", "model.bin"), headers={"Range": "bytes=100-199"}
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 206
        assert r.read() == expected_bytes("model.bin", size)[100:200]
