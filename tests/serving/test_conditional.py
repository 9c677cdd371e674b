"""accel.serving.conditional: RFC 9110 conditionals and ranges as tables, without sockets.

Each table row is one request against one representation; the grammar tables cover
range-specs, entity-tag lists and the three HTTP-date formats, and the evaluation table
walks RFC 9110 section 13.2.2's order (which header wins when several are sent).
"""

from __future__ import annotations

import ast
import calendar
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import accel.serving.conditional as conditional
from accel.serving.conditional import (
    ByteRange,
    Decision,
    EntityTag,
    Representation,
    Request,
    Unsatisfiable,
    evaluate,
    format_http_date,
    if_range_holds,
    parse_entity_tag,
    parse_entity_tags,
    parse_http_date,
    parse_range,
)

SIZE = 1000
NOW = calendar.timegm((2026, 12, 1, 12, 0, 0))
LM_EPOCH = calendar.timegm((2026, 11, 28, 10, 0, 0))
LM = "Sat, 28 Nov 2026 10:00:00 GMT"
BEFORE = "Fri, 27 Nov 2026 10:00:00 GMT"
AFTER = "Sun, 29 Nov 2026 10:00:00 GMT"
ETAG = '"abc"'
FILE = Representation(etag=ETAG, last_modified=LM_EPOCH, size=SIZE)


# --- Range grammar ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", ByteRange(0, 0, SIZE)),
        ("bytes=0-99", ByteRange(0, 99, SIZE)),
        ("bytes=500-", ByteRange(500, 999, SIZE)),
        ("bytes=-100", ByteRange(900, 999, SIZE)),
        ("bytes=-5000", ByteRange(0, 999, SIZE)),
        ("bytes=990-5000", ByteRange(990, 999, SIZE)),
        ("BYTES=1-2", ByteRange(1, 2, SIZE)),  # the unit is case-insensitive
        ("Bytes=1-2", ByteRange(1, 2, SIZE)),
        (" bytes=1-2 ", ByteRange(1, 2, SIZE)),  # field OWS
        ("bytes=007-009", ByteRange(7, 9, SIZE)),  # leading zeros are digits
        ("bytes=0-" + "9" * 5000, ByteRange(0, 999, SIZE)),  # no int() of 5000 digits
        ("bytes=" + "9" * 5000 + "-", Unsatisfiable(SIZE)),
        ("bytes=-" + "9" * 5000, ByteRange(0, 999, SIZE)),
        ("bytes=-0", Unsatisfiable(SIZE)),
        ("bytes=-000", Unsatisfiable(SIZE)),
        ("bytes=1000-", Unsatisfiable(SIZE)),
        ("bytes=1000-2000", Unsatisfiable(SIZE)),
        ("bytes=1000-,-0", Unsatisfiable(SIZE)),  # no spec of the set is satisfiable
        ("bytes=5-1", None),  # last-pos below first-pos: the field is invalid
        ("bytes=0-1,5-1", None),  # one invalid spec invalidates the set
        ("bytes=0-1,5-6", None),  # disjoint: whole file, no multipart
        ("bytes=0-1,2-3", ByteRange(0, 3, SIZE)),  # adjacent: coalesced
        ("bytes=0-10, 5-20", ByteRange(0, 20, SIZE)),  # overlapping, OWS after the comma
        ("bytes=500-,-100", ByteRange(500, 999, SIZE)),
        ("bytes=0-1,1000-", ByteRange(0, 1, SIZE)),  # only one satisfiable spec
        ("bytes=,0-1,", ByteRange(0, 1, SIZE)),  # empty list elements are allowed
        ("bytes=", None),
        ("bytes=,", None),
        ("bytes=-", None),
        ("bytes=--1", None),
        ("bytes=abc", None),
        ("bytes=1", None),
        ("bytes=0x10-0x20", None),
        ("bytes=+1-2", None),
        ("bytes=1-+2", None),
        ("bytes=1.5-2", None),
        ("bytes=-1-2", None),
        ("bytes = 0-1", None),  # no whitespace around "=" in the grammar
        ("bytes=0 - 1", None),  # nor inside a range-spec
        ("bytes=٠-٩", None),  # Arabic-Indic digits: DIGIT is ASCII only
        ("bytes=0-٩", None),
        ("bytes=-٥", None),
        ("bytes=１-２", None),  # fullwidth digits
        ("bytes=²-³", None),  # superscripts (str.isdigit() is True for them)
        ("items=0-1", None),
        ("bytes 0-1", None),
        ("=0-1", None),
        ("bytes=" + ",".join(f"{i}-{i}" for i in range(101)), None),  # > 100 specs
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header, SIZE) == expected


