"""The hand-written OpenAPI 3.1 description of the hub, served at ``/openapi.json``.

Written by hand (not generated from the handlers) so that it is a contract to test the
server against. Schemas of the bodies come from :mod:`accel.schema`.

A model id is ``name`` or ``org/name`` (:mod:`accel.modelid`). An OpenAPI path parameter
is one segment (a ``/`` in it would be sent as ``%2F``), while clients, Hugging Face's
first, send ``org/name`` as two segments. So every path with ``{model_id}`` has a twin
with ``{org}/{name}`` (:func:`_with_org_name_twins`): the same operation, the id's two
parts as two parameters, each with the pattern of an id segment.
"""

from __future__ import annotations

import json
from typing import Any

from accel.modelid import MODEL_ID_SEGMENT_MAX, MODEL_ID_SEGMENT_PATTERN
from accel.schema import (
    AnnounceAnswer,
    ErrorBody,
    ModelInfo,
    PeerAnnounce,
    PeerList,
    RankingEntry,
    UsageReport,
    VersionManifest,
)

__all__ = ["FILE_PATH_PATTERN", "ID_SEGMENT_SCHEMA", "NAME_PATTERN", "OPENAPI", "OPENAPI_JSON"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("ErrorBody"), description)


_ETAG = {"ETag": {"description": "strong entity tag of the body", "schema": {"type": "string"}}}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


# RFC 9110 conditionals (accel.serving.conditional), the same rules on every route.
_INM = _header("If-None-Match", "ETags from earlier answers (weak comparison): 304 on a match")
_IM = _header("If-Match", "ETags (strong comparison) or *: 412 when none matches")
_IMS = _header("If-Modified-Since", "an HTTP-date: 304 when not modified since")
_IUS = _header("If-Unmodified-Since", "an HTTP-date: 412 when modified since")
_412 = _error("If-Match or If-Unmodified-Since did not hold (code precondition_failed)")
# The hub's own rules (accel.serving.paths) written as JSON Schema patterns: ids and versions
# are what check_name accepts; a file path is what split_raw_path accepts, "/"-separated
# segments without control characters or backslashes that are never "" or "." or "..".
# A segment longer than a file name can be (255 UTF-8 bytes) is well formed but cannot be
# listed, so it is a 404, not a 400: the pattern needs no length.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
_SEGMENT_CHAR = r"[^/\\\u0000-\u001f\u007f]"
_SEGMENT_START = r"[^./\\\u0000-\u001f\u007f]"
_SEGMENT = rf"(?:{_SEGMENT_START}|\.{_SEGMENT_START}|\.\.{_SEGMENT_CHAR}){_SEGMENT_CHAR}*"
FILE_PATH_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
#: one segment of a model id: a one-segment id, or the org or the name of org/name
ID_SEGMENT_SCHEMA = {
    "type": "string",
    "pattern": MODEL_ID_SEGMENT_PATTERN,
    "maxLength": MODEL_ID_SEGMENT_MAX,
}


def _id_part(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": ID_SEGMENT_SCHEMA,
    }


