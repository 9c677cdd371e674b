"""The rules of a chunk answer, without sockets: values in, a Head or a Fail out."""

from __future__ import annotations

import pytest

from accel.errors import HTTPStatusError, ProtocolViolationError, RemoteChangedError
from accel.fetch.answers import Fail, check_response, retry_after
from accel.fetch.messages import Task

LM = "Tue, 01 Dec 2026 10:00:00 GMT"
CHUNK = Task(url="http://h/f", path="/x", start=100, end=200, total=1000, last_modified=LM)


def _check(status: int, headers: dict[str, str], length: int | None, task: Task = CHUNK):
    return check_response(status, None, headers, length, task)


def test_a_matching_206_is_accepted() -> None:
    head = _check(206, {"content-range": "bytes 100-199/1000", "last-modified": LM}, 100)
    assert (head.status, head.total, head.end) == (206, 1000, 200)


@pytest.mark.parametrize(
    ("status", "headers", "length", "error", "retryable"),
    [
        (206, {"content-range": "bytes 100-199/1000"}, 100, RemoteChangedError, False),
        (206, {"content-range": "bytes 100-199/1000", "last-modified": "x"}, 100,
         RemoteChangedError, False),
        (206, {"content-range": "bytes ١٠٠-199/1000", "last-modified": LM}, 100,
         ProtocolViolationError, True),
        (206, {"content-range": "bytes 100-198/1000", "last-modified": LM}, 99,
         ProtocolViolationError, True),
        (206, {"content-range": "bytes 100-199/999", "last-modified": LM}, 100,
         ProtocolViolationError, True),
        (206, {"content-range": "bytes 100-199/1000", "last-modified": LM}, 50,
         ProtocolViolationError, True),
        (200, {"last-modified": "Wed, 02 Dec 2026 10:00:00 GMT"}, 1000, RemoteChangedError,
         False),
        (412, {}, 0, RemoteChangedError, False),
        (404, {}, 0, HTTPStatusError, False),
        (503, {"retry-after": "7"}, 0, HTTPStatusError, True),
        (206, {"content-range": "bytes 100-199/1000", "last-modified": LM,
               "content-encoding": "gzip"}, 100, ProtocolViolationError, True),
    ],
)  # fmt: skip
def test_answers_that_are_refused(
    status: int, headers: dict[str, str], length: int | None, error: type, retryable: bool
) -> None:
    with pytest.raises(Fail) as info:
        _check(status, headers, length)
    assert isinstance(info.value.error, error) and info.value.retryable is retryable


def test_a_strong_etag_is_the_validator_and_last_modified_is_not_needed() -> None:
    task = Task(url="http://h/f", path="/x", start=0, end=10, etag='"a"', last_modified=LM)
    head = _check(206, {"content-range": "bytes 0-9/10", "etag": '"a"'}, 10, task)
    assert head.etag == '"a"'
    with pytest.raises(Fail) as info:
        _check(206, {"content-range": "bytes 0-9/10", "etag": '"b"'}, 10, task)
    assert isinstance(info.value.error, RemoteChangedError)


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("Tue, 01 Dec 2020 10:00:00 GMT") == 0.0
    assert retry_after("soon") is None and retry_after(None) is None
