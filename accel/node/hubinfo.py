"""What the node daemon asks the hub directly: the ranking and the catalog.

Owns two read-only GETs (``/api/model-usage/ranking`` and ``/api/models``) and the
pure :func:`popular_models` join that the dashboard and pre-seeding use. Installing is
the ModelManager's job; this module never fetches model files. The catalog answer is
revalidated with ``If-None-Match`` so a dashboard polling it costs the hub a 304.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from accel.errors import AuthError, HubError
from accel.schema import ModelInfo, RankingEntry

__all__ = ["HubInfo", "popular_models", "preseed_candidates"]

#: model states in which pre-seeding leaves a model alone
_PRESENT = frozenset({"ready", "queued", "downloading", "verifying", "paused", "error"})


class HubInfo:
    """A small client for the hub's ranking and catalog (JSON, with ETag caching)."""

    def __init__(self, hub_url: str, *, token: str | None = None, timeout_s: float = 10) -> None:
        self.hub_url = hub_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._catalog: list[ModelInfo] = []
        self._catalog_etag: str | None = None

    def _ensure(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _get(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any, str | None]:
        url = f"{self.hub_url}{path}"
        try:
            async with self._ensure().get(url, headers={**self._headers, **(headers or {})}) as r:
                if r.status == 304:
                    return 304, None, r.headers.get("ETag")
                if r.status in (401, 403):
                    raise AuthError(f"the hub refused the node's token for {path}", url=url)
                if r.status != 200:
                    raise HubError(
                        f"the hub answered HTTP {r.status} for {path}", url=url, status=r.status
                    )
                return 200, await r.json(), r.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # In words, not aiohttp's ("ssl:default [Connect call failed ...]" for a
            # plain-http hub); the library's text stays in the chained cause and the log.
            raise HubError(
                f"Hub unreachable at {self.hub_url}",
                hint="check that the hub is running and the node's --hub URL",
                url=url,
                reason=type(exc).__name__,
            ) from exc

    async def ranking(self, limit: int) -> list[RankingEntry]:
        """The hub's most requested models, rank 1 first."""
        _, body, _ = await self._get(f"/api/model-usage/ranking?limit={int(limit)}")
        return [RankingEntry.model_validate(x) for x in body]

    async def catalog(self) -> list[ModelInfo]:
        """Every model on the hub (cached; revalidated with If-None-Match)."""
        headers = {"If-None-Match": self._catalog_etag} if self._catalog_etag else {}
        status, body, etag = await self._get("/api/models", headers)
        if status == 200:
            self._catalog = [ModelInfo.model_validate(x) for x in body]
            self._catalog_etag = etag
        return self._catalog

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _default_size(info: ModelInfo) -> int | None:
    for v in info.versions:
        if v.version == info.default_version:
            return v.size_bytes
    return info.versions[-1].size_bytes if info.versions else None


def popular_models(
    ranking: Iterable[RankingEntry],
    catalog: Iterable[ModelInfo],
    local_states: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Join the ranking with the catalog and the node's states, for the dashboard.

    Models that are in the catalog but never requested follow the ranked ones (rank
    ``None``), so a fresh hub still offers something to install. ``local_states`` maps
    a model id to its best local state (``ready`` beats anything in flight).
    """
    by_id = {m.id: m for m in catalog}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in sorted(ranking, key=lambda e: e.rank):
        seen.add(entry.model_id)
        rows.append(_row(entry.model_id, entry.rank, entry.request_count, by_id, local_states))
    for model_id in sorted(set(by_id) - seen):
        rows.append(_row(model_id, None, 0, by_id, local_states))
    return rows


def _row(
    model_id: str,
    rank: int | None,
    count: int,
    by_id: Mapping[str, ModelInfo],
    local_states: Mapping[str, str],
) -> dict[str, Any]:
    info = by_id.get(model_id)
    return {
        "model_id": model_id,
        "rank": rank,
        "request_count": count,
        "name": info.name if info else model_id,
        "task": info.task if info else None,
        "languages": list(info.languages) if info else [],
        "default_version": info.default_version if info else None,
        "size_bytes": _default_size(info) if info else None,
        "local_state": local_states.get(model_id, "not_installed"),
    }


def preseed_candidates(
    ranking: Iterable[RankingEntry], local_states: Mapping[str, str], top_n: int
) -> list[str]:
    """The top-``top_n`` ranked model ids that the node should start installing.

    A model already present in any state is left alone: ready needs nothing, in-flight
    ones are on their way, paused ones were paused by a person and failed ones wait for
    an explicit retry (pre-seeding must not refetch a broken version every interval).
    """
    top = sorted(ranking, key=lambda e: e.rank)[: max(0, top_n)]
    return [e.model_id for e in top if local_states.get(e.model_id) not in _PRESENT]