_MODEL_ID = _id_part("model_id", "a one-segment model id (an org/name id: the {org}/{name} form)")
_ORG = _id_part("org", "the org of an org/name model id")
_NAME = _id_part("name", "the name of an org/name model id")
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN},
}
_COMMON_ERRORS = {"401": _error("missing or wrong bearer token (when the hub has one)")}


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (ModelInfo, VersionManifest, RankingEntry, UsageReport, ErrorBody):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            out[name] = sub
        out[model.__name__] = schema
    return out


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "accel hub",
        "version": "1",
        "description": "Model catalog, per-version manifests with blake3 chunk digests, "
        "usage ranking and file storage with HTTP Range. Every error body is "
        '{"error": {"code", "message", "status"}}.',
    },
    "components": {
        "schemas": _schemas(),
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/healthz": {
            "get": {
                "summary": "liveness (never needs a token)",
                "security": [{}],
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"status": {"const": "ok"}}}, "alive"
                    )
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "this description (never needs a token)",
                "security": [{}],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            }
        },
        "/": {
            "get": {
                "summary": "HTML page: catalog and popular-model ranking",
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {}}},
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/models": {
            "get": {
                "summary": "every model with its versions and files",
                "parameters": [
                    {
                        "name": "task",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "language",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    _INM,
                    _IM,
                ],
                "responses": {
                    "200": {
                        **_json({"type": "array", "items": _ref("ModelInfo")}, "the catalog"),
                        "headers": _ETAG,
                    },
                    "304": {"description": "not modified", "headers": _ETAG},
                    "412": _412,
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/models/{model_id}": {
            "get": {
                "summary": "one model",
                "parameters": [_MODEL_ID, _INM, _IM],
                "responses": {
                    "200": {**_json(_ref("ModelInfo"), "the model"), "headers": _ETAG},
                    "304": {"description": "not modified", "headers": _ETAG},
                    "412": _412,
                    "404": _error("no such model (code model_not_found)"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/models/{model_id}/versions/{version}/manifest": {
            "get": {
                "summary": "a version's files with sha256 and blake3 block digests; "
                "a 200 counts one install request for the ranking (a 304 does not: "
                "the client was counted when it got the manifest)",
                "parameters": [_MODEL_ID, _VERSION, _INM, _IM],
                "responses": {
                    "200": {**_json(_ref("VersionManifest"), "the manifest"), "headers": _ETAG},
                    "304": {"description": "not modified", "headers": _ETAG},
                    "412": _412,
                    "404": _error("model_not_found or version_not_found"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/model-usage/ranking": {
            "get": {
                "summary": "models by install requests, most requested first (ties by id)",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    }
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("RankingEntry")}, "ranking"),
                    "400": _error("bad limit (code bad_request)"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/model-usage": {
            "post": {
                "summary": "report one use of a model (the scheduler's view of demand)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("UsageReport")}},
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "model_id": {"type": "string"},
                                "counted": {"type": "integer"},
                            },
                        },
                        "counted (committed to the store)",
                    ),
                    "400": _error("body is not {model_id} (code bad_request)"),
                    "404": _error("no such model (code model_not_found)"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/storage/models/{model_id}/{version}/{file_path}": {
            "get": {
                "summary": "a file listed in the version's manifest; single Range supported",
                "description": "file_path is the path of the manifest: its '/' go into "
                "the URL as they are (an encoded %2F is part of a segment, so 400), each "
                "segment percent-decoded once. A path matching the pattern is well formed; "
                "when that version's manifest does not list it (or it would leave the "
                "store) the answer is 404. Anything else is 400 (code bad_path).",
                "parameters": [
                    _MODEL_ID,
                    _VERSION,
                    {
                        "name": "file_path",
                        "in": "path",
                        "required": True,
                        "description": "'/'-separated segments; a segment is never empty, "
                        "'.' or '..' and has no backslash or control character (U+0000-U+001F, "
                        "U+007F)",
                        "schema": {"type": "string", "pattern": FILE_PATH_PATTERN},
                    },
                    _header("Range", "bytes=first-last, first- or -suffix (ASCII digits)"),
                    _header("If-Range", "an ETag (strong) or Last-Modified: else 200"),
                    _IM,
                    _IUS,
                    _INM,
                    _IMS,
                ],
                "responses": {
                    "200": {
                        "description": "the whole file",
                        "content": {"application/octet-stream": {}},
                    },
                    "206": {
                        "description": "the requested range, with Content-Range",
                        "content": {"application/octet-stream": {}},
                    },
                    "304": {"description": "If-None-Match or If-Modified-Since: not modified"},
                    "400": _error(
                        "a segment is empty, '.', '..' or has a backslash or control "
                        "character (code bad_path)"
                    ),
                    "404": _error("well formed, but not a file of this version (code not_found)"),
                    "412": _412,
                    "416": _error("range outside the file; Content-Range: bytes */size"),
                    **_COMMON_ERRORS,
                },
            },
        },
    },
}


# The Hugging Face Hub API (accel.hub.hfapi): repo id = model id, revision = version,
# ``main`` = the default version, a version's commit sha (40 hex) = that version.
_REVISION = {
    "name": "revision",
    "in": "path",
    "required": True,
    "description": "a version, main (= default_version) or a version's 40-hex commit sha",
    "schema": {"type": "string", "pattern": NAME_PATTERN},
}
_HF_PATH = {
    "name": "file_path",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": FILE_PATH_PATTERN},
}
_HF_404 = _error(
    "X-Error-Code: RepoNotFound, RevisionNotFound or EntryNotFound (as huggingface_hub reads)"
)
_HF_400 = _error("a path segment is not clean (code bad_path)")
_HF_INFO = {
    "200": {
        **_json({"type": "object"}, "the seed's ModelInfo fields plus HF's id, sha, siblings"),
        "headers": _ETAG,
    },
    "304": {"description": "not modified", "headers": _ETAG},
    "400": _HF_400,
    "404": _HF_404,
    "412": _412,
    **_COMMON_ERRORS,
}
_TREE_QUERY = [
    {"name": "recursive", "in": "query", "required": False, "schema": {"type": "boolean"}},
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "where the page starts (from the Link: rel=next of the previous page)",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
]
_HF_TREE = {
    "200": _json({"type": "array", "items": {"type": "object"}}, "a page; Link: rel=next"),
    "400": _error("a bad path segment (bad_path) or cursor (bad_request)"),
    "404": _HF_404,
    **_COMMON_ERRORS,
}
_LIST = OPENAPI["paths"]["/api/models"]["get"]
_LIST["parameters"] += [
    {
        "name": "search",
        "in": "query",
        "required": False,
        "description": "HF list_models: a part of the id (case-insensitive)",
        "schema": {"type": "string"},
    },
    {
        "name": "author",
        "in": "query",
        "required": False,
        "description": "HF list_models: the org of org/name ids",
        "schema": {"type": "string"},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "HF list_models: at most this many",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
]
_LIST["responses"]["400"] = _error("limit is not a non-negative integer (code bad_request)")
_MODEL_INFO = OPENAPI["paths"]["/api/models/{model_id}"]["get"]
_MODEL_INFO["summary"] = "one model: the seed's fields and HF's (id, sha, siblings of main)"
_MODEL_INFO["responses"]["404"] = _error(
    "no such model (code model_not_found, X-Error-Code: RepoNotFound)"
)
_MODEL_INFO["responses"]["400"] = _HF_400
OPENAPI["paths"].update(
    {
        "/api/models/{model_id}/revision/{revision}": {
            "get": {
                "summary": "HF revision info; a 200 counts one install request",
                "parameters": [_MODEL_ID, _REVISION, _INM, _IM],
                "responses": _HF_INFO,
            }
        },
        "/api/models/{model_id}/tree/{revision}": {
            "get": {
                "summary": "HF tree listing of the version's root, paginated",
                "parameters": [_MODEL_ID, _REVISION, *_TREE_QUERY],
                "responses": _HF_TREE,
            }
        },
        "/api/models/{model_id}/tree/{revision}/{file_path}": {
            "get": {
                "summary": "HF tree listing under a directory, paginated",
                "parameters": [_MODEL_ID, _REVISION, _HF_PATH, *_TREE_QUERY],
                "responses": _HF_TREE,
            }
        },
        "/{model_id}/resolve/{revision}/{file_path}": {
            "get": {
                "summary": "HF file resolve: a 302 to /storage with X-Repo-Commit, "
                "X-Linked-Etag (sha256) and X-Linked-Size; counts nothing",
                "parameters": [_MODEL_ID, _REVISION, _HF_PATH],
                "responses": {
                    "302": {"description": "Location: the file's /storage URL"},
                    "400": _HF_400,
                    "404": _HF_404,
                    **_COMMON_ERRORS,
                },
            }
        },
    }
)
_resolve = OPENAPI["paths"]["/{model_id}/resolve/{revision}/{file_path}"]
_resolve["head"] = {**_resolve["get"], "summary": "headers of GET"}
_storage = OPENAPI["paths"]["/storage/models/{model_id}/{version}/{file_path}"]
_storage["head"] = {**_storage["get"], "summary": "headers of GET, no body"}

# The peer tracker (accel/hub/peerapi.py): nodes announce, askers get up to K peers.
for _model in (PeerAnnounce, AnnounceAnswer, PeerList):
    _schema = _model.model_json_schema(ref_template="#/components/schemas/{model}")
    OPENAPI["components"]["schemas"].update(_schema.pop("$defs", {}))
    OPENAPI["components"]["schemas"][_model.__name__] = _schema
_FLEET_ERRORS = {"401": _error("missing or wrong fleet token (or hub token)")}
OPENAPI["paths"]["/api/peers/announce"] = {
    "post": {
        "summary": "a node's heartbeat: where it serves peers and what it holds (replaces "
        "its last announce; listed for ttl seconds)",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("PeerAnnounce")}},
        },
        "responses": {
            "200": _json(_ref("AnnounceAnswer"), "listed; announce again every interval s"),
            "400": _error("malformed announce (code bad_request)"),
            "413": _error("an announce of more than 2 MiB (code payload_too_large)"),
            "503": _error(
                "the tracker is full (code tracker_full) or its database cannot be used "
                "now (code tracker_unavailable; Retry-After)"
            ),
            **_FLEET_ERRORS,
        },
    }
}
OPENAPI["paths"]["/api/models/{model_id}/versions/{version}/peers"] = {
    "get": {
        "summary": "up to k live peers holding the version: the asker's zone first, "
        "shuffled; never cached",
        "parameters": [
            _MODEL_ID,
            _VERSION,
            {"name": "zone", "in": "query", "required": False, "schema": {"type": "string"}},
            {
                "name": "k",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            {"name": "node_id", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": _json(_ref("PeerList"), "peers"),
            "400": _error("bad k (code bad_request)"),
            "404": _error("no such version (code version_not_found)"),
            "503": _error("the tracker's database cannot be used now (code tracker_unavailable)"),
            **_FLEET_ERRORS,
        },
    }
}


def _with_org_name_twins(paths: dict[str, Any]) -> dict[str, Any]:
    """``paths`` plus, for each path with ``{model_id}``, its ``{org}/{name}`` twin."""
    out: dict[str, Any] = {}
    for path, ops in paths.items():
        out[path] = ops
        if "{model_id}" not in path:
            continue
        twin: dict[str, Any] = {}
        for method, op in ops.items():
            params: list[dict[str, Any]] = []
            for param in op.get("parameters", []):
                params += [_ORG, _NAME] if param is _MODEL_ID else [param]
            summary = op.get("summary", "")
            twin[method] = {**op, "parameters": params, "summary": f"{summary} (org/name id)"}
        out[path.replace("{model_id}", "{org}/{name}")] = twin
    return out


OPENAPI["paths"] = _with_org_name_twins(OPENAPI["paths"])
OPENAPI_JSON = json.dumps(OPENAPI, indent=1).encode()