def test_empty_file_has_no_satisfiable_range() -> None:
    assert parse_range("bytes=0-", 0) == Unsatisfiable(0)
    assert parse_range("bytes=-1", 0) == Unsatisfiable(0)
    assert parse_range("bytes=0-0", 0) == Unsatisfiable(0)
    assert parse_range(None, 0) is None


def test_content_range_strings() -> None:
    assert ByteRange(0, 9, 100).content_range == "bytes 0-9/100"
    assert Unsatisfiable(100).content_range == "bytes */100"


@given(st.integers(0, 10**6), st.integers(0, 2 * 10**6), st.integers(0, 2 * 10**6))
def test_satisfiable_ranges_lie_inside_the_file(size: int, a: int, b: int) -> None:
    got = parse_range(f"bytes={a}-{b}", size)
    if b < a:
        assert got is None
    elif a >= size:
        assert got == Unsatisfiable(size)
    else:
        assert isinstance(got, ByteRange)
        assert 0 <= got.start <= got.end < size and got.length == min(b, size - 1) - a + 1


@given(st.integers(0, 10**6), st.integers(0, 2 * 10**6))
def test_suffix_ranges(size: int, n: int) -> None:
    got = parse_range(f"bytes=-{n}", size)
    if n == 0 or size == 0:
        assert got == Unsatisfiable(size)
    else:
        assert isinstance(got, ByteRange)
        assert got.end == size - 1 and got.length == min(n, size)


@given(st.text(max_size=30), st.integers(0, 10**6))
def test_any_range_field_gives_a_range_inside_the_file_or_nothing(text: str, size: int) -> None:
    got = parse_range("bytes=" + text, size)
    if isinstance(got, ByteRange):
        assert 0 <= got.start <= got.end < size == got.size
        digits = set(text) - set("0123456789-, \t")
        assert not digits, "only ASCII digits, '-', ',' and OWS make a range"


# --- entity tags ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"abc"', EntityTag("abc")),
        ('W/"abc"', EntityTag("abc", weak=True)),
        ('""', EntityTag("")),
        (' "a,b" ', EntityTag("a,b")),  # a comma is a legal etagc
        ('"é"', EntityTag("é")),  # obs-text
        ("abc", None),  # unquoted
        ('w/"abc"', None),  # the weak prefix is case-sensitive
        ('W/ "abc"', None),
        ('"a"b"', None),
        ('"a b"', None),  # SP is not an etagc
        ('"abc', None),
    ],
)
def test_parse_entity_tag(text: str, expected: EntityTag | None) -> None:
    assert parse_entity_tag(text) == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", "*"),
        (" * ", "*"),
        ('"a"', [EntityTag("a")]),
        ('"a", W/"b"', [EntityTag("a"), EntityTag("b", weak=True)]),
        ('"a",W/"b" ,\t"c"', [EntityTag("a"), EntityTag("b", weak=True), EntityTag("c")]),
        ('"a,b", "c"', [EntityTag("a,b"), EntityTag("c")]),
        (', "a",, "b",', [EntityTag("a"), EntityTag("b")]),  # empty elements
        ('"a" "b"', None),  # no comma between members
        ('"a", *', None),  # "*" only alone
        ('"a", b', None),
        ("", None),
        (",", None),
    ],
)
def test_parse_entity_tags(field: str, expected: object) -> None:
    assert parse_entity_tags(field) == expected


