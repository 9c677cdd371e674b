"""A hub that answers whatever a test tells it to, and the malformed answers to tell it.

:class:`BadHub` is a real aiohttp app on 127.0.0.1 (in the test's event loop, through
``tests/support/webapp.py``) with the hub's routes: the catalog entry and the manifest
of model ``m`` answer the bytes a test sets, and ``/storage`` serves two real files, so
the untouched manifest (:func:`good_manifest`) installs for real.

The strategies generate malformed answers from the pydantic schema itself: every
required field of :class:`~accel.schema.VersionManifest` (or ``ModelInfo``) and of the
models nested in it, removed or given a value of a wrong JSON type; numbers out of range;
hostile and duplicate paths; bodies that are not JSON at all. Each example is a
:class:`Case`: the body, and the field a clear error must name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import blake3
from aiohttp import web
from hypothesis import strategies as st
from pydantic import BaseModel

from accel.schema import ModelInfo, VersionManifest, version_checksum
from tests.support.webapp import serve_app

MODEL, VERSION = "m", "1.0"
BLOCK = 1024
FILES = {"a.bin": bytes(range(256)) * 12, "sub/b.bin": b"accel" * 300}

#: stands for an absolute path outside the models dir; the test puts a real one in
ABSOLUTE = "<absolute>"

#: the largest file size there is (``off_t``); above it a size is malformed
MAX_FILE_BYTES = 2**63 - 1


def _entry(rel: str, data: bytes) -> dict[str, Any]:
    blocks = [blake3.blake3(data[i : i + BLOCK]).hexdigest() for i in range(0, len(data), BLOCK)]
    return {
        "path": rel,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "chunks": {"algo": "blake3", "size": BLOCK, "digests": blocks},
    }


def good_manifest(content: dict[str, bytes] = FILES) -> dict[str, Any]:
    """The manifest of ``m@1.0`` (with ``content``) as the real hub would answer it."""
    from accel.schema import ManifestFile

    files = [_entry(rel, data) for rel, data in sorted(content.items())]
    return {
        "model_id": MODEL,
        "version": VERSION,
        "size_bytes": sum(len(d) for d in content.values()),
        "files": files,
        "checksum_sha256": version_checksum([ManifestFile.model_validate(f) for f in files]),
        "updated_at": "2026-12-01T00:00:00Z",
    }


def good_catalog(content: dict[str, bytes] = FILES) -> dict[str, Any]:
    """The catalog entry of ``m`` (``GET /api/models/m``)."""
    m = good_manifest(content)
    return {
        "id": MODEL,
        "name": "M",
        "task": "asr",
        "languages": ["en"],
        "default_version": VERSION,
        "versions": [
            {
                "version": VERSION,
                "size_bytes": m["size_bytes"],
                "files": [{k: f[k] for k in ("path", "size_bytes", "sha256")} for f in m["files"]],
                "checksum_sha256": m["checksum_sha256"],
                "updated_at": m["updated_at"],
            }
        ],
    }


@dataclass
class BadHub:
    """The hub's routes over answers a test sets (``manifest``/``catalog``: raw bodies)."""

    store: Path
    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    manifest: bytes = b""
    catalog: bytes = b""
    content_type: str = "application/json"
    requests: list[str] = field(default_factory=list)

    def answer(self, body: Any, *, catalog: bool = False) -> None:
        """Answer ``body`` (bytes as they are, anything else as JSON) from then on."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if catalog:
            self.catalog = raw
        else:
            self.manifest = raw

    def publish(self, content: dict[str, bytes]) -> None:
        """Serve ``content`` as ``m@1.0`` (files, manifest and catalog), as a hub edit would."""
        for rel, data in content.items():
            (self.store / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.store / rel).write_bytes(data)
        self.files = dict(content)
        self.answer(good_manifest(content))
        self.answer(good_catalog(content), catalog=True)


@contextlib.asynccontextmanager
async def running_bad_hub(store: Path) -> AsyncIterator[BadHub]:
    """Serve a :class:`BadHub` (files written under ``store``) until the generator ends."""
    hub = BadHub(store)
    hub.publish(FILES)

    def body(raw: bytes) -> web.Response:
        return web.Response(body=raw, headers={"Content-Type": hub.content_type})

    async def catalog(request: web.Request) -> web.Response:
        hub.requests.append(request.path)
        return body(hub.catalog)

    async def manifest(request: web.Request) -> web.Response:
        hub.requests.append(request.path)
        return body(hub.manifest)

    async def storage(request: web.Request) -> web.StreamResponse:
        hub.requests.append(request.path)
        rel = request.match_info["path"]
        if rel not in hub.files:
            return web.json_response(
                {"error": {"code": "not_found", "message": "no such file", "status": 404}},
                status=404,
            )
        return web.FileResponse(store / rel)

    app = web.Application()
    app.router.add_get(f"/api/models/{MODEL}", catalog)
    app.router.add_get(f"/api/models/{MODEL}/versions/{VERSION}/manifest", manifest)
    app.router.add_get(f"/storage/models/{MODEL}/{VERSION}/{{path:.+}}", storage)
    async with serve_app(app) as url:
        hub.url = url
        yield hub


# -- malformed answers, generated from the schema ---------------------------------------
@dataclass(frozen=True)
class Case:
    """One malformed answer and the field its error must name (``""``: the whole answer;
    ``None``: any field, as for a number the schema allows but no disk holds)."""

    kind: str
    body: Any
    field: str | None
    codes: tuple[str, ...] = ("bad_manifest",)


Loc = tuple[str | int, ...]


def field_name(loc: Loc) -> str:
    """How the error names a location: ``("files", 0, "path")`` -> ``files[0].path``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def schema_fields(model: type[BaseModel], prefix: Loc = ()) -> Iterator[tuple[Loc, Any, bool]]:
    """Every field of ``model`` and of the models inside it: (location, type, required).

    A list of models is entered at index 0 (the caller may pick another index)."""
    for name, info in model.model_fields.items():
        loc = (*prefix, name)
        ann = info.annotation
        yield loc, ann, info.is_required()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from schema_fields(ann, loc)
        elif get_origin(ann) is list:
            (item,) = get_args(ann)
            if isinstance(item, type) and issubclass(item, BaseModel):
                yield from schema_fields(item, (*loc, 0))


