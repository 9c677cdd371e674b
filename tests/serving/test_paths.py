"""accel.serving.paths: pure checks of ids, versions, manifest paths and raw URL tails."""

from __future__ import annotations

import posixpath
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.errors import UnsafePathError
from accel.serving.paths import check_name, check_relpath, split_raw_path


@pytest.mark.parametrize("name", ["whisper-large-v3-zh", "1.0.0", "v2+cu121", "a", "A_b.c"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "a/b", "a\\b", "a b", "x" * 129, "a\0", "-x", "é"]
)
def test_bad_names(name: str) -> None:
    with pytest.raises(UnsafePathError):
        check_name(name)


@pytest.mark.parametrize("path", ["a.bin", "sub/dir/a.bin", "a..b", "...", "%2e%2e", "spaced name"])
def test_good_relpaths(path: str) -> None:
    assert "/".join(check_relpath(path)) == path


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "a\\b", "C:x", "c:/x", "a\0b",
     "a\nb", "..", "."],
)  # fmt: skip
def test_bad_relpaths(path: str) -> None:
    with pytest.raises(UnsafePathError):
        check_relpath(path)


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        ("a/1.0/x.bin", ("a", "1.0", "x.bin")),
        ("a/1.0/sub%20dir/x.bin", ("a", "1.0", "sub dir", "x.bin")),
        ("a/1.0/%252e%252e/x", ("a", "1.0", "%2e%2e", "x")),  # decoded once only
        ("a/1.0/x.bin?download=1", ("a", "1.0", "x.bin")),
    ],
)
def test_split_raw_path_decodes_once(raw: str, segments: tuple[str, ...]) -> None:
    assert split_raw_path(raw) == segments


@pytest.mark.parametrize(
    "raw",
    ["a/1.0/%2e%2e/x", "a/1.0/..%2Fx", "a/1.0/%2E%2E%2F%2E%2E%2Fetc", "a/1.0/x%5Cy", "a/1.0/x%00",
     "a/1.0/%ff", "a//x", "a/1.0/./x", ""],
)  # fmt: skip
def test_split_raw_path_refuses(raw: str) -> None:
    with pytest.raises(UnsafePathError):
        split_raw_path(raw)


@given(st.text(min_size=1, max_size=60))
def test_checked_relpath_never_escapes(path: str) -> None:
    """Any accepted path joined under a root stays under it, whatever the text."""
    try:
        segments = check_relpath(path)
    except UnsafePathError:
        return
    assert all(s not in ("", ".", "..") and "/" not in s and "\\" not in s for s in segments)
    assert not posixpath.normpath("/root/" + "/".join(segments)).startswith("/root/..")
    assert posixpath.normpath("/root/" + "/".join(segments)).startswith("/root/")


@given(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=5))
def test_split_raw_path_round_trips_quoted_segments(segments: list[str]) -> None:
    raw = "/".join(quote(s, safe="") for s in segments)
    try:
        got = split_raw_path(raw)
    except UnsafePathError:
        assert any(
            s in (".", "..")
            or "/" in s
            or "\\" in s
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in s)
            or len(s.encode("utf-8", "surrogatepass")) > 255
            or any(0xD800 <= ord(c) <= 0xDFFF for c in s)
            for s in segments
        )
        return
    assert got == tuple(segments)
