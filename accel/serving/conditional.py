"""RFC 9110 conditional requests and byte ranges, decided without I/O (values in, decision out).

Owns the grammar and the evaluation of ``If-Match``, ``If-None-Match``,
``If-Modified-Since``, ``If-Unmodified-Since``, ``If-Range`` and ``Range`` for a
representation known by its validators (entity tag, Last-Modified second) and size, in
the order of RFC 9110 section 13.2.2:

1. ``If-Match`` (strong comparison; ``*`` matches any current representation), false ->
   412; when absent, ``If-Unmodified-Since`` (a valid date only), false -> 412;
2. ``If-None-Match`` (weak comparison: ``W/"x"`` matches ``"x"``), false -> 304 on GET
   and HEAD, else 412; when absent and the method is GET or HEAD, ``If-Modified-Since``
   (a valid date only), false -> 304;
3. ``Range`` (GET and HEAD alike: a HEAD answers what the GET would), honoured only when
   ``If-Range`` is absent or holds (strong entity-tag comparison, or a date equal to
   Last-Modified); one range, or several that overlap or touch (coalesced), -> 206;
   nothing satisfiable -> 416; several disjoint ranges -> the whole representation (a
   server may ignore Range, and no client here wants multipart bodies).

A header that does not parse is treated as RFC 9110 says for its field: an invalid date
is ignored, an invalid ``Range`` is ignored (200), an ``If-Range`` that is not a valid
validator does not hold (200), an entity-tag list that does not parse matches nothing.
Digits are ASCII only (``[0-9]``: Python's ``\\d`` and ``str.isdigit`` accept ``٠-٩``).
HTTP-dates are case sensitive and come in three formats (IMF-fixdate, RFC 850 with its
two-digit year, asctime).

Imports only the standard library and nothing of the hub: the node's peer server and the
client side are meant to import the same rules.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ByteRange",
    "Decision",
    "EntityTag",
    "Representation",
    "Request",
    "Unsatisfiable",
    "evaluate",
    "format_http_date",
    "if_range_holds",
    "parse_entity_tag",
    "parse_entity_tags",
    "parse_http_date",
    "parse_range",
]

# --- entity tags (RFC 9110 section 8.8.3) ------------------------------------------------
# etagc = %x21 / %x23-7E / obs-text; obs-text arrives decoded, so any non-ASCII is allowed.
_ETAG_RE = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\U0010ffff]*)"')
_OWS = " \t"


@dataclass(frozen=True)
class EntityTag:
    """An entity tag: its opaque part (without quotes) and whether it is weak."""

    opaque: str
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'

    def strong_match(self, other: EntityTag) -> bool:
        """RFC 9110 8.8.3.2 strong comparison: both strong and the same opaque tag."""
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: EntityTag) -> bool:
        """Weak comparison: the same opaque tag, weakness ignored."""
        return self.opaque == other.opaque


def parse_entity_tag(text: str) -> EntityTag | None:
    """One entity tag (``"x"`` or ``W/"x"``), surrounding OWS allowed; None if invalid."""
    m = _ETAG_RE.fullmatch(text.strip(_OWS))
    return None if m is None else EntityTag(m.group(2), weak=m.group(1) is not None)


def parse_entity_tags(field: str) -> list[EntityTag] | Literal["*"] | None:
    """``"*"`` or a ``#entity-tag`` list (empty elements allowed); None when it does not parse.

    Scanned, not split on commas: a comma is a legal character inside an entity tag.
    """
    value = field.strip(_OWS)
    if value == "*":
        return "*"
    tags: list[EntityTag] = []
    pos, end = 0, len(value)
    while pos < end:
        while pos < end and value[pos] in _OWS + ",":
            pos += 1
        if pos == end:
            break
        m = _ETAG_RE.match(value, pos)
        if m is None:
            return None
        tags.append(EntityTag(m.group(2), weak=m.group(1) is not None))
        pos = m.end()
        while pos < end and value[pos] in _OWS:
            pos += 1
        if pos < end and value[pos] != ",":
            return None
    return tags if tags else None


# --- HTTP-date (RFC 9110 section 5.6.7) --------------------------------------------------
_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MON = "|".join(_MONTHS)
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_RE = re.compile(rf"(?:{_DAYS}), ([0-9]{{2}}) ({_MON}) ([0-9]{{4}}) {_TIME} GMT")
_RFC850_RE = re.compile(rf"(?:{_LONG_DAYS}), ([0-9]{{2}})-({_MON})-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME_RE = re.compile(rf"(?:{_DAYS}) ({_MON}) ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")


def parse_http_date(text: str, *, now: float) -> int | None:
    """Seconds since the epoch of an HTTP-date in any of its three formats, else None.

    ``now`` (epoch seconds) resolves RFC 850's two-digit year: a year that would lie
    more than 50 years in the future is the most recent past year with those digits.
    The day name is not checked against the date (recipients are asked to be robust).
    """
    value = text.strip(_OWS)
    if m := _IMF_RE.fullmatch(value):
        day, mon, year, hh, mm, ss = m.groups()
        y = int(year)
    elif m := _RFC850_RE.fullmatch(value):
        day, mon, yy, hh, mm, ss = m.groups()
        this_year = time.gmtime(now).tm_year
        y = this_year // 100 * 100 + int(yy)
        if y > this_year + 50:
            y -= 100
    elif m := _ASCTIME_RE.fullmatch(value):
        mon, day, hh, mm, ss, year = m.groups()
        y = int(year)
    else:
        return None
    fields = (y, _MONTHS.index(mon) + 1, int(day), int(hh), int(mm), min(int(ss), 59))
    try:
        _dt.datetime(*fields)  # the calendar check: 31 Feb, hour 24, year 0 are invalid
    except ValueError:
        return None
    return calendar.timegm(fields)


def format_http_date(epoch: float) -> str:
    """IMF-fixdate of ``epoch`` (whole seconds; the fraction is dropped, as validators are)."""
    t = time.gmtime(int(epoch))
    day = _DAYS.split("|")[t.tm_wday]
    return (
        f"{day}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


# --- byte ranges (RFC 9110 section 14) ---------------------------------------------------
_SPEC_RE = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")
_MAX_SPECS = 100  # more is a denial-of-service shape, not a download: ignore the header
_HUGE = 1 << 63  # stands for any position longer than 18 digits (no int() of 5000 digits)


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range ``start..end`` within a representation of ``size`` bytes."""

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
    """No range lies inside the representation: 416 with ``Content-Range: bytes */size``."""

    size: int

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > 18 else int(digits)


