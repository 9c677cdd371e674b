"""Which peers an install reads from: the hub's tracker, and a static list.

A peer is another node serving what it holds of a version over the hub's own
``/storage/models/{id}/{version}/{path}`` protocol (the node daemon's peer listener). This
module finds them for one version and turns them into file URLs for the fetch engine,
which knows only sources and URLs (never trackers or models) and trusts none of them:
every block a peer sends is checked against the manifest's blake3 digests, the file's
SHA256 at the end, and the hub stays the source of last resort.

- With a fleet token (``accel install --peer-token T``, ``ACCEL_PEER_TOKEN``), the hub's
  tracker is asked: ``GET /api/models/{id}/versions/{v}/peers`` with ``Authorization:
  Bearer T`` (to the hub's origin only). Its answer is kept a few seconds, so the files
  of one version ask once, and asked again for a file that starts later (peers come
  and go). A tracker that cannot answer costs the install its peers, never the install.
- ``--peer URL`` (repeatable) names peers without the tracker: base URLs, as a node
  announces them.

The token goes to the tracker and to peers only (the engine sends it to a peer's
origin and drops it on any redirect elsewhere); the hub's own token never goes to a
peer. Never prints; the warnings go to the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from pydantic import ValidationError

from accel.manager.hubclient import HubClient, _http_get, _reason
from accel.schema import PeerList

__all__ = ["PEER_TOKEN_ENV", "PeerFinder", "peer_file_url"]

#: the environment variable of the fleet token (as ``accel serve`` and ``accel node``)
PEER_TOKEN_ENV = "ACCEL_PEER_TOKEN"
#: how long one tracker answer is used for the next files of the same version
_ANSWER_TTL_S = 5.0
_TIMEOUT_S = 5.0

log = logging.getLogger("accel.manager")


def peer_file_url(base: str, model_id: str, version: str, path: str) -> str:
    """A file's URL at a peer announced at ``base`` (the hub's /storage layout)."""
    return (
        f"{base.rstrip('/')}/storage/models/{quote(model_id)}/{quote(version)}/"
        f"{quote(path, safe='/')}"
    )


@dataclass
class PeerFinder:
    """The peers of a version, from the tracker (with ``token``) and ``static``."""

    hub: HubClient
    token: str | None = None
    static: Sequence[str] = ()
    #: this node's zone and id, for the tracker's choice (same zone first, not itself)
    zone: str = ""
    node_id: str = ""
    k: int = 10
    _answers: dict[tuple[str, str], tuple[float, list[str]]] = field(default_factory=dict)
    asks: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.static)

    @property
    def headers(self) -> dict[str, str]:
        """What a request to a peer carries: the fleet token, nothing else."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def bases(self, model_id: str, version: str) -> list[str]:
        """Base URLs of peers of ``model_id`` ``version``: the static ones, then the
        tracker's (duplicates dropped)."""
        out = [b.rstrip("/") for b in self.static]
        if self.token and self.hub.hub_url:
            for b in await self._tracked(model_id, version):
                if b not in out:
                    out.append(b)
        return out

    async def urls(self, model_id: str, version: str, path: str) -> list[str]:
        """The URLs of one file at every peer of its version."""
        return [
            peer_file_url(b, model_id, version, path) for b in await self.bases(model_id, version)
        ]

    async def _tracked(self, model_id: str, version: str) -> list[str]:
        key = (model_id, version)
        now = time.monotonic()
        kept = self._answers.get(key)
        if kept is not None and now - kept[0] < _ANSWER_TTL_S:
            return kept[1]
        query = {"k": str(self.k)}
        if self.zone:
            query["zone"] = self.zone
        if self.node_id:
            query["node_id"] = self.node_id
        url = (
            f"{self.hub.hub_url}/api/models/{quote(model_id, safe='/')}/versions/"
            f"{quote(version, safe='')}/peers?{urlencode(query)}"
        )
        self.asks += 1
        try:
            status, _, body = await asyncio.to_thread(_http_get, url, self.headers, _TIMEOUT_S)
        except (OSError, ValueError) as exc:
            log.warning("the tracker cannot be asked for peers of %s@%s: %s; the hub "
                        "serves every byte", model_id, version, _reason(exc))  # fmt: skip
            return []
        if status != 200:
            log.warning("the tracker answered HTTP %d for peers of %s@%s; the hub serves "
                        "every byte", status, model_id, version)  # fmt: skip
            return []
        try:
            answer = PeerList.model_validate_json(body)
        except ValidationError:
            log.warning("the tracker's answer for %s@%s is not a peer list", model_id, version)
            return []
        bases = [
            p.url.rstrip("/") for p in answer.peers if p.url.startswith(("http://", "https://"))
        ]
        self._answers[key] = (now, bases)
        return bases