def _json_kind(ann: Any) -> str:
    if ann is str:
        return "string"
    if ann is int:
        return "integer"
    if get_origin(ann) is list:
        return "list"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "object"
    if str(get_origin(ann)).endswith("Literal"):
        return "literal"
    return "other"  # optional and defaulted fields: not generated


_LETTERS = st.text("abcdefghij-", min_size=1, max_size=8)

#: JSON values that are surely not of the kind (pydantic's lax mode takes "12" and
#: True as integers, and 2.0 as well, so those are left out)
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "string": st.one_of(
        st.integers(),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
        st.lists(_LETTERS, max_size=2),
    ),
    "integer": st.one_of(
        _LETTERS,
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(_LETTERS, st.integers(), max_size=2),
    ),
    "list": st.one_of(
        _LETTERS, st.integers(), st.none(), st.dictionaries(_LETTERS, st.integers(), max_size=2)
    ),
    "object": st.one_of(_LETTERS, st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
    "literal": st.one_of(_LETTERS.filter(lambda s: s != "blake3"), st.integers(), st.none()),
}


def _at(body: Any, loc: Loc) -> tuple[Any, str | int]:
    for part in loc[:-1]:
        body = body[part]
    return body, loc[-1]


def _pick_file(loc: Loc, index: int) -> Loc:
    return tuple(index if part == 0 and i == 1 else part for i, part in enumerate(loc))


@st.composite
def schema_case(draw: st.DrawFn, model: type[BaseModel], good: dict[str, Any]) -> Case:
    """A required field removed, or any generated field given a value of a wrong type."""
    fields = [(loc, ann, req) for loc, ann, req in schema_fields(model) if _json_kind(ann) in WRONG]
    loc, ann, required = draw(st.sampled_from(fields))
    if len(loc) > 1 and loc[1] == 0:
        loc = _pick_file(loc, draw(st.integers(0, len(good[str(loc[0])]) - 1)))
    body = json.loads(json.dumps(good))
    parent, key = _at(body, loc)
    if required and draw(st.booleans()):
        del parent[key]
        return Case("missing", body, field_name(loc))
    parent[key] = draw(WRONG[_json_kind(ann)])
    return Case("wrong_type", body, field_name(loc))


HOSTILE_PATHS = [
    "../x",
    "../../../escape",
    "a/../../../../escape",
    "/etc/passwd",
    ABSOLUTE,
    "a\\..\\b",
    "a\0b",
    "",
    ".",
    "..",
    "a//b",
    "a/./b",
    "sub/",
    "x" * 300,
]


