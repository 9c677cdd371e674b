"""The node daemon's HTTP surface: JSON control API, ``/events`` (SSE), the dashboard.

Owns request parsing, the mapping of :class:`~accel.errors.AccelError` to JSON error
bodies (the hub's shape: ``{"error": {"code", "message", "status", "hint"}}``) and the
SSE stream loop. Holds no state of its own: everything lives on the
:class:`~accel.node.daemon.NodeDaemon`.

The API listens on loopback by default and has no authentication; as a guard against
cross-site requests from a browser, every ``POST`` must carry ``Content-Type:
application/json`` (which a plain HTML form cannot send without a CORS preflight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from accel.errors import (
    AccelError,
    HubError,
    ModelNotAvailableError,
    NotFoundError,
    UnsafePathError,
    UsageError,
)
from accel.node.daemon import NodeDaemon, best_states, call
from accel.node.events import format_sse, to_jsonable
from accel.node.hubinfo import popular_models
from accel.node.view import total_line

__all__ = ["make_app"]

log = logging.getLogger("accel.node.api")

DAEMON: web.AppKey[NodeDaemon] = web.AppKey("daemon")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEEPALIVE_S = 15.0


def _status_of(exc: AccelError) -> int:
    if isinstance(exc, UsageError | UnsafePathError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ModelNotAvailableError):
        return 409
    if isinstance(exc, HubError):
        return 502
    return 500


def error_response(status: int, code: str, message: str, hint: str = "") -> web.Response:
    body = {"error": {"code": code, "message": message, "status": status, "hint": hint}}
    return web.json_response(body, status=status)


_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@web.middleware
async def _host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests whose Host names another site (DNS rebinding against loopback)."""
    bound = request.app[DAEMON].config.host
    if bound not in ("0.0.0.0", "::", ""):
        host = (request.host or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in _LOOPBACK_NAMES | {bound.lower()}:
            return error_response(
                403,
                "forbidden_host",
                f"this node does not answer for host {host!r}",
                "open the dashboard at http://127.0.0.1:PORT/",
            )
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AccelError as exc:
        status = _status_of(exc)
        return error_response(status, exc.code, exc.message, exc.hint)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api"):
            return error_response(
                exc.status, "not_found" if exc.status == 404 else "http_error", exc.reason
            )
        raise
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as exc:  # a bug must still answer in the API's shape, and be logged
        log.exception("%s %s failed", request.method, request.path)
        return error_response(
            500, "internal_error", f"{type(exc).__name__}: {exc}", "see the node's log"
        )


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise UsageError("POST bodies must be JSON", hint="send Content-Type: application/json")
    try:
        data = await request.json()
    except ValueError as exc:
        raise UsageError("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise UsageError("the body must be a JSON object")
    return data


def _model_args(data: dict[str, Any]) -> tuple[str, str | None]:
    model_id = data.get("model_id")
    version = data.get("version")
    if not isinstance(model_id, str) or not model_id:
        raise UsageError(
            "model_id is required", hint='e.g. {"model_id": "whisper", "version": "1.0"}'
        )
    if version is not None and not isinstance(version, str):
        raise UsageError("version must be a string or null")
    return model_id, version or None


def _priority(data: dict[str, Any]) -> int:
    value = data.get("priority", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError("priority must be an integer", hint="higher runs first")
    return value


async def _state(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    records = await d.local_records()
    reporter = None
    if d.reporter is not None:
        s = d.reporter.stats
        reporter = {
            "pending": d.reporter.pending,
            "delivered": s.delivered,
            "dropped": s.dropped,
            "failed_attempts": s.failed_attempts,
            "last_error": s.last_error,
        }
    return web.json_response(
        {
            "node_id": d.config.node_id,
            "hub_url": d.config.hub_url,
            "models_dir": str(d.config.models_dir),
            "models": records,
            "cards": list(d.cards.values()),
            "scheduler": reporter,
            "preseed": d.preseed_status,
            "peers": _peers_state(d),
        }
    )


def _peers_state(d: NodeDaemon) -> dict[str, Any] | None:
    """The peer server and its announces, when the node serves peers."""
    if d.peers is None:
        return None
    announce = None
    if d.announcer is not None:
        st = d.announcer.stats
        announce = {
            "sent": st.sent,
            "failed": st.failed,
            "last_ok_at": st.last_ok_at,
            "last_error": st.last_error,
            "interval_s": st.interval_s,
            "versions": st.versions,
        }
    return {
        "url": d.peer_url,
        "zone": d.config.zone,
        "transfers": d.peers.active,
        "refused_busy": d.peers.refused_busy,
        "announce": announce,
    }


async def _models(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DAEMON].local_records())


def _action(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        d = request.app[DAEMON]
        data = await _body(request)
        model_id, version = _model_args(data)
        result = await call(d.manager, name, model_id, version)
        d.events.publish({"model_id": model_id, "version": version, "action": name}, "action")
        await d.refresh_cards()
        return web.json_response({"ok": True, "action": name, "result": to_jsonable(result)})

    return handler


async def _install(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    data = await _body(request)
    model_id, version = _model_args(data)
    await call(d.manager, "install", model_id, version, priority=_priority(data), wait=False)
    await d.refresh_cards()
    return web.json_response({"ok": True, "model_id": model_id, "version": version}, status=202)


async def _set_priority(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    data = await _body(request)
    model_id, version = _model_args(data)
    priority = _priority(data)
    changed = await d.set_priority(model_id, version, priority)
    d.events.publish(
        {"model_id": model_id, "version": version, "priority": priority, "changed": changed},
        "priority",
    )
    await d.refresh_cards()
    return web.json_response(
        {"ok": True, "model_id": model_id, "priority": priority, "changed": changed}
    )


async def _job(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    assert d.guard is not None
    data = await _body(request)
    try:
        adm = await d.guard.admit(data)
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        raise UsageError(f"not a job: {exc}".splitlines()[0]) from exc
    if adm.ok:
        return web.json_response({"ok": True, "job_id": adm.job.job_id, "path": str(adm.path)})
    assert adm.report is not None
    d.events.publish(adm.report, "model_not_available")
    return web.json_response({"ok": False, "report": to_jsonable(adm.report)}, status=409)


async def _ranking(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError as exc:
        raise UsageError("limit must be an integer") from exc
    ranking, catalog = await asyncio.gather(d.hub.ranking(limit), d.hub.catalog())
    rows = popular_models(ranking, catalog, best_states(await d.local_records()))
    return web.json_response(rows[:limit])


async def _preseed(request: web.Request) -> web.Response:
    started = await request.app[DAEMON].preseed_once()
    return web.json_response({"ok": True, "started": started})


async def _events(request: web.Request) -> web.StreamResponse:
    d = request.app[DAEMON]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    sub = d.events.subscribe()
    try:
        missed = d.events.since(request.headers.get("Last-Event-ID"))
        if missed is None:
            cards = list(d.cards.values())
            await resp.write(format_sse("snapshot", {"cards": cards, "total": total_line(cards)}))
            missed = []
        for event_id, name, data in missed:
            await resp.write(format_sse(name, data, d.events.wire_id(event_id)))
        seen = missed[-1][0] if missed else 0
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    event_id, name, data = await sub.get()
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if event_id <= seen:
                continue  # already replayed
            await resp.write(format_sse(name, data, d.events.wire_id(event_id)))
            if name == "shutdown":
                break
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        sub.close()
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp


def _static(name: str) -> bytes:
    return resources.files("accel.node").joinpath("static", name).read_bytes()


_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in {"app.js", "style.css"}:  # a fixed list: no path from the request
        raise web.HTTPNotFound()
    ext = name[name.rindex(".") :]
    return web.Response(body=_static(name), content_type=_TYPES[ext], charset="utf-8")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(daemon: NodeDaemon) -> web.Application:
    """The aiohttp application of one node daemon."""
    app = web.Application(middlewares=[_host_check, _errors])
    app[DAEMON] = daemon
    r = app.router
    r.add_get("/", _index)
    r.add_get("/static/{name}", _asset)
    r.add_get("/healthz", _healthz)
    r.add_get("/events", _events)
    r.add_get("/api/state", _state)
    r.add_get("/api/models", _models)
    r.add_get("/api/ranking", _ranking)
    r.add_post("/api/install", _install)
    for name in ("pause", "resume", "retry", "remove"):
        r.add_post(f"/api/{name}", _action(name))
    r.add_post("/api/priority", _set_priority)
    r.add_post("/api/jobs", _job)
    r.add_post("/api/preseed", _preseed)
    return app
