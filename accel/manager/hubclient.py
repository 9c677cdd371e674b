"""The manager's one network seam to the hub's JSON API, with ``manifest_cache.json``.

Owns GETs of ``/api/models/{id}``, ``.../versions/{v}/manifest`` and the usage ranking,
and their cache in ``<models_dir>/.accel/manifest_cache.json``: an answer younger than
the TTL is used as is; an older one is revalidated with ``If-None-Match`` (a 304 costs no
body); when the hub cannot be reached, a cached answer of any age is used with a warning.
A hub that cannot answer right now (connection refused or cut, a 502/503/504 from the
load balancer in front of several hubs, or a hub going away mid-answer) is asked again
per :data:`HUB_RETRY` before any of that: behind a balancer the next try reaches a
live hub, so a hub killed mid-install costs the install a retry, not the install.
HTTP errors are translated to :mod:`accel.errors` here and nowhere else, and every answer
is parsed by ``hubanswers.py`` (a body that is not JSON or does not match the schema is a
``BadManifestError`` naming the field, and is never cached). Never
downloads model files (the fetch engine does).

The requests go through the standard library's ``http.client`` in a thread, not
aiohttp: an install asks the hub two or three small questions, and importing aiohttp
and building its session cost more (~0.1 s of a 2-core machine, in every ``accel
install`` process, before the first byte) than the answers themselves.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import portalocker

from accel.errors import AuthError, BadManifestError, HubError, NotFoundError
from accel.fetch.slots import RetryPolicy
from accel.manager.credentials import OriginToken
from accel.manager.fsutil import atomic_write_bytes
from accel.manager.hubanswers import (
    decode,
    parse_catalog,
    parse_manifest,
    parse_model_info,
    parse_ranking,
)
from accel.schema import ModelInfo, RankingEntry, VersionManifest

__all__ = ["HUB_RETRY", "HubClient"]

#: four tries over about two seconds: long enough for a balancer to route around a
#: dead hub, short enough that a hub that is really down is reported (or the cache used)
HUB_RETRY = RetryPolicy(max_attempts=4, base=0.25, cap=2.0)
_TRANSIENT = frozenset({502, 503, 504})

log = logging.getLogger("accel.manager")
T = TypeVar("T")


class HubClient:
    """GETs against the hub with a TTL + ETag cache shared by every process of a models dir."""

    def __init__(
        self,
        hub_url: str | None,
        cache_dir: Path,
        *,
        token: str | None = None,
        ttl_s: float = 300.0,
        on_warning: Callable[[str], None] | None = None,
        timeout_s: float = 15.0,
        retry: RetryPolicy = HUB_RETRY,
    ) -> None:
        self.retry = retry
        self.hub_url = hub_url.rstrip("/") if hub_url else None
        self.cache_path = cache_dir / "manifest_cache.json"
        self.lock_path = cache_dir / "manifest_cache.lock"
        self.token = token
        #: the hub's token, sent to the hub's origin only (never an engine-wide default)
        self.credentials = OriginToken(self.hub_url, token)
        self.ttl_s = ttl_s
        self.on_warning = on_warning
        self.timeout_s = timeout_s
        self.requests = 0
        self.retries = 0
        self.revalidated = 0
        self.offline_hits = 0

    @property
    def headers(self) -> dict[str, str]:
        """What a request to the hub (and a download of its files) carries: its token,
        when one was given; sent to the hub's origin only."""
        return self.credentials.headers

    async def aclose(self) -> None:
        """Nothing to release (each request has its own connection); kept for symmetry."""

    # -- cache file --------------------------------------------------------------------
    def _read_cache(self) -> dict[str, Any]:
        try:
            data = json.loads(self.cache_path.read_bytes())
        except (OSError, ValueError):
            return {}
        entries = data.get("entries") if isinstance(data, dict) else None
        return entries if isinstance(entries, dict) else {}

    def _store(self, key: str, entry: dict[str, Any]) -> None:
        with portalocker.Lock(str(self.lock_path), mode="a", timeout=30, check_interval=0.01):
            entries = self._read_cache()
            entries[key] = entry
            body = json.dumps({"schema_version": 1, "entries": entries}).encode()
            atomic_write_bytes(self.cache_path, body)

    def cached(self, key: str) -> Any | None:
        """The cached body for an API path (any age), or ``None``."""
        entry = self._read_cache().get(key)
        return entry.get("body") if isinstance(entry, dict) else None

    # -- requests ----------------------------------------------------------------------
    def _usable(self, entry: Any, parse: Callable[[Any], T]) -> tuple[dict[str, Any], T] | None:
        # A cached body is used only if it still parses: an answer cached by an older
        # accel, or one a newer rule rejects, is asked for again instead.
        if not isinstance(entry, dict) or "body" not in entry:
            return None
        try:
            return entry, parse(entry["body"])
        except BadManifestError:
            return None

    def _fall_back(self, path: str, cached: tuple[dict[str, Any], T], why: str, now: float) -> T:
        entry, value = cached
        self.offline_hits += 1
        age = now - float(entry.get("fetched_at", 0))
        message = f"{why}; using the cached answer for {path} from {age:.0f} s ago"
        log.warning(message, extra={"path": path})
        if self.on_warning is not None:
            self.on_warning(message)
        return value

    async def get(
        self,
        path: str,
        parse: Callable[[Any], T],
        *,
        what: str,
        cache: bool = True,
        revalidate: bool = False,
        model_id: str | None = None,
        version: str | None = None,
    ) -> T:
        """GET ``path`` from the hub, through the cache, as ``parse`` makes it.

        ``parse`` turns the JSON body into a typed value or raises
        :class:`~accel.errors.BadManifestError`; only answers that parse are cached.
        ``revalidate`` skips the TTL (a cached answer is still revalidated with
        If-None-Match, so an unchanged answer costs a 304 without a body). A hub that
        cannot be reached, or answers something unusable, is replaced by a cached answer
        of any age, with a warning; without one, the error is raised.
        """
        cached = self._usable(self._read_cache().get(path), parse) if cache else None
        now = time.time()
        age = now - float(cached[0].get("fetched_at", 0)) if cached is not None else None
        if cached is not None and age is not None and age < self.ttl_s and not revalidate:
            return cached[1]
        if self.hub_url is None:
            if cached is not None:
                return cached[1]
            raise HubError(f"no hub URL given and nothing cached for {path}", path=path)
        headers: dict[str, str] = {}
        if cached is not None and cached[0].get("etag"):
            headers["If-None-Match"] = cached[0]["etag"]
        url = self.hub_url + path
        try:
            status, etag, raw = await self._get_retrying(
                url, {**self.credentials.headers_for(url), **headers}
            )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if cached is not None:
                return self._fall_back(path, cached, f"hub unreachable ({type(exc).__name__})", now)
            raise HubError(
                f"cannot reach the hub at {self.hub_url}: {_reason(exc)}", url=url
            ) from exc
        if status == 304 and cached is not None:
            self.revalidated += 1
            cached[0]["fetched_at"] = now
            self._store(path, cached[0])
            return cached[1]
        if status == 404:
            raise NotFoundError(f"the hub has no {path}", url=url, status=404)
        if status in (401, 403):
            raise AuthError(f"the hub refused {url} ({status})", status=status)
        if status != 200:
            text = raw[:200].decode("utf-8", "replace")
            raise HubError(f"the hub answered {status} for {url}: {text}", url=url, status=status)
        try:
            body = decode(raw, what, model_id=model_id, version=version)
            value = parse(body)
        except BadManifestError as err:
            err.facts["url"] = err.url = url  # type: ignore[attr-defined]
            if cached is not None:
                return self._fall_back(path, cached, err.message, now)
            raise
        if cache:
            self._store(path, {"etag": etag, "fetched_at": now, "body": body})
        return value

    async def _get_retrying(
        self, url: str, headers: dict[str, str]
    ) -> tuple[int, str | None, bytes]:
        """One GET, tried again per ``self.retry`` while the hub cannot answer right now."""
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                status, etag, raw = await asyncio.to_thread(_http_get, url, headers, self.timeout_s)
            except (ConnectionError, http.client.HTTPException):
                # refused, reset, closed early, cut short: a hub going away. Not a
                # timeout (it waited timeout_s already) nor any other OSError (EACCES,
                # no route: asking again changes nothing).
                if not self.retry.allows(attempt):
                    raise
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if status in _TRANSIENT and self.retry.allows(attempt):
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            return status, etag, raw

    async def model(self, model_id: str, *, revalidate: bool = False) -> ModelInfo:
        """``GET /api/models/{id}``."""
        try:
            return await self.get(
                f"/api/models/{quote(model_id)}",
                lambda body: parse_model_info(body, model_id),
                what=f"catalog entry of {model_id}",
                revalidate=revalidate,
                model_id=model_id,
            )
        except NotFoundError as exc:
            raise NotFoundError(
                f"the hub at {self.hub_url} has no model {model_id!r}",
                hint="see what it has with `accel search`",
                url=exc.facts.get("url"),
                status=404,
            ) from exc

    async def manifest(self, model_id: str, version: str) -> VersionManifest:
        """``GET /api/models/{id}/versions/{v}/manifest``, checked (see ``hubanswers.py``).

        An unknown version names the versions the hub has, never a URL path.
        """
        try:
            return await self.get(
                f"/api/models/{quote(model_id)}/versions/{quote(version)}/manifest",
                lambda body: parse_manifest(body, model_id, version),
                what=f"manifest of {model_id}@{version}",
                model_id=model_id,
                version=version,
            )
        except NotFoundError as exc:
            info = await self.model(model_id)  # the model's own not-found if it is unknown
            have = [v.version for v in info.versions]
            raise NotFoundError(
                f"the hub has no version {version!r} of {model_id}"
                + (f" (it has {', '.join(have)})" if have else " (it has no versions)"),
                hint=f"install one of them: `accel install {model_id}@{have[-1]}`"
                if have
                else "publish a version first",
                url=exc.facts.get("url"),
                status=404,
            ) from exc

    async def catalog(
        self, task: str | None = None, language: str | None = None
    ) -> list[ModelInfo]:
        """``GET /api/models[?task=&language=]``: what the hub offers (never cached)."""
        query = urlencode({k: v for k, v in (("task", task), ("language", language)) if v})
        return await self.get(
            "/api/models" + (f"?{query}" if query else ""),
            parse_catalog,
            what="model catalog",
            cache=False,
        )

    async def ranking(self, limit: int) -> list[RankingEntry]:
        """``GET /api/model-usage/ranking?limit=N`` (never cached: it is a live count)."""
        return await self.get(
            f"/api/model-usage/ranking?limit={limit}",
            parse_ranking,
            what="usage ranking",
            cache=False,
        )

    def expire(self, model_id: str, version: str) -> None:
        """Force the next manifest read of a version to revalidate with the hub."""
        key = f"/api/models/{quote(model_id)}/versions/{quote(version)}/manifest"
        entry = self._read_cache().get(key)
        if isinstance(entry, dict):
            entry["fetched_at"] = 0
            self._store(key, entry)

    def cached_default_version(self, model_id: str) -> str | None:
        """The hub's default_version as last seen (any age), without a request."""
        body = self.cached(f"/api/models/{quote(model_id)}")
        if isinstance(body, dict):
            value = body.get("default_version")
            return value if isinstance(value, str) else None
        return None

    def storage_url(self, model_id: str, version: str, path: str) -> str:
        """The URL of one file of a version on the hub."""
        if self.hub_url is None:
            raise HubError("no hub URL given", hint="pass --hub or set ACCEL_HUB")
        return (
            f"{self.hub_url}/storage/models/{quote(model_id)}/{quote(version)}/"
            f"{quote(path, safe='/')}"
        )


def _http_get(url: str, headers: dict[str, str], timeout: float) -> tuple[int, str | None, bytes]:
    """One blocking GET: status, ETag and body (run in a thread; one connection each)."""
    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        import ssl

        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    elif parts.scheme == "http":
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    else:
        raise ValueError(f"unsupported hub URL scheme {parts.scheme!r} in {url}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", target, headers={"Accept": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.getheader("ETag"), resp.read()
    finally:
        conn.close()


def _reason(exc: BaseException) -> str:
    """Why a request failed, in words: ``connection refused``, not ``[Errno 111] ...``."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the OSError
    if isinstance(reason, OSError):
        return _reason(reason)
    return str(exc) or type(exc).__name__