def test_strong_and_weak_comparison() -> None:
    # RFC 9110 8.8.3.2's table.
    w1, w2, s1 = EntityTag("1", weak=True), EntityTag("2", weak=True), EntityTag("1")
    assert not w1.strong_match(w1) and w1.weak_match(w1)
    assert not w1.strong_match(w2) and not w1.weak_match(w2)
    assert not w1.strong_match(s1) and w1.weak_match(s1)
    assert s1.strong_match(s1) and s1.weak_match(s1)
    assert str(w1) == 'W/"1"' and str(s1) == '"1"'


# --- HTTP-date --------------------------------------------------------------------------
EPOCH_1994 = calendar.timegm((1994, 11, 6, 8, 49, 37))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", EPOCH_1994),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", EPOCH_1994),  # obsolete RFC 850
        ("Sun Nov  6 08:49:37 1994", EPOCH_1994),  # asctime
        ("Sun Nov 16 08:49:37 1994", EPOCH_1994 + 10 * 86400),
        ("  Sun, 06 Nov 1994 08:49:37 GMT\t", EPOCH_1994),  # field OWS
        ("Mon, 06 Nov 1994 08:49:37 GMT", EPOCH_1994),  # the day name is not checked
        ("Sun, 06 Nov 1994 08:49:60 GMT", EPOCH_1994 + 22),  # leap second: :59
        ("Thursday, 01-Jan-70 00:00:00 GMT", calendar.timegm((2070, 1, 1, 0, 0, 0))),
        ("Sunday, 06-Nov-76 08:49:37 GMT", calendar.timegm((2076, 11, 6, 8, 49, 37))),
        ("Sunday, 06-Nov-77 08:49:37 GMT", calendar.timegm((1977, 11, 6, 8, 49, 37))),
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 06 Nov 1994 08:49:37 gmt", None),  # case-sensitive
        ("sun, 06 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 nov 1994 08:49:37 GMT", None),
        ("Sun, 6 Nov 1994 08:49:37 GMT", None),  # IMF-fixdate needs two digits
        ("Sun, 06 Nov 94 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),
        ("Sun, 06 Nov 1994 08:49 GMT", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),  # no such day
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Nov 1994 08:60:00 GMT", None),
        ("Sun, 06 Nov 0000 08:49:37 GMT", None),
        ("Sun, ٠٦ Nov 1994 08:49:37 GMT", None),  # ASCII digits only
        ("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", None),  # two
        ("Sun,  06 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06-Nov-94 08:49:37 GMT", None),  # RFC 850 needs the long day name
        ("Sunday, 06-Nov-1994 08:49:37 GMT", None),
        ("Sun Nov 6 08:49:37 1994", None),  # asctime pads the day with a space
        ("1994-11-06T08:49:37Z", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_parse_http_date(text: str, expected: int | None) -> None:
    assert parse_http_date(text, now=NOW) == expected


@given(st.integers(0, 2**34))
def test_format_and_parse_round_trip(epoch: int) -> None:
    text = format_http_date(epoch)
    assert len(text) == 29 and text.endswith(" GMT")
    assert parse_http_date(text, now=NOW) == epoch


def test_format_matches_the_stdlib() -> None:
    from email.utils import formatdate

    for epoch in (0, EPOCH_1994, LM_EPOCH, 2**31 + 0.75):
        assert format_http_date(epoch) == formatdate(int(epoch), usegmt=True)


# --- If-Range ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("if_range", "holds"),
    [
        (ETAG, True),
        ('"abd"', False),
        ('W/"abc"', False),  # a weak tag never matches (strong comparison)
        (LM, True),
        ("Saturday, 28-Nov-26 10:00:00 GMT", True),
        ("Sat Nov 28 10:00:00 2026", True),
        ("Sat, 28 Nov 2026 10:00:01 GMT", False),  # only an exact date
        (BEFORE, False),
        ("not a date", False),
        ('"abc", "abd"', False),  # If-Range takes one validator, not a list
        ("", False),
    ],
)
def test_if_range(if_range: str, holds: bool) -> None:
    assert if_range_holds(if_range, FILE, now=NOW) is holds


def test_if_range_against_a_weak_current_tag_never_holds() -> None:
    weak = Representation(etag='W/"abc"', last_modified=None, size=SIZE)
    assert not if_range_holds('W/"abc"', weak, now=NOW)
    assert not if_range_holds(LM, weak, now=NOW)  # no Last-Modified to match


# --- evaluation order (RFC 9110 13.2.2) -------------------------------------------------
def req(method: str = "GET", **fields: str) -> Request:
    return Request(method=method, **fields)


FULL = Decision(200)
PART = Decision(206, byte_range=ByteRange(0, 9, SIZE), field="Range")
NOT_MODIFIED_INM = Decision(304, field="If-None-Match")
NOT_MODIFIED_IMS = Decision(304, field="If-Modified-Since")
FAILED_IM = Decision(412, field="If-Match")
FAILED_IUS = Decision(412, field="If-Unmodified-Since")
FAILED_INM = Decision(412, field="If-None-Match")
RANGE_IGNORED = Decision(200, field="If-Range")
R = "bytes=0-9"


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (req(), FULL),
        (req(range=R), PART),
        (req("HEAD", range=R), PART),  # HEAD answers what GET would
        (req("POST", range=R), FULL),  # Range is defined for GET only
        (req(range="bytes=2000-"), Decision(416, unsatisfiable=Unsatisfiable(SIZE), field="Range")),
        # If-Match: strong comparison, "*", lists
        (req(if_match=ETAG, range=R), PART),
        (req(if_match="*"), FULL),
        (req(if_match='"x", "abc"'), FULL),
        (req(if_match='W/"abc"'), FAILED_IM),
        (req(if_match='"x"'), FAILED_IM),
        (req(if_match="garbage"), FAILED_IM),
        (req("PUT", if_match='"x"'), FAILED_IM),
        # If-Unmodified-Since: only without If-Match, only a valid date
        (req(if_unmodified_since=BEFORE), FAILED_IUS),
        (req(if_unmodified_since=LM), FULL),
        (req(if_unmodified_since=AFTER, range=R), PART),
        (req(if_unmodified_since="Friday, 27-Nov-26 10:00:00 GMT"), FAILED_IUS),
        (req(if_unmodified_since="Fri Nov 27 10:00:00 2026"), FAILED_IUS),
        (req(if_unmodified_since="not a date"), FULL),  # invalid: ignored
        (req(if_match=ETAG, if_unmodified_since=BEFORE), FULL),  # If-Match wins
        (req(if_match='"x"', if_unmodified_since=AFTER), FAILED_IM),
        # If-None-Match: weak comparison; 304 for GET/HEAD, 412 otherwise
        (req(if_none_match=ETAG), NOT_MODIFIED_INM),
        (req(if_none_match='W/"abc"'), NOT_MODIFIED_INM),
        (req(if_none_match='"x", W/"abc"'), NOT_MODIFIED_INM),
        (req(if_none_match="*"), NOT_MODIFIED_INM),
        (req("HEAD", if_none_match=ETAG), NOT_MODIFIED_INM),
        (req("POST", if_none_match=ETAG), FAILED_INM),
        (req("DELETE", if_none_match="*"), FAILED_INM),
        (req(if_none_match='"x"', range=R), PART),
        (req(if_none_match="garbage"), FULL),  # matches nothing
        (req(if_none_match=ETAG, range=R), NOT_MODIFIED_INM),  # before Range
        # If-Modified-Since: only without If-None-Match, only GET/HEAD, valid dates
        (req(if_modified_since=LM), NOT_MODIFIED_IMS),
        (req(if_modified_since=AFTER), NOT_MODIFIED_IMS),
        (req("HEAD", if_modified_since=AFTER), NOT_MODIFIED_IMS),
        (req(if_modified_since=BEFORE, range=R), PART),
        (req("POST", if_modified_since=AFTER), FULL),
        (req(if_modified_since="Sat, 28 Nov 2026 10:00:00 +0000"), FULL),  # invalid
        (req(if_modified_since="Saturday, 28-Nov-26 10:00:00 GMT"), NOT_MODIFIED_IMS),
        (req(if_modified_since="Sat Nov 28 10:00:00 2026"), NOT_MODIFIED_IMS),
        (req(if_none_match='"x"', if_modified_since=AFTER), FULL),  # INM wins
        (req(if_none_match=ETAG, if_modified_since=BEFORE), NOT_MODIFIED_INM),
        # step order: a failed If-Match beats a matching If-None-Match
        (req(if_match='"x"', if_none_match=ETAG), FAILED_IM),
        (req(if_unmodified_since=BEFORE, if_none_match=ETAG), FAILED_IUS),
        (req(if_unmodified_since=BEFORE, if_modified_since=AFTER), FAILED_IUS),
        # If-Range decides only whether Range is honoured
        (req(range=R, if_range=ETAG), PART),
        (req(range=R, if_range=LM), PART),
        (req(range=R, if_range='W/"abc"'), RANGE_IGNORED),
        (req(range=R, if_range='"x"'), RANGE_IGNORED),
        (req(range=R, if_range=BEFORE), RANGE_IGNORED),
        (req(range="bytes=2000-", if_range='"x"'), RANGE_IGNORED),  # no 416 either
        (req(if_range='"x"'), FULL),  # without Range, If-Range is ignored
        (req(range="bytes=٠-٩", if_range=ETAG), FULL),  # invalid Range: ignored
        (req(if_match=ETAG, if_none_match='"x"', range=R, if_range=ETAG), PART),
    ],
)
def test_evaluation_order(request_: Request, expected: Decision) -> None:
    assert evaluate(request_, FILE, now=NOW) == expected


