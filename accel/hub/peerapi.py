"""The tracker's HTTP routes: nodes announce what they hold and ask whom to read from.

``POST /api/peers/announce`` (a :class:`~accel.schema.PeerAnnounce`; answers the TTL and
the interval to announce at) and ``GET /api/models/{id}/versions/{v}/peers?zone=&k=&node_id=``
(a :class:`~accel.schema.PeerList`, never cached: the table changes every second). With
a fleet token (``accel serve --peer-token``), these routes need it (or a hub token);
without one they fall under the hub's own auth. Owns the HTTP edge of the tracker,
nothing else: the live table is a :class:`~accel.hub.tracker_table.PeerTable` in the
usage database (shared by every process and hub over it), the choice
:func:`~accel.hub.tracker.choose_peers`. While that database cannot be used, both routes
answer 503 ``tracker_unavailable`` (with Retry-After) and the rest of the hub goes on.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from accel.errors import UsageDbError
from accel.hub.catalog import Catalog
from accel.hub.tracker import MAX_PEERS_ANSWERED, choose_peers
from accel.hub.tracker_table import PeerTable
from accel.schema import AnnounceAnswer, PeerAnnounce, PeerEntry, PeerList
from accel.serving.bearer import bearer_matches
from accel.serving.problem import Problem

__all__ = ["PEER_TABLE", "is_peer_route", "register"]

PEER_TABLE = web.AppKey("peer_table", PeerTable)
_PEER_TOKENS = web.AppKey("peer_tokens", tuple)
_RNG = web.AppKey("peer_rng", random.Random)
_ANNOUNCE = "/api/peers/announce"
_NO_STORE = {"Cache-Control": "no-store"}
#: an announce of 1,000 versions with the longest ids fits; the hub's 64 KiB cap would not
MAX_ANNOUNCE_BYTES = 2 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_peer_route(request: web.Request) -> bool:
    """True for the tracker's routes, which check the fleet token themselves when set."""
    if not request.app[_PEER_TOKENS]:
        return False
    path = request.path
    return path == _ANNOUNCE or (path.startswith("/api/models/") and path.endswith("/peers"))


def _check_fleet_token(request: web.Request, hub_tokens: tuple[bytes, ...]) -> None:
    tokens: tuple[bytes, ...] = request.app[_PEER_TOKENS]
    if tokens and not bearer_matches(request.headers, tokens + hub_tokens):
        raise Problem(
            401,
            "unauthorized",
            "missing or wrong fleet token (accel node --peer-token)",
            {"WWW-Authenticate": 'Bearer realm="accel-peers"'},
        )


async def _read_capped(request: web.Request) -> bytes:
    """The body, up to :data:`MAX_ANNOUNCE_BYTES` (past it: 413)."""
    if (request.content_length or 0) > MAX_ANNOUNCE_BYTES:
        raise Problem(
            413, "payload_too_large", f"an announce is at most {MAX_ANNOUNCE_BYTES} bytes"
        )
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_ANNOUNCE_BYTES:
            raise Problem(
                413, "payload_too_large", f"an announce is at most {MAX_ANNOUNCE_BYTES} bytes"
            )
        parts.append(chunk)
    return b"".join(parts)


def _unavailable(exc: UsageDbError, doing: str) -> Problem:
    return Problem(
        503,
        "tracker_unavailable",
        f"the tracker cannot {doing} now ({exc}); try again in a moment: the hub's other "
        "routes still answer",
        {"Retry-After": "1"},
    )


def register(
    app: web.Application,
    catalog: Catalog,
    table: PeerTable,
    *,
    hub_tokens: tuple[bytes, ...],
    peer_tokens: tuple[bytes, ...],
    ttl: float,
) -> None:
    """Add the tracker's routes to ``app``, over ``table`` (opened at the app's start,
    after the hooks already added, closed at its cleanup); announces are listed for
    ``ttl`` s."""
    app[PEER_TABLE] = table
    app[_PEER_TOKENS] = peer_tokens
    app[_RNG] = random.Random()

    async def _open(app: web.Application) -> None:
        await table.open()

    async def _close(app: web.Application) -> None:
        await table.close()

    app.on_startup.append(_open)
    app.on_cleanup.append(_close)

    async def announce(request: web.Request) -> web.Response:
        _check_fleet_token(request, hub_tokens)
        try:
            body = PeerAnnounce.model_validate_json(await _read_capped(request))
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            raise Problem(
                400, "bad_request", f"the announce is malformed at {where}: see PeerAnnounce"
            ) from None
        holds = [(h.model_id, h.version, h.complete) for h in body.versions]
        try:
            listed = await table.announce(body.node_id, body.url, body.zone, holds, ttl=ttl)
        except UsageDbError as exc:
            raise _unavailable(exc, "record announces") from None
        if not listed:
            raise Problem(503, "tracker_full", "the tracker holds as many nodes as it may")
        answer = AnnounceAnswer(ttl=ttl, interval=ttl / 3)
        return web.json_response(answer.model_dump(), headers=_NO_STORE)

    async def peers(request: web.Request) -> web.Response:
        _check_fleet_token(request, hub_tokens)
        m = request.match_info
        model_id = f"{m['org']}/{m['name']}" if "org" in m else m["model_id"]
        version = m["version"]
        catalog.refresh()
        if catalog.manifest_answer(model_id, version) is None:
            raise Problem(404, "version_not_found", f"no version {version!r} of {model_id!r}")
        raw_k = request.query.get("k", "10")
        if not (raw_k.isascii() and raw_k.isdigit()) or not 1 <= int(raw_k) <= 1000:
            raise Problem(400, "bad_request", "k must be an integer between 1 and 1000")
        k = min(int(raw_k), MAX_PEERS_ANSWERED)
        zone = request.query.get("zone", "")
        try:
            candidates = await table.candidates(
                model_id, version, zone=zone, k=k, exclude=request.query.get("node_id", "")
            )
        except UsageDbError as exc:
            raise _unavailable(exc, "read its peers") from None
        seen = choose_peers(candidates, zone=zone, k=k, rng=request.app[_RNG])
        answer = PeerList(
            peers=[
                PeerEntry(node_id=p.node_id, url=p.url, zone=p.zone, complete=p.complete)
                for p in seen
            ],
            ttl=ttl,
        )
        return web.json_response(answer.model_dump(), headers=_NO_STORE)

    app.router.add_post(_ANNOUNCE, announce)
    app.router.add_get("/api/models/{model_id}/versions/{version}/peers", peers)
    app.router.add_get("/api/models/{org}/{name}/versions/{version}/peers", peers)
