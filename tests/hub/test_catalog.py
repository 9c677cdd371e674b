"""accel.hub.catalog: loading the store, answers serialized once per change, reloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from accel.hub.catalog import Catalog, version_key
from tests.support.hub import publish_model


def test_versions_sort_naturally() -> None:
    versions = ["1.10.0", "1.9.0", "1.9.0-rc1", "2", "1.0"]
    assert sorted(versions, key=version_key) == ["1.0", "1.9.0", "1.9.0-rc1", "1.10.0", "2"]


def test_answers_are_serialized_once_per_change(tmp_path: Path) -> None:
    publish_model(tmp_path, "a", "1.0", {"x": 10})
    catalog = Catalog(tmp_path)
    first = catalog.list_answer()
    model = catalog.model_answer("a")
    manifest = catalog.manifest_answer("a", "1.0")
    filtered = catalog.list_answer("asr", "zh")
    for _ in range(3):
        catalog.refresh()
        assert catalog.list_answer() is first  # the same bytes object: no re-serialization
        assert catalog.model_answer("a") is model
        assert catalog.manifest_answer("a", "1.0") is manifest
        assert catalog.list_answer("asr", "zh") is filtered
    generation = catalog.generation
    publish_model(tmp_path, "b", "1.0", {"y": 10}, task="mt")
    catalog.refresh()
    assert catalog.generation == generation + 1
    assert catalog.list_answer() is not first and catalog.list_answer().etag != first.etag
    assert [m["id"] for m in json.loads(catalog.list_answer().body)] == ["a", "b"]
    assert [m["id"] for m in json.loads(catalog.list_answer("mt").body)] == ["b"]


def test_broken_entries_are_skipped_not_fatal(tmp_path: Path) -> None:
    publish_model(tmp_path, "good", "1.0", {"x": 10})
    publish_model(tmp_path, "half", "1.0", {"x": 10})
    publish_model(tmp_path, "half", "2.0", {"x": 11}, default=True)
    (tmp_path / "models/half/2.0/manifest.json").write_text("{not json")
    (tmp_path / "models/nometa").mkdir()
    (tmp_path / "models/bad id!").mkdir()
    (tmp_path / "models/bad id!/model.json").write_text('{"id": "x", "name": "x"}')
    catalog = Catalog(tmp_path)
    assert sorted(catalog.models) == ["good", "half"]
    half = catalog.models["half"]
    assert [v.version for v in half.versions] == ["1.0"]
    assert half.default_version == "1.0"  # the broken default falls back to what exists
    assert catalog.file_entry("half", "2.0", "x") is None
    assert catalog.file_entry("good", "1.0", "x") is not None


def test_model_added_by_hand_is_noticed(tmp_path: Path) -> None:
    publish_model(tmp_path, "a", "1.0", {"x": 10})
    catalog = Catalog(tmp_path)
    publish_model(tmp_path / "other", "b", "1.0", {"y": 10})
    os.rename(tmp_path / "other/models/b", tmp_path / "models/b")
    catalog.backend._models_checked = -1e9  # type: ignore[attr-defined]  # the once-a-second check is due
    catalog.refresh()
    assert sorted(catalog.models) == ["a", "b"]


def test_the_loaded_catalog_is_out_of_the_cyclic_collectors_sight(tmp_path: Path) -> None:
    # A full collection walked every object of a 10,000-model catalog (126-164 ms on
    # this machine), a pause in the middle of whichever requests were running. The
    # snapshot is frozen after each load (gc.freeze): a full collection skips it.
    import gc

    publish_model(tmp_path, "a", "1.0", {"x": 10})
    catalog = Catalog(tmp_path)
    tracked = {id(o) for o in gc.get_objects()}
    assert id(catalog._snap.models) not in tracked
    assert id(catalog.models["a"].__dict__) not in tracked
    publish_model(tmp_path, "b", "1.0", {"y": 10})
    catalog.refresh()  # a reload freezes the new snapshot too
    tracked = {id(o) for o in gc.get_objects()}
    assert id(catalog._snap.models) not in tracked