def test_a_representation_without_validators() -> None:
    bare = Representation(size=SIZE)
    assert evaluate(req(if_match="*"), bare, now=NOW) == FULL
    assert evaluate(req(if_match=ETAG), bare, now=NOW) == FAILED_IM
    assert evaluate(req(if_none_match="*"), bare, now=NOW) == NOT_MODIFIED_INM
    assert evaluate(req(if_none_match=ETAG), bare, now=NOW) == FULL
    assert evaluate(req(if_unmodified_since=BEFORE), bare, now=NOW) == FULL  # no date
    assert evaluate(req(if_modified_since=AFTER), bare, now=NOW) == FULL
    assert evaluate(req(range=R, if_range=LM), bare, now=NOW) == RANGE_IGNORED


def test_a_route_without_ranges_ignores_range() -> None:
    json_answer = Representation(etag=ETAG)
    assert evaluate(req(range=R), json_answer, now=NOW) == FULL
    assert evaluate(req(if_none_match='W/"abc"'), json_answer, now=NOW) == NOT_MODIFIED_INM


def test_request_from_headers_joins_repeated_fields() -> None:
    got = Request.from_headers(
        "head",
        [
            ("If-None-Match", '"a"'),
            ("if-none-match", '"abc"'),
            ("IF-MODIFIED-SINCE", LM),
            ("Range", R),
            ("Accept", "*/*"),
        ],
    )
    assert got == Request(method="HEAD", if_none_match='"a", "abc"', if_modified_since=LM, range=R)
    assert evaluate(got, FILE, now=NOW) == NOT_MODIFIED_INM
    twice = Request.from_headers("GET", [("If-Unmodified-Since", BEFORE)] * 2)
    assert evaluate(twice, FILE, now=NOW) == FULL  # two dates are no date: ignored


def test_the_module_imports_only_the_standard_library() -> None:
    """The node and the client will import these rules: nothing of the hub may come along."""
    tree = ast.parse(Path(conditional.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
