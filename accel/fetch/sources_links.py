"""What each source of a download answered: where its redirects led, its validators.

The selection policy (:mod:`~accel.fetch.sources`) knows how fast and how honest a
source is; a :class:`Link` keeps the rest a request to it needs, per source, because
nginx, S3 and the hub each spell their ETag and Last-Modified their own way and each
redirects (or presigns) on its own: a source's validators are held to that source's
answers only; content identity across sources is the expected size and digests.
"""

from __future__ import annotations

from dataclasses import dataclass

from accel.fetch.messages import Head

__all__ = ["Link"]


@dataclass
class Link:
    """One source's URL and what its answers said (mutable: the supervisor's state)."""

    url: str
    #: where the URL's redirects led (chunks go straight there); None until known, and
    #: again after the target refused a request (an expired signed URL)
    resolved: str | None = None
    #: refusals in a row of the current target (the re-resolution budget)
    refusals: int = 0
    etag: str | None = None
    last_modified: str | None = None
    #: an answer of this source has given its validators (or the probe did)
    known: bool = False

    @property
    def target(self) -> str:
        """The URL a request to this source goes to now."""
        return self.resolved or self.url

    def learn(self, head: Head) -> None:
        """Keep the validators of the source's first answer (later ones are held to them)."""
        if self.known:
            return
        self.known = True
        self.etag = head.etag
        self.last_modified = head.last_modified
        if head.url is not None:
            self.resolved = head.url
