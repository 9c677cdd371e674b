"""The Hugging Face Hub API routes of the hub (read side), as ``huggingface_hub`` calls them.

Routes (repo ids of one segment, ``whisper``, or two, ``org/whisper``):

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: the seed's model
  fields plus HF's ``id``, ``modelId``, ``sha``, ``siblings[{rfilename, size, blobId,
  lfs}]``; a 200 of the ``/revision/`` form counts one install request (every
  ``snapshot_download`` by name makes it once, as an accel install fetches one manifest).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: ``?recursive=``; pages of
  :data:`~accel.hub.hfview.TREE_PAGE_SIZE` entries chained by ``Link: <...>; rel="next"``.
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: a 302 to the file's ``/storage`` URL with
  ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``. A
  single file resolve counts nothing (``from_pretrained`` alone is not an install).
  ``/storage`` answers carry the same three headers (added on response prepare), because
  a redirect to the same host is followed by the client and read there.
- Errors keep the hub's body and add ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``: the values ``huggingface_hub`` matches).

Revisions map to versions in :mod:`accel.hub.hfview` (pure). Auth is the app's bearer
middleware: ``HF_TOKEN`` is sent as ``Authorization: Bearer``. Never writes anything
but the usage count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from accel.errors import UnsafePathError
from accel.hub.catalog import Answer, Catalog
from accel.hub.hfview import commit_sha, repo_info, resolve_revision, tree_page
from accel.hub.jsonanswer import answer_response
from accel.hub.storage import Problem
from accel.hub.usage import UsageCounter
from accel.schema import ModelInfo, VersionInfo
from accel.serving.paths import check_relpath, split_raw_path

__all__ = ["HF_LIST_PARAMS", "hf_list_answer", "register", "split_repo"]

_JSON = "application/json"
_STORAGE = "/storage/models/"
_ROUTE_WORDS = frozenset({"revision", "tree", "resolve"})


@dataclass
class _Answers:
    """Serialized revision-info answers, rebuilt when the catalog's generation moves."""

    generation: int = -1
    cache: dict[tuple[str, str | None], Answer] = field(default_factory=dict)

    def get(self, catalog: Catalog, info: ModelInfo, version: VersionInfo | None) -> Answer:
        if catalog.generation != self.generation:
            self.cache.clear()
            self.generation = catalog.generation
        key = (info.id, None if version is None else version.version)
        answer = self.cache.get(key)
        if answer is None:
            answer = Answer.of(repo_info(info, version))
            self.cache[key] = answer
        return answer


_ANSWERS = web.AppKey("hf_answers", _Answers)
_CATALOG = web.AppKey("hf_catalog", Catalog)
_USAGE = web.AppKey("hf_usage", UsageCounter)


def split_repo(segments: tuple[str, ...], known: dict[str, ModelInfo]) -> tuple[str, int]:
    """The repo id at the start of ``segments`` and how many segments it took.

    A one-segment id the catalog knows wins, then a known ``org/name``; an unknown id
    is one segment when a route word (``revision``, ``tree``, ``resolve``) follows it,
    else two (either way the caller answers RepoNotFound).
    """
    if not segments:
        return "", 1
    if segments[0] in known:
        return segments[0], 1
    if len(segments) >= 2:
        pair = f"{segments[0]}/{segments[1]}"
        if pair in known or segments[1] not in _ROUTE_WORDS:
            return pair, 2
    return segments[0], 1


