"""RFC 9110 conditionals on the real hub: /storage and the ETag'd JSON routes.

The pure rules are tabled in test_conditional.py; these check that both kinds of route
really call them (raw header bytes sent with http.client, so nothing is normalised).
"""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.hub import SMALL_STORE, RunningHub, expected_bytes

SIZE = SMALL_STORE[("demo-asr", "1.0.0")]["model.bin"]
assert isinstance(SIZE, int)
DATA = expected_bytes("model.bin", SIZE)
FILE = "/storage/models/demo-asr/1.0.0/model.bin"
OLD = "Sun, 06 Nov 1994 08:49:37 GMT"


def ask(
    hub: RunningHub, path: str, headers: dict[str, str | bytes], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def validators(hub: RunningHub, path: str) -> tuple[str, str | None]:
    status, h, _ = ask(hub, path, {}, "HEAD")
    assert status == 200
    return h["etag"], h.get("last-modified")


def test_storage_if_none_match_is_weak(live: RunningHub) -> None:
    etag, _ = validators(live, FILE)
    for value in ("W/" + etag, f'"other", W/{etag}', "*"):
        status, h, body = ask(live, FILE, {"If-None-Match": value})
        assert (status, body) == (304, b""), value
        assert h["etag"] == etag
    status, _, body = ask(live, FILE, {"If-None-Match": '"other"', "Range": "bytes=0-9"})
    assert (status, body) == (206, DATA[:10])


def test_storage_if_unmodified_since(live: RunningHub) -> None:
    _, lm = validators(live, FILE)
    assert lm is not None
    status, _, body = ask(live, FILE, {"If-Unmodified-Since": OLD, "Range": "bytes=0-9"})
    assert status == 412 and json.loads(body)["error"]["code"] == "precondition_failed"
    assert ask(live, FILE, {"If-Unmodified-Since": lm, "Range": "bytes=0-9"})[0] == 206
    # An invalid date is ignored; If-Match, when sent, decides instead.
    assert ask(live, FILE, {"If-Unmodified-Since": "yesterday", "Range": "bytes=0-9"})[0] == 206
    etag, _ = validators(live, FILE)
    assert ask(live, FILE, {"If-Match": etag, "If-Unmodified-Since": OLD})[0] == 200


def test_storage_if_modified_since_in_three_formats(live: RunningHub) -> None:
    _, lm = validators(live, FILE)
    assert lm is not None
    day, rest = lm.split(", ", 1)
    dd, mon, yyyy, hms, _gmt = rest.split(" ")
    long_day = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday",
                "Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}[day]  # fmt: skip
    rfc850 = f"{long_day}, {dd}-{mon}-{yyyy[2:]} {hms} GMT"
    asctime = f"{day} {mon} {int(dd):2d} {hms} {yyyy}"
    for value in (lm, rfc850, asctime):
        status, _, body = ask(live, FILE, {"If-Modified-Since": value})
        assert (status, body) == (304, b""), value
        assert ask(live, FILE, {"If-Modified-Since": value}, "HEAD")[0] == 304
    assert ask(live, FILE, {"If-Modified-Since": OLD, "Range": "bytes=0-9"})[0] == 206


def test_storage_if_match_is_strong_and_takes_lists(live: RunningHub) -> None:
    etag, _ = validators(live, FILE)
    assert ask(live, FILE, {"If-Match": f'"x", {etag}', "Range": "bytes=5-9"})[2] == DATA[5:10]
    assert ask(live, FILE, {"If-Match": "*", "Range": "bytes=5-9"})[0] == 206
    assert ask(live, FILE, {"If-Match": "W/" + etag, "Range": "bytes=5-9"})[0] == 412


def test_storage_if_range(live: RunningHub) -> None:
    etag, lm = validators(live, FILE)
    assert lm is not None
    for value, status in ((etag, 206), (lm, 206), ("W/" + etag, 200), (OLD, 200)):
        got, _, body = ask(live, FILE, {"If-Range": value, "Range": "bytes=10-19"})
        assert got == status, value
        assert body == (DATA[10:20] if status == 206 else DATA)


@pytest.mark.parametrize(
    "value",
    ["bytes=٠-٩".encode(), "bytes=١-".encode(), "bytes=-٥".encode(), b"bytes = 0-9", b"bytes=5-1"],
    ids=["arabic-indic", "arabic-indic-open", "arabic-indic-suffix", "spaces", "backwards"],
)
def test_storage_range_grammar_outside_ascii_is_ignored(live: RunningHub, value: bytes) -> None:
    status, h, body = ask(live, FILE, {"Range": value})
    assert status == 200 and "content-range" not in h and body == DATA


def test_storage_overlapping_ranges_are_coalesced(live: RunningHub) -> None:
    status, h, body = ask(live, FILE, {"Range": "bytes=0-9, 5-19"})
    assert status == 206 and h["content-range"] == f"bytes 0-19/{SIZE}" and body == DATA[:20]
    assert ask(live, FILE, {"Range": "bytes=0-9, 100-109"})[0] == 200  # disjoint: whole


JSON_ROUTES = [
    "/api/models",
    "/api/models/demo-asr",
    "/api/models/demo-asr/versions/1.0.0/manifest",
]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_routes_use_the_same_rules(live: RunningHub, path: str) -> None:
    etag, _ = validators(live, path)
    for value in (etag, "W/" + etag, f'"x", {etag}', "*"):
        assert ask(live, path, {"If-None-Match": value})[:1] == (304,), value
    # A malformed list matches nothing (a substring search found the tag in it).
    assert ask(live, path, {"If-None-Match": etag + "garbage"})[0] == 200
    status, _, body = ask(live, path, {"If-Match": '"other"'})
    assert status == 412 and json.loads(body)["error"]["code"] == "precondition_failed"
    assert ask(live, path, {"If-Match": "W/" + etag})[0] == 412  # strong comparison
    status, _, body = ask(live, path, {"If-Match": etag})
    assert status == 200 and json.loads(body)
