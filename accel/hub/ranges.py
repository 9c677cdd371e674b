"""HTTP single-range arithmetic for the storage route (RFC 9110 section 14).

Pure functions, no I/O, so the cases ``web.FileResponse`` gets wrong (``bytes=-0``,
``If-Range`` with an ETag) are decided here and tested without sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["ByteRange", "Unsatisfiable", "if_range_allows", "parse_range"]

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range ``start..end`` within a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


@dataclass(frozen=True)
class Unsatisfiable:
    """The range lies outside the file: answer 416 with ``Content-Range: bytes */size``."""

    size: int

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | Unsatisfiable | None:
    """Decide what a ``Range`` header asks of a file of ``size`` bytes.

    Returns None when the whole file should be sent (no header, a syntax we do not
    read, or several ranges: a server may ignore Range, and one 200 beats a multipart
    body nobody here needs), a :class:`ByteRange` for a satisfiable single range, and
    :class:`Unsatisfiable` for ``bytes=-0``, a start at or past the end, or any range of
    an empty file.
    """
    if header is None:
        return None
    m = _RANGE_RE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return Unsatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        return Unsatisfiable(size)
    end = size - 1 if last == "" else min(int(last), size - 1)
    return ByteRange(start, end, size)


def if_range_allows(if_range: str | None, etag: str, last_modified: str) -> bool:
    """True when a Range may be honoured given the request's ``If-Range`` header.

    An entity tag must match ours strongly (a weak tag never matches); a date must be
    exactly our ``Last-Modified``. Anything else means the client holds another version
    of the file and gets the whole of it with 200.
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag
    try:
        theirs = parsedate_to_datetime(value)
        ours = parsedate_to_datetime(last_modified)
    except (TypeError, ValueError, IndexError):
        return False
    return theirs == ours