@st.composite
def manifest_case(draw: st.DrawFn) -> Case:
    """Any malformed manifest of ``m@1.0``: schema violations and the rules beyond it."""
    good = good_manifest()
    kind = draw(
        st.sampled_from(
            [
                "schema",
                "schema",
                "schema",
                "huge",
                "negative",
                "hostile_path",
                "duplicate_path",
                "file_and_dir",
                "temp_name",
                "digest_count",
                "not_hex",
                "other_model",
                "not_json",
                "not_an_object",
                "legal_but_no_disk_holds_it",
            ]
        )
    )
    body = json.loads(json.dumps(good))
    i = draw(st.integers(0, len(body["files"]) - 1))
    f = body["files"][i]
    if kind == "schema":
        return draw(schema_case(VersionManifest, good))
    if kind == "huge":
        where = draw(st.sampled_from(["files[i].size_bytes", "files[i].chunks.size", "size_bytes"]))
        value = draw(st.integers(MAX_FILE_BYTES + 1, 10**40))
        if where == "size_bytes":
            body["size_bytes"] = value
            return Case(kind, body, "size_bytes")
        target, key = (f, "size_bytes") if where == "files[i].size_bytes" else (f["chunks"], "size")
        target[key] = value
        return Case(kind, body, where.replace("[i]", f"[{i}]"))
    if kind == "negative":
        value = draw(st.integers(-(10**20), -1))
        if draw(st.booleans()):
            f["size_bytes"] = value
            return Case(kind, body, f"files[{i}].size_bytes")
        f["chunks"]["size"] = draw(st.integers(-(10**6), 0))
        return Case(kind, body, f"files[{i}].chunks.size")
    if kind == "hostile_path":
        f["path"] = draw(st.sampled_from(HOSTILE_PATHS))
        return Case(kind, body, f"files[{i}].path")
    if kind == "duplicate_path":
        body["files"].append(dict(body["files"][i]))
        return Case(kind, body, f"files[{len(body['files']) - 1}].path")
    if kind == "file_and_dir":
        body["files"].append({**f, "path": "sub"})
        return Case(kind, body, "files[1].path")  # sub/b.bin needs "sub" to be a directory
    if kind == "temp_name":
        body["files"].append(
            {**f, "path": f["path"] + draw(st.sampled_from([".part", ".part.json"]))}
        )
        return Case(kind, body, f"files[{len(body['files']) - 1}].path")
    if kind == "digest_count":
        digests = f["chunks"]["digests"]
        if draw(st.booleans()):
            digests.pop()
        else:
            digests.append(digests[0])
        return Case(kind, body, f"files[{i}].chunks.digests")
    if kind == "not_hex":
        if draw(st.booleans()):
            f["sha256"] = draw(
                st.sampled_from(["", "abc", "Z" * 64, f["sha256"].upper(), f["sha256"] + "0"])
            )
            return Case(kind, body, f"files[{i}].sha256")
        f["chunks"]["digests"][0] = "not-a-digest"
        return Case(kind, body, f"files[{i}].chunks.digests[0]")
    if kind == "other_model":
        key = draw(st.sampled_from(["model_id", "version"]))
        body[key] = draw(st.sampled_from(["other", "../m", "1.1"]))
        return Case(kind, body, key)
    if kind == "not_json":
        raw = draw(
            st.one_of(
                st.sampled_from(
                    [
                        b"",
                        b"   ",
                        b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>",
                        b'{"model_id": "m", "version": "1.0",',
                        b"\xff\xfe\x00{",
                        b"[" * 100_000,
                        b"1" * 5000,
                        b"NaN-ish",
                    ]
                ),
                st.binary(max_size=40).filter(_not_json),
            )
        )
        return Case(kind, raw, "")
    if kind == "not_an_object":
        return Case(kind, draw(st.sampled_from([[], [good], "m", 42, None, True])), "")
    # Sizes the schema allows but no disk holds: not bad_manifest, but still a clear error.
    f["size_bytes"] = draw(st.integers(2**60, MAX_FILE_BYTES))
    f["chunks"]["digests"] = []
    return Case(kind, body, None, codes=("disk_full",))


def _not_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return True
    return False


@st.composite
def catalog_case(draw: st.DrawFn) -> Case:
    """Any malformed catalog entry of ``m`` (what ``install m`` asks first)."""
    good = good_catalog()
    kind = draw(st.sampled_from(["schema", "schema", "not_json", "other_id", "bad_default"]))
    if kind == "schema":
        return draw(schema_case(ModelInfo, good))
    if kind == "not_json":
        return Case(kind, draw(st.sampled_from([b"", b"<html>hub</html>", b"{"])), "")
    body = json.loads(json.dumps(good))
    if kind == "other_id":
        body["id"] = "other"
        return Case(kind, body, "id")
    body["default_version"] = draw(st.sampled_from(["../1.0", ".hidden", "a/b", ""]))
    return Case(kind, body, "default_version")
