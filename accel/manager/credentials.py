"""A token bound to the origin it was given for: it is sent there and nowhere else.

One manager talks to several servers at once: its hub (``--token``), an HF-compatible
endpoint (``HF_TOKEN``), and whatever their redirects name (presigned object-store URLs,
peers). A token given for one of them must never reach another, so no credential is an
engine-wide default header: each download carries the headers of the source it comes
from (:meth:`OriginToken.headers_for` its URL), and a source hands its token out only for
URLs at its own origin (scheme, host and port, as browsers, curl and requests compare
them). Redirects to another origin drop credentials in the fetch engine
(:mod:`accel.fetch.redirects`). Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OriginToken", "origin_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an absolute http(s) URL, None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


@dataclass(frozen=True)
class OriginToken:
    """A bearer token for the server at ``base_url`` (either may be None: no header)."""

    base_url: str | None
    token: str | None

    def headers_for(self, url: str) -> dict[str, str]:
        """``Authorization: Bearer`` when ``url`` is at the token's origin, else nothing."""
        if not self.token or not self.base_url:
            return {}
        mine = origin_of(self.base_url)
        if mine is None or origin_of(url) != mine:
            return {}
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def headers(self) -> dict[str, str]:
        """The headers for the token's own origin (requests to ``base_url`` itself)."""
        return self.headers_for(self.base_url or "")
