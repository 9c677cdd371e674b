"""The hub's aiohttp application: routes, auth, error bodies.

Owns the HTTP surface of DESIGN.md "Hub HTTP API". Catalog answers are bytes prepared
by :class:`~accel.hub.catalog.Catalog` (one serialization per catalog change) sent with
a strong ETag and held to RFC 9110's conditional headers (:mod:`accel.serving.conditional`:
``If-None-Match`` -> 304, ``If-Match`` -> 412). Every error leaves as
``{"error": {"code", "message", "status"}}``. With tokens configured, everything except
``/healthz`` and ``/openapi.json`` needs ``Authorization: Bearer <token>``, compared in
constant time. ``/healthz`` answers 503 when the store or the usage database cannot be
reached (:mod:`accel.hub.health`), so a load balancer takes this hub out; a request that
needs the usage database while it fails is a 503 ``usage_db_unavailable``. Never
imports the client side (fetch, manager).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from accel.errors import UsageDbError
from accel.hub.catalog import Catalog
from accel.hub.health import Health
from accel.hub.hfapi import HF_LIST_PARAMS, hf_list_answer
from accel.hub.hfapi import register as register_hf_api
from accel.hub.jsonanswer import answer_response
from accel.hub.openapi import OPENAPI_JSON
from accel.hub.page import render_page
from accel.hub.peerapi import is_peer_route
from accel.hub.peerapi import register as register_peer_api
from accel.hub.stores import DirectoryStore, ModelStore, Sender
from accel.hub.tracker import DEFAULT_TTL_S
from accel.hub.tracker_table import open_peer_table
from accel.hub.usage import UsageCounter, open_usage_db
from accel.schema import UsageReport
from accel.serving.bearer import bearer_matches
from accel.serving.problem import Problem

__all__ = ["CATALOG", "USAGE", "create_app"]

log = logging.getLogger("accel.hub")

CATALOG = web.AppKey("catalog", Catalog)
USAGE = web.AppKey("usage", UsageCounter)
_SENDER = web.AppKey("sender", Sender)
_TOKENS = web.AppKey("tokens", tuple)
_HEALTH = web.AppKey("health", Health)

_OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
_JSON = "application/json"
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    412: "precondition_failed",
    413: "payload_too_large",
    416: "range_not_satisfiable",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The one error shape of the hub."""
    body = json.dumps({"error": {"code": code, "message": message, "status": status}})
    if headers:
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return web.Response(status=status, text=body, content_type=_JSON, headers=headers)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    tokens: tuple[bytes, ...] = request.app[_TOKENS]
    if (
        tokens
        and request.path not in _OPEN_PATHS
        and not is_peer_route(request)  # these check the fleet token (or ours) themselves
        and not bearer_matches(request.headers, tokens)
    ):
        return error_response(
            401,
            "unauthorized",
            "missing or wrong bearer token",
            {"WWW-Authenticate": 'Bearer realm="accel"'},
        )
    try:
        return await handler(request)
    except Problem as p:
        return error_response(p.status, p.code, p.message, p.headers)
    except UsageDbError as exc:  # the database failed: another hub (or a retry) may do
        return error_response(503, exc.code, str(exc), {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, exc.reason, headers)


def _catalog(request: web.Request) -> Catalog:
    catalog = request.app[CATALOG]
    catalog.refresh()
    return catalog


async def _list_models(request: web.Request) -> web.Response:
    q = request.query
    answer = _catalog(request).list_answer(q.get("task"), q.get("language"))
    if any(k in q for k in HF_LIST_PARAMS):  # HfApi().list_models(search=, author=, limit=)
        answer = hf_list_answer(answer, q)
    return answer_response(request, answer)


async def _get_manifest(request: web.Request) -> web.Response:
    m = request.match_info
    model_id = f"{m['org']}/{m['name']}" if "org" in m else m["model_id"]
    version = request.match_info["version"]
    catalog = _catalog(request)
    answer = catalog.manifest_answer(model_id, version)
    if answer is None:
        if catalog.model_answer(model_id) is None:
            raise Problem(404, "model_not_found", f"no model {model_id!r} on this hub")
        raise Problem(404, "version_not_found", f"model {model_id!r} has no version {version!r}")
    response = answer_response(request, answer)
    # One install request = one manifest fetch; not awaited: counting never slows installs.
    # A 304 is not counted: the client holds this (immutable) manifest already, so its
    # install was counted when it got it; counting the revalidation would count a resume
    # or a re-check as one more download, and only when the client's cache had expired.
    if request.method == "GET" and response.status == 200:
        request.app[USAGE].count(model_id)
    return response


async def _ranking(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "100")
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 10_000:
        raise Problem(400, "bad_request", "limit must be an integer between 1 and 10000")
    catalog = _catalog(request)
    entries = await request.app[USAGE].ranking(int(raw), known=set(catalog.models))
    body = json.dumps([e.model_dump(mode="json") for e in entries]).encode()
    return web.Response(body=body, content_type=_JSON, headers={"Cache-Control": "no-cache"})


async def _report_usage(request: web.Request) -> web.Response:
    try:
        report = UsageReport.model_validate_json(await request.read())
    except ValidationError:
        raise Problem(
            400, "bad_request", 'the body must be JSON like {"model_id": "<id>"}'
        ) from None
    catalog = _catalog(request)
    if report.model_id not in catalog.models:
        raise Problem(404, "model_not_found", f"no model {report.model_id!r} on this hub")
    await request.app[USAGE].report(report.model_id)  # 200 only once committed
    return web.json_response({"model_id": report.model_id, "counted": 1})


async def _storage(request: web.Request) -> web.StreamResponse:
    return await request.app[_SENDER].handle(request)


async def _healthz(request: web.Request) -> web.Response:
    report = await request.app[_HEALTH].report()
    checks = {"store": report.store, "usage_db": report.usage_db}
    if report.ok:
        return web.json_response({"status": "ok"})
    failed = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    body = {
        "status": "unavailable",
        **checks,
        "error": {
            "code": "unhealthy",
            "message": f"this hub cannot serve: {failed}",
            "status": 503,
        },
    }
    return web.json_response(body, status=503, headers={"Cache-Control": "no-store"})


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_JSON, content_type=_JSON)