def _repo_not_found(repo: str) -> Problem:
    return Problem(
        404,
        "model_not_found",
        f"no model {repo!r} on this hub",
        {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
    )


def _revision_not_found(repo: str, revision: str) -> Problem:
    return Problem(
        404,
        "version_not_found",
        f"model {repo!r} has no version or revision {revision!r}",
        {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"},
    )


def _entry_not_found(repo: str, path: str, sha: str) -> Problem:
    return Problem(
        404,
        "not_found",
        f"model {repo!r} has no file {path!r} at that revision",
        {
            "X-Error-Code": "EntryNotFound",
            "X-Error-Message": "Entry not found",
            "X-Repo-Commit": sha,
        },
    )


def _segments(raw_tail: str) -> tuple[str, ...]:
    try:
        return split_raw_path(raw_tail)
    except UnsafePathError:
        raise Problem(400, "bad_path", "the path is not a clean relative path") from None


def _catalog(request: web.Request) -> Catalog:
    catalog = request.app[_CATALOG]
    catalog.refresh()
    return catalog


def _lookup(catalog: Catalog, repo: str, revision: str | None) -> tuple[ModelInfo, VersionInfo]:
    info = catalog.models.get(repo)
    if info is None:
        raise _repo_not_found(repo)
    version = resolve_revision(info, revision)
    if version is None:
        raise _revision_not_found(repo, revision or "main")
    return info, version


async def _api_models(request: web.Request) -> web.StreamResponse:
    """``/api/models/{repo}[/revision/{rev} | /tree/{rev}[/{path}]]``, told apart here."""
    catalog = _catalog(request)
    raw = request.raw_path.split("?", 1)[0][len("/api/models/") :].split("/")
    # Only the repo id and the route word are split here: a tree path may arrive as one
    # segment with %2F inside (huggingface_hub quotes it whole), so it is decoded apart.
    head = _segments("/".join(raw[:4]))
    repo, used = split_repo(head, catalog.models)
    rest = head[used:]
    if not rest:
        info = catalog.models.get(repo)
        if info is None:
            raise _repo_not_found(repo)
        version = resolve_revision(info, None)
        return answer_response(request, request.app[_ANSWERS].get(catalog, info, version))
    if rest[0] == "revision" and len(raw) == used + 2:
        info, version = _lookup(catalog, repo, rest[1])
        response = answer_response(request, request.app[_ANSWERS].get(catalog, info, version))
        if request.method == "GET" and response.status == 200:
            # Not awaited, as for a manifest fetch: counting never slows a download.
            request.app[_USAGE].count(info.id)
        return response
    if rest[0] == "tree" and len(rest) >= 2:
        try:
            path = unquote("/".join(raw[used + 2 :]), errors="strict")
            if path:
                check_relpath(path)
        except (UnicodeDecodeError, UnsafePathError):
            raise Problem(400, "bad_path", "the tree path is not a clean relative path") from None
        return _tree(request, catalog, repo, rest[1], path)
    raise Problem(404, "not_found", "no such route")


def _tree(
    request: web.Request, catalog: Catalog, repo: str, revision: str, path: str
) -> web.Response:
    _, version = _lookup(catalog, repo, revision)
    q = request.query
    recursive = q.get("recursive", "false").lower() in ("1", "true")
    raw_cursor = q.get("cursor", "0")
    if not (raw_cursor.isascii() and raw_cursor.isdigit()):
        raise Problem(400, "bad_request", "cursor must be a non-negative integer")
    page = tree_page(version, path, recursive=recursive, cursor=int(raw_cursor))
    if page is None:
        raise _entry_not_found(repo, path, commit_sha(version))
    headers = {"X-Repo-Commit": commit_sha(version), "Cache-Control": "no-cache"}
    if page.next_cursor is not None:
        nxt = request.url.with_query({**q, "cursor": str(page.next_cursor)})
        headers["Link"] = f'<{nxt}>; rel="next"'
    body = json.dumps(page.entries, separators=(",", ":")).encode()
    return web.Response(body=body, content_type=_JSON, headers=headers)


async def _resolve(request: web.Request) -> web.StreamResponse:
    """``/{repo}/resolve/{rev}/{file}``: a redirect to the bytes, with HF's metadata."""
    catalog = _catalog(request)
    segments = _segments(request.raw_path.split("?", 1)[0].lstrip("/"))
    repo, used = split_repo(segments, catalog.models)
    rest = segments[used:]
    if len(rest) < 3 or rest[0] != "resolve":
        raise Problem(404, "not_found", "no such route")
    revision, relpath = rest[1], "/".join(rest[2:])
    info, version = _lookup(catalog, repo, revision)
    sha = commit_sha(version)
    entry = catalog.file_entry(info.id, version.version, relpath)
    if entry is None:
        raise _entry_not_found(repo, relpath, sha)
    location = _STORAGE + "/".join(
        quote(s, safe="") for s in (*info.id.split("/"), version.version, *relpath.split("/"))
    )
    headers = {
        "Location": location,
        "X-Repo-Commit": sha,
        "ETag": f'"{entry.sha256}"',
        "X-Linked-Etag": f'"{entry.sha256}"',
        "X-Linked-Size": str(entry.size_bytes),
        "Cache-Control": "no-cache",
        # The redirect's own (empty) body, for HEAD too (aiohttp leaves it out there);
        # the file's size is X-Linked-Size, and the Content-Length after the redirect.
        "Content-Length": "0",
    }
    return web.Response(status=302, headers=headers)


async def _storage_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add HF's metadata headers to ``/storage`` answers (the end of a followed redirect)."""
    if response.status not in (200, 206, 304) or not request.path.startswith(_STORAGE):
        return
    catalog = request.app[_CATALOG]
    try:
        segments = split_raw_path(request.raw_path.split("?", 1)[0][len(_STORAGE) :])
    except UnsafePathError:
        return
    repo, used = split_repo(segments, catalog.models)
    info = catalog.models.get(repo)
    if info is None or len(segments) < used + 2:
        return
    version_name, relpath = segments[used], "/".join(segments[used + 1 :])
    entry = catalog.file_entry(info.id, version_name, relpath)
    version = next((v for v in info.versions if v.version == version_name), None)
    if entry is None or version is None:
        return
    response.headers["X-Repo-Commit"] = commit_sha(version)
    response.headers["X-Linked-Etag"] = f'"{entry.sha256}"'
    response.headers["X-Linked-Size"] = str(entry.size_bytes)


#: ``GET /api/models`` parameters of HF's ``list_models`` that the seed's list does not have
HF_LIST_PARAMS = frozenset({"search", "author", "limit"})


def hf_list_answer(listed: Answer, query: Mapping[str, str]) -> Answer:
    """The seed's list (already filtered by task/language) narrowed as HF's list is:
    ``search`` (in the id, case-insensitive), ``author`` (the org of ``org/name``) and
    ``limit`` (at most that many; a bad one is a 400)."""
    items: list[dict[str, Any]] = json.loads(listed.body)
    search = query.get("search", "").lower()
    author = query.get("author")
    raw = query.get("limit")
    if raw is not None and not (raw.isascii() and raw.isdigit()):
        raise Problem(400, "bad_request", "limit must be a non-negative integer")
    chosen = [
        m
        for m in items
        if search in m["id"].lower() and (author is None or m["id"].startswith(author + "/"))
    ]
    return Answer.of(chosen if raw is None else chosen[: int(raw)])


def register(app: web.Application, catalog: Catalog, usage: UsageCounter) -> None:
    """Add the HF routes to ``app`` (after the hub's own, which match first)."""
    app[_CATALOG] = catalog
    app[_USAGE] = usage
    app[_ANSWERS] = _Answers()
    app.on_response_prepare.append(_storage_headers)
    r = app.router
    r.add_get("/api/models/{tail:.+}", _api_models)
    r.add_get("/{repo}/resolve/{tail:.+}", _resolve)
    r.add_get("/{org}/{name}/resolve/{tail:.+}", _resolve)
