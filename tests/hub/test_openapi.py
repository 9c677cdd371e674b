"""The hand-written OpenAPI description: covers every route, and the live hub conforms to it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from accel.errors import UnsafePathError
from accel.hub.app import create_app
from accel.hub.openapi import FILE_PATH_PATTERN, ID_SEGMENT_SCHEMA, NAME_PATTERN, OPENAPI
from accel.serving.paths import check_name, split_raw_path
from tests.support.hub import RunningHub
from tests.support.stfuzz import run_schemathesis


def test_every_route_is_described(tmp_path: Path) -> None:
    app = create_app(tmp_path)
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        # Catch-alls split by the handlers (accel.hub.hfapi, storage), for one-segment
        # ids ({model_id}) and org/name ids ({org}/{name}) alike.
        tails = [
            "/api/models/{id}",
            "/api/models/{id}/revision/{revision}",
            "/api/models/{id}/tree/{revision}",
            "/api/models/{id}/tree/{revision}/{file_path}",
        ]
        both = ("{model_id}", "{org}/{name}")
        hf = {
            "/api/models/{tail}": [t.replace("{id}", i) for t in tails for i in both],
            "/{repo}/resolve/{tail}": ["/{model_id}/resolve/{revision}/{file_path}"],
            "/{org}/{name}/resolve/{tail}": ["/{org}/{name}/resolve/{revision}/{file_path}"],
            "/storage/{tail}": [f"/storage/models/{i}/{{version}}/{{file_path}}" for i in both],
        }
        for one in hf.get(path, [path]):
            if route.method != "HEAD" or one.startswith("/storage") or "/resolve/" in one:
                routes.add((route.method.lower(), one))  # HEAD is documented for files
    described = {(m, p) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert routes == described


def test_every_error_status_documents_the_error_body() -> None:
    for ops in OPENAPI["paths"].values():
        for op in ops.values():
            for status, resp in op["responses"].items():
                if re.fullmatch(r"4\d\d", status):
                    schema = resp["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}


def test_live_hub_conforms_to_its_description(live: RunningHub, tmp_path: Path) -> None:
    """schemathesis, every check (schema-valid data accepted included), over the hub with
    traps: no 5xx, documented statuses, bodies match schemas. The same command as
    tests/reliability/test_hub_openapi.py, fewer examples."""
    for run in run_schemathesis(live.url, tmp_path, max_examples=15):
        shown = re.sub(r"(.)\1{40,}", r"\1…", run.output)  # generated runs of one character
        assert run.returncode == 0, (run.command, shown[-6000:])
        assert " passed" in run.summary, run.output[-2000:]


def _accepted(check: Callable[[str], object], value: str) -> bool:
    try:
        check(value)
    except UnsafePathError:
        return False
    return True


def _as_url_tail(file_path: str) -> str:
    """file_path as the description says a client sends it: '/' as is, segments encoded."""
    return "m/1/" + "/".join(quote(s, safe="") for s in file_path.split("/"))


_TEXT = st.text(
    st.characters(exclude_categories=("Cs",)) | st.sampled_from("./\\\x00\x1f\x7f\x80é"),
    max_size=40,
)


@settings(max_examples=2000)
@given(
    _TEXT | st.lists(st.sampled_from(["a", ".", "..", "...", "", "é", "\x7f", "b\\"])).map("/".join)
)
def test_file_path_pattern_is_exactly_what_the_hub_accepts(file_path: str) -> None:
    """Schema-valid file_path is never a 400 and every other one is (positive_data_acceptance
    and negative_data_rejection of schemathesis both rest on this)."""
    described = re.fullmatch(FILE_PATH_PATTERN, file_path) is not None
    assert described == _accepted(lambda p: split_raw_path(_as_url_tail(p)), file_path)


@given(_TEXT)
def test_name_pattern_is_exactly_check_name(name: str) -> None:
    assert (re.fullmatch(NAME_PATTERN, name) is not None) == _accepted(check_name, name)


def test_storage_path_parameters_carry_the_patterns() -> None:
    op = OPENAPI["paths"]["/storage/models/{model_id}/{version}/{file_path}"]["get"]
    schemas = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "path"}
    assert schemas["file_path"]["pattern"] == FILE_PATH_PATTERN
    assert schemas["version"]["pattern"] == NAME_PATTERN
    assert schemas["model_id"] == ID_SEGMENT_SCHEMA