def parse_range(field: str | None, size: int) -> ByteRange | Unsatisfiable | None:
    """Decide what a ``Range`` field asks of ``size`` bytes.

    None means "send the whole representation": no field, a unit other than ``bytes``,
    a field that does not follow the grammar (whitespace inside a range-spec, a
    last-pos below its first-pos, non-ASCII digits, an empty set), more than 100
    range-specs, or several satisfiable ranges that do not coalesce into one.
    :class:`Unsatisfiable` when no range-spec is satisfiable (``bytes=-0``, a start
    at or past the end, any range of an empty representation).
    """
    if field is None:
        return None
    unit, eq, spec_set = field.strip(_OWS).partition("=")
    if not eq or unit.lower() != "bytes":
        return None
    specs = [s.strip(_OWS) for s in spec_set.split(",")]
    if len(specs) > _MAX_SPECS:
        return None
    wanted: list[tuple[int, int]] = []
    seen = False
    for spec in specs:
        if not spec:
            continue  # an empty list element (RFC 9110 5.6.1)
        m = _SPEC_RE.fullmatch(spec)
        if m is None:
            return None
        seen = True
        first, last, suffix = m.groups()
        if suffix is not None:
            n = _position(suffix)
            if n > 0 and size > 0:
                wanted.append((max(0, size - n), size - 1))
            continue
        start = _position(first)
        if last and _position(last) < start:
            return None  # an invalid range-spec makes the whole field invalid
        if start < size:
            wanted.append((start, size - 1 if not last else min(_position(last), size - 1)))
    if not seen:
        return None
    if not wanted:
        return Unsatisfiable(size)
    wanted.sort()
    start, end = wanted[0]
    for s, e in wanted[1:]:
        if s > end + 1:
            return None  # disjoint ranges: a multipart answer nobody here needs
        end = max(end, e)
    return ByteRange(start, end, size)


