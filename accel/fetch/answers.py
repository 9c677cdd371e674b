"""The rules a chunk answer must keep: status, Content-Range, length, validators.

Pure: an answer's status and headers in, the :class:`~accel.fetch.messages.Head` the
download may rely on out, or :class:`Fail` with the error a user reads and whether a
retry can help. The worker calls it on every answer; standard library only (the worker
process imports it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from accel.errors import (
    AccelError,
    HTTPStatusError,
    ProtocolViolationError,
    RangeNotSupportedError,
    RemoteChangedError,
)
from accel.fetch.messages import Head, Task

__all__ = ["Fail", "check_response", "retry_after", "strong_etag"]

# DIGIT is ASCII (RFC 9110): \d would take any Unicode digit
_CONTENT_RANGE = re.compile(r"^bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)$")
_UNSATISFIED = re.compile(r"^bytes \*/([0-9]+)$")
_FATAL_STATUS = frozenset({400, 401, 403, 404, 405, 410, 451})


class Fail(Exception):
    """A chunk request failed with ``error``; ``retryable``: another request may work."""

    def __init__(self, error: AccelError, *, retryable: bool, retry_after: float | None = None):
        super().__init__(error)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


def check_response(
    status: int,
    reason: str | None,
    h: Mapping[str, str],
    length: int | None,
    task: Task,
) -> Head:
    """Accept the status and headers of a chunk answer (lower-case header names), or
    raise :class:`Fail` saying why and whether another request may do better."""
    url = task.url
    etag = h.get("etag")
    last_modified = h.get("last-modified")
    encoding = h.get("content-encoding", "identity").lower()
    if status in (200, 206) and encoding not in ("identity", ""):
        raise Fail(
            ProtocolViolationError(f"{url}: answered with Content-Encoding {encoding}", url=url),
            retryable=True,
        )
    if status == 206:
        m = _CONTENT_RANGE.match(h.get("content-range", ""))
        if m is None:
            raise Fail(
                ProtocolViolationError(f"{url}: 206 without a usable Content-Range", url=url),
                retryable=True,
            )
        first, last = int(m.group(1)), int(m.group(2))
        total = None if m.group(3) == "*" else int(m.group(3))
        want_last = (task.end - 1) if task.end is not None else None
        if first != task.start or (
            not task.probe
            and (last != want_last or (task.total is not None and total != task.total))
        ):
            raise Fail(
                ProtocolViolationError(
                    f"{url}: asked for bytes {task.start}-{want_last}, got "
                    f"{h.get('content-range')}",
                    url=url,
                ),
                retryable=True,
            )
        if length is not None and length != last - first + 1:
            raise Fail(
                ProtocolViolationError(
                    f"{url}: Content-Length {length} disagrees with Content-Range", url=url
                ),
                retryable=True,
            )
        if task.etag and etag and etag != task.etag:
            raise Fail(
                RemoteChangedError(f"{url}: ETag changed from {task.etag} to {etag}", url=url),
                retryable=False,
            )
        _check_last_modified(task, last_modified)
        return Head(206, total, etag, last_modified, True, last + 1)
    if status == 200:
        if task.probe:
            return Head(200, length, etag, last_modified, False, length)
        if task.ranged:
            _check_last_modified(task, last_modified)  # an If-Range that failed
            if strong_etag(task.etag) and etag and etag != task.etag:
                raise Fail(
                    RemoteChangedError(f"{url}: ETag changed from {task.etag} to {etag}", url=url),
                    retryable=False,
                )
            # One node of a fleet may ignore Range once; the retry asks again.
            raise Fail(
                RangeNotSupportedError(f"{url}: the server ignored Range (200)", url=url),
                retryable=True,
            )
        if task.total is not None and length is not None and length != task.total:
            raise Fail(
                RemoteChangedError(f"{url}: size changed to {length}", url=url), retryable=False
            )
        _check_last_modified(task, last_modified)
        return Head(200, length, etag, last_modified, False, length)
    if status == 416 and task.probe:
        m = _UNSATISFIED.match(h.get("content-range", ""))
        if m is not None and int(m.group(1)) == 0:
            return Head(206, 0, etag, last_modified, True, 0)
    if status in (412, 416):
        raise Fail(
            RemoteChangedError(
                f"{url}: the remote file changed (HTTP {status})", url=url, status=status
            ),
            retryable=False,
        )
    wait = retry_after(h.get("retry-after"))
    err = HTTPStatusError(
        f"{url}: HTTP {status} {reason or ''}".rstrip(),
        url=url,
        status=status,
        hint=_status_hint(status),
    )
    raise Fail(err, retryable=status not in _FATAL_STATUS, retry_after=wait)


def strong_etag(etag: str | None) -> bool:
    return bool(etag) and not (etag or "").startswith("W/")


def _check_last_modified(task: Task, last_modified: str | None) -> None:
    """Without a strong ETag, every answer must carry the Last-Modified the probe saw."""
    if task.probe or strong_etag(task.etag) or not task.last_modified:
        return
    if last_modified != task.last_modified:
        raise Fail(
            RemoteChangedError(
                f"{task.url}: Last-Modified changed from {task.last_modified} to {last_modified}",
                url=task.url,
            ),
            retryable=False,
        )


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "the server refused access: pass a token with --header 'Authorization: Bearer T'"
    if status in (404, 410):
        return "check the URL: the server has no such file"
    return "the server is failing; rerun later: finished chunks are kept"


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
