"""The hub answers' rules (accel/manager/hubanswers.py), pure: no sockets.

The same generated malformed answers as the end-to-end test (tests/manager/badhub.py),
many more of them since no install runs: each is a ``BadManifestError`` naming the
field, and what the hub really publishes still parses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from accel.errors import BadManifestError, HubError
from accel.manager.hubanswers import decode, parse_manifest, parse_model_info, parse_ranking
from tests.manager.badhub import (
    ABSOLUTE,
    MODEL,
    VERSION,
    Case,
    catalog_case,
    good_catalog,
    good_manifest,
    manifest_case,
)
from tests.manager.hubstub import publish


def _parse(case: Case, *, catalog: bool = False) -> object:
    raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    raw = raw.replace(ABSOLUTE.encode(), b"/tmp/absolute-escape")
    body = decode(raw, f"manifest of {MODEL}@{VERSION}", model_id=MODEL, version=VERSION)
    return parse_model_info(body, MODEL) if catalog else parse_manifest(body, MODEL, VERSION)


@settings(max_examples=400, deadline=None)
@given(case=manifest_case())
def test_every_malformed_manifest_is_bad_manifest_naming_the_field(case: Case) -> None:
    if case.field is None:  # legal sizes no disk holds: the install's space check says so
        _parse(case)
        return
    with pytest.raises(BadManifestError) as info:
        _parse(case)
    err = info.value
    assert isinstance(err, HubError) and err.code == "bad_manifest"
    assert err.facts["field"] == case.field, (case, err)
    assert (err.facts["model_id"], err.facts["version"]) == (MODEL, VERSION)
    assert "\n" not in str(err) and f"{MODEL}@{VERSION}" in err.message and err.hint


@settings(max_examples=150, deadline=None)
@given(case=catalog_case())
def test_every_malformed_catalog_entry_is_bad_manifest_naming_the_field(case: Case) -> None:
    with pytest.raises(BadManifestError) as info:
        _parse(case, catalog=True)
    assert info.value.facts["field"] == case.field, (case, info.value)


def test_what_the_hub_publishes_parses(tmp_path: Path) -> None:
    """Empty files (no block digests), nested paths, and files without block digests."""
    raw = publish(tmp_path, "m", "1.0", {"empty": 0, "a/b/c.bin": 5000, "x.bin": 3 << 20})
    manifest = parse_manifest(raw, "m", "1.0")
    assert sorted(f.path for f in manifest.files) == ["a/b/c.bin", "empty", "x.bin"]
    body = good_manifest()
    body["files"][0]["chunks"]["digests"] = []
    assert parse_manifest(body, MODEL, VERSION).files[0].chunks.digests == []
    assert parse_model_info(good_catalog(), MODEL).default_version == VERSION
    rows = parse_ranking([{"model_id": "m", "request_count": 3, "rank": 1}])
    assert rows[0].model_id == "m"
    with pytest.raises(BadManifestError):
        parse_ranking({"model_id": "m"})