# --- evaluation (RFC 9110 section 13.2.2) ------------------------------------------------
@dataclass(frozen=True)
class Request:
    """The request fields a conditional answer depends on (a field sent twice is joined)."""

    method: str = "GET"
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None
    if_range: str | None = None
    range: str | None = None

    @classmethod
    def from_headers(cls, method: str, headers: Iterable[tuple[str, str]]) -> Request:
        """From every ``(name, value)`` pair of a request (repeated fields joined by ``, ``:
        a list field then reads as one list, and a repeated date or If-Range no longer
        parses, which RFC 9110 treats as absent or false)."""
        names = {
            "if-match": "if_match",
            "if-none-match": "if_none_match",
            "if-modified-since": "if_modified_since",
            "if-unmodified-since": "if_unmodified_since",
            "if-range": "if_range",
            "range": "range",
        }
        found: dict[str, list[str]] = {}
        for name, value in headers:
            key = names.get(name.lower())
            if key is not None:
                found.setdefault(key, []).append(value)
        joined = {k: ", ".join(v) for k, v in found.items()}
        return cls(method=method.upper(), **joined)


@dataclass(frozen=True)
class Representation:
    """What the server would send: its validators and, if it serves ranges, its size."""

    etag: str | None = None
    last_modified: int | None = None  # epoch seconds
    size: int | None = None  # None: this route does not serve ranges


@dataclass(frozen=True)
class Decision:
    """The answer: 200, 206 (with ``byte_range``), 304, 412 or 416, and which field decided."""

    status: int
    byte_range: ByteRange | None = None
    unsatisfiable: Unsatisfiable | None = None
    field: str | None = None


def _current_tag(rep: Representation) -> EntityTag | None:
    return parse_entity_tag(rep.etag) if rep.etag is not None else None


def _if_match_holds(field: str, rep: Representation) -> bool:
    tags = parse_entity_tags(field)
    if tags == "*":
        return True  # the representation exists (routes evaluate only existing ones)
    current = _current_tag(rep)
    return (
        isinstance(tags, list)
        and current is not None
        and any(t.strong_match(current) for t in tags)
    )


def _if_none_match_holds(field: str, rep: Representation) -> bool:
    tags = parse_entity_tags(field)
    if tags == "*":
        return False
    current = _current_tag(rep)
    if not isinstance(tags, list) or current is None:
        return True
    return not any(t.weak_match(current) for t in tags)


def if_range_holds(field: str, rep: Representation, *, now: float) -> bool:
    """RFC 9110 13.1.5: a strong entity-tag match, or a date equal to Last-Modified."""
    value = field.strip(_OWS)
    if value.startswith(('"', "W/")):
        tag, current = parse_entity_tag(value), _current_tag(rep)
        return tag is not None and current is not None and tag.strong_match(current)
    date = parse_http_date(value, now=now)
    return date is not None and rep.last_modified is not None and date == rep.last_modified


def evaluate(req: Request, rep: Representation, *, now: float) -> Decision:
    """The status RFC 9110 section 13.2.2 gives ``req`` against ``rep`` (see the module)."""
    if req.if_match is not None:
        if not _if_match_holds(req.if_match, rep):
            return Decision(412, field="If-Match")
    elif req.if_unmodified_since is not None and rep.last_modified is not None:
        date = parse_http_date(req.if_unmodified_since, now=now)
        if date is not None and rep.last_modified > date:
            return Decision(412, field="If-Unmodified-Since")
    safe = req.method in ("GET", "HEAD")
    if req.if_none_match is not None:
        if not _if_none_match_holds(req.if_none_match, rep):
            return Decision(304 if safe else 412, field="If-None-Match")
    elif safe and req.if_modified_since is not None and rep.last_modified is not None:
        date = parse_http_date(req.if_modified_since, now=now)
        if date is not None and rep.last_modified <= date:
            return Decision(304, field="If-Modified-Since")
    if not safe or rep.size is None or req.range is None:
        return Decision(200)
    wanted = parse_range(req.range, rep.size)
    if wanted is None:
        return Decision(200)
    if req.if_range is not None and not if_range_holds(req.if_range, rep, now=now):
        return Decision(200, field="If-Range")
    if isinstance(wanted, Unsatisfiable):
        return Decision(416, unsatisfiable=wanted, field="Range")
    return Decision(206, byte_range=wanted, field="Range")
