"""accel.hub.storage.open_listed_file without sockets: only listed files, never outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel.hub.catalog import Catalog
from accel.hub.storage import Problem, open_listed_file
from tests.hub.conftest import SECRET, plant_traps
from tests.support.hub import publish_small_store


@pytest.fixture(scope="module")
def trapped(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    base = tmp_path_factory.mktemp("lookup")
    publish_small_store(base / "store")
    plant_traps(base, base / "store")
    return Catalog(base / "store")


def _read(catalog: Catalog, raw: str) -> bytes:
    f = open_listed_file(catalog, raw)
    try:
        return os.pread(f.fd, f.size, 0)
    finally:
        f.close()


def test_listed_file_opens(trapped: Catalog) -> None:
    data = _read(trapped, "/storage/models/demo-asr/1.0.0/sub/vocab.txt")
    assert len(data) == 5000


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("/storage/models/demo-asr/1.0.0/unlisted.bin", 404),
        ("/storage/models/demo-asr/1.0.0/leak", 404),
        ("/storage/models/demo-mt/1.0.0/shards/part-00.bin", 404),
        ("/storage/models/trap/1.0/d/f.bin", 404),
        ("/storage/models/demo-asr/1.0.0/%2e%2e/secret.txt", 400),
        ("/storage/models/demo-asr/1.0.0/%7F", 400),
        # Well formed but longer than a file name can be: cannot be listed, so 404 (the
        # OpenAPI pattern has no length, so a 400 here would reject schema-valid data).
        ("/storage/models/demo-asr/1.0.0/sub/" + "x" * 300, 404),
        ("/storage/models/demo-asr/1.0.0/" + "%C3%A9" * 200, 404),
        ("/storage/models/demo-asr/1.0.0", 404),
        ("/storage/other", 404),
    ],
)
def test_refused(trapped: Catalog, raw: str, status: int) -> None:
    with pytest.raises(Problem) as err:
        open_listed_file(trapped, raw)
    assert err.value.status == status
    assert str(trapped.store.root) not in err.value.message


SEGMENTS = st.sampled_from(
    ["demo-asr", "demo-mt", "trap", "1.0.0", "1.0", "1.1.0", "sub", "vocab.txt", "model.bin",
     "d", "f.bin", "leak", "unlisted.bin", "escape.txt", "shards", "part-00.bin", "..", ".",
     "%2e%2e", "%2F", "%00", "%5C", "", "secret.txt", "models", "files", "%252e%252e"]
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(SEGMENTS, min_size=0, max_size=7))
def test_no_path_opens_anything_outside_or_unlisted(trapped: Catalog, segments: list[str]) -> None:
    raw = "/storage/models/" + "/".join(segments)
    try:
        data = _read(trapped, raw)
    except Problem as p:
        assert p.status in (400, 404)
        return
    assert SECRET not in data
    model_id, version, rel = segments[0], segments[1], "/".join(segments[2:])
    assert trapped.file_entry(model_id, version, rel) is not None
    expected = trapped.store.root / "models" / model_id / version / "files" / rel
    assert data == Path(expected).read_bytes()
