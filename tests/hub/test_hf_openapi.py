"""The OpenAPI document describes org/name ids as clients send them, and the hub answers
every path it describes for both id shapes.

``huggingface_hub`` (and accel) send ``org/name`` as two path segments, never ``%2F``;
an OpenAPI path parameter is one segment, so the document has an ``{org}/{name}`` twin
of every ``{model_id}`` path. Checked three ways: the id patterns are exactly the hub's
rule (hypothesis), every request a client makes is matched by a described operation whose
parameter patterns accept it, and every described operation, filled in with a real
model of each shape, gets a documented success from the real hub.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.errors import UnsafePathError
from accel.hub.openapi import ID_SEGMENT_SCHEMA, OPENAPI
from accel.modelid import check_model_id
from tests.support.hub import RunningHub, publish_model, running_hub

SPEC: dict[str, int | bytes] = {"config.json": b'{"a": 1}', "sub/vocab.txt": 3000}
#: (method, path) as clients send them, for both id shapes: HF's calls and accel's
CLIENT_REQUESTS = [
    (method, path.format(id=model_id))
    for model_id in ("org/m", "solo")
    for method, path in [
        ("get", "/api/models/{id}"),
        ("get", "/api/models/{id}/revision/1.0"),
        ("get", "/api/models/{id}/revision/main"),
        ("get", "/api/models/{id}/tree/1.0"),
        ("get", "/api/models/{id}/tree/1.0/sub"),
        ("get", "/api/models/{id}/versions/1.0/manifest"),
        ("head", "/{id}/resolve/1.0/config.json"),
        ("get", "/{id}/resolve/main/sub/vocab.txt"),
        ("get", "/storage/models/{id}/1.0/sub/vocab.txt"),
        ("head", "/storage/models/{id}/1.0/config.json"),
    ]
]


def _id_ok(value: str) -> bool:
    try:
        check_model_id(value)
    except UnsafePathError:
        return False
    return True


def _schema_ok(schema: dict[str, Any], value: str) -> bool:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return False
    return "pattern" not in schema or re.fullmatch(schema["pattern"], value) is not None


_SEGMENT_TEXT = st.text(st.sampled_from("aZ09._+-/\n-é"), max_size=12) | st.sampled_from(
    ["a" * 128, "a" * 129, "a-", "-a", "a--b", "a-b-", "a/b", "a/b/c", "/a", "a/"]
)


@given(_SEGMENT_TEXT)
def test_id_patterns_are_exactly_the_hubs_rule(value: str) -> None:
    """One segment, or org + name as two: the schema accepts exactly what check_model_id does."""
    parts = value.split("/")
    described = len(parts) <= 2 and all(_schema_ok(ID_SEGMENT_SCHEMA, p) for p in parts)
    assert described == _id_ok(value)


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in OPENAPI["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def _match(template: str, op: dict[str, Any], path: str) -> dict[str, str] | None:
    """The path parameters of ``path`` under ``template``, if every one fits its schema.

    A parameter is one segment, but ``file_path`` takes the rest ('/'-separated segments,
    as the document says of it)."""
    pattern = re.sub(
        r"\\\{(\w+)\\\}",
        lambda m: f"(?P<{m[1]}>.+)" if m[1] == "file_path" else f"(?P<{m[1]}>[^/]+)",
        re.escape(template),
    )
    found = re.fullmatch(pattern, path)
    if found is None:
        return None
    schemas = {p["name"]: p["schema"] for p in op.get("parameters", []) if p["in"] == "path"}
    values = {k: unquote(v) for k, v in found.groupdict().items()}
    return values if all(_schema_ok(schemas[k], v) for k, v in values.items()) else None


@pytest.mark.parametrize(("method", "path"), CLIENT_REQUESTS)
def test_every_request_a_client_sends_is_described(method: str, path: str) -> None:
    matches = [t for m, t, op in _operations() if m == method and _match(t, op, path)]
    assert matches, f"no described operation takes {method.upper()} {path}"
    if "org/m" in path:  # the org/name twin, not only a one-segment path read askew
        assert any("{org}/{name}" in t for t in matches), matches


def test_every_model_id_path_has_its_org_name_twin() -> None:
    paths = OPENAPI["paths"]
    with_id = [p for p in paths if "{model_id}" in p]
    assert len(with_id) >= 7
    for p in with_id:
        twin = p.replace("{model_id}", "{org}/{name}")
        assert set(paths[twin]) == set(paths[p]), p
        for method in paths[p]:
            names = [x["name"] for x in paths[twin][method]["parameters"] if x["in"] == "path"]
            assert "model_id" not in names and {"org", "name"} <= set(names)


@pytest.fixture(scope="module")
def both_shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    root = tmp_path_factory.mktemp("hf-openapi") / "store"
    publish_model(root, "org/m", "1.0", SPEC)
    publish_model(root, "solo", "1.0", SPEC)
    with running_hub(root) as h:
        yield h


_FILL = {"version": "1.0", "revision": "1.0"}


def _fill(template: str, model: tuple[str, ...]) -> str:
    values = dict(_FILL)
    if len(model) == 2:
        values.update(org=model[0], name=model[1])
    else:
        values["model_id"] = model[0]
    # a file for the file routes, a directory for the tree route
    values["file_path"] = "sub" if "/tree/" in template else "sub/vocab.txt"
    return re.sub(r"\{(\w+)\}", lambda m: quote(values[m[1]], safe="/"), template)


def test_the_hub_answers_every_described_path_for_both_id_shapes(
    both_shapes: RunningHub,
) -> None:
    port = both_shapes.port
    asked = 0
    for method, template, op in _operations():
        models: list[tuple[str, ...]] = [("org", "m")] if "{org}" in template else [("solo",)]
        if "{model_id}" not in template and "{org}" not in template:
            if template != "/api/model-usage":
                continue
            models = [("org", "m"), ("solo",)]
        for model in models:
            path = _fill(template, model)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            body = None
            headers = {}
            if template == "/api/model-usage":
                body = json.dumps({"model_id": "/".join(model)}).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method.upper(), path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read()
            conn.close()
            asked += 1
            assert str(resp.status) in op["responses"], (method, path, resp.status)
            assert 200 <= resp.status < 400, (method, path, resp.status, text[:300])
            if (
                resp.status == 200
                and method == "get"
                and "json" in resp.getheader("Content-Type", "")
            ):
                answer = json.loads(text)
                if isinstance(answer, dict) and "id" in answer:
                    assert answer["id"] == "/".join(model), (path, answer["id"])
    assert asked >= 20