async def _page(request: web.Request) -> web.Response:
    catalog = _catalog(request)
    ranking = await request.app[USAGE].ranking(20, known=set(catalog.models))
    return web.Response(text=render_page(catalog, ranking), content_type="text/html")


def create_app(
    store: Path | ModelStore,
    *,
    tokens: Sequence[str] = (),
    peer_tokens: Sequence[str] = (),
    peer_ttl: float = DEFAULT_TTL_S,
    mirrors: Sequence[str] = (),
    usage_db: str | None = None,
    report_timeout_s: float = 5.0,
) -> web.Application:
    """The hub over ``store`` (a directory or a :class:`ModelStore`); ``tokens`` non-empty
    turns bearer auth on; ``peer_tokens`` are the fleet's, for the peer tracker's routes
    (announces are listed for ``peer_ttl`` seconds); ``mirrors`` are added to every
    manifest (see Catalog). ``usage_db``: a ``postgresql://`` URL shared by several hubs
    (its publish notices then reach this hub's catalog at once), else the store's SQLite;
    a usage report the database has not taken within ``report_timeout_s`` is a 503. The
    tracker's live table is in that database too, so the processes and hubs sharing it
    hand out each other's announced peers."""
    backend = DirectoryStore(store) if isinstance(store, str | Path) else store
    backend.prepare()  # a store that cannot be used fails here, before anything listens
    catalog = Catalog(backend, mirrors=mirrors)
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024)
    app[CATALOG] = catalog
    # The tracker's live table goes where the counts go: whoever shares one shares both.
    shared_db = usage_db or backend.usage_db
    app[USAGE] = UsageCounter(open_usage_db(shared_db), report_timeout_s=report_timeout_s)
    app[_HEALTH] = Health(backend, app[USAGE])
    app[_SENDER] = backend.sender(catalog)
    app[_TOKENS] = tuple(t.encode() for t in tokens if t)
    feed = None
    if usage_db and usage_db.startswith(("postgresql://", "postgres://")):
        from accel.hub.catalog_feed import CatalogFeed

        feed = CatalogFeed(usage_db, lambda payload: catalog.notice())

    async def _start(app: web.Application) -> None:
        await app[USAGE].start()
        if feed is not None:
            feed.start()

    async def _stop(app: web.Application) -> None:
        if feed is not None:
            await feed.close()
        await catalog.close()
        await app[USAGE].close()
        sender = app[_SENDER]
        sender.close()
        aclose = getattr(sender, "aclose", None)
        if aclose is not None:
            await aclose()
        backend.close()

    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    r = app.router
    r.add_get("/", _page)
    r.add_get("/healthz", _healthz)
    r.add_get("/openapi.json", _openapi)
    r.add_get("/api/models", _list_models)
    r.add_get("/api/models/{model_id}/versions/{version}/manifest", _get_manifest)
    r.add_get("/api/models/{org}/{name}/versions/{version}/manifest", _get_manifest)
    r.add_get("/api/model-usage/ranking", _ranking)
    r.add_post("/api/model-usage", _report_usage)
    r.add_get("/storage/{tail:.*}", _storage)  # add_get also answers HEAD
    # before HF's /api/models/{tail}: /api/peers/announce, /api/models/.../peers
    register_peer_api(
        app,
        catalog,
        open_peer_table(shared_db),
        hub_tokens=app[_TOKENS],
        peer_tokens=tuple(t.encode() for t in peer_tokens if t),
        ttl=peer_ttl,
    )
    # /api/models/{repo} (the seed's fields and HF's), HF's revision/tree/resolve routes
    register_hf_api(app, catalog, app[USAGE])
    return app
