"""Model ids ``name`` / ``org/name`` and their directory names (``org--name``), pure."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.errors import UnsafePathError
from accel.modelid import MODEL_ID_PATTERN, check_model_id, model_dir_name, model_id_from_dir

# As JSON Schema (ECMA 262) reads the pattern: "$" is the end, not "before a last \n".
_PATTERN = re.compile(MODEL_ID_PATTERN.removesuffix("$") + r"\Z")


@pytest.mark.parametrize("ok", ["whisper", "openai/whisper-large-v3", "a-/b", "A.b_c+d/e.f", "x/y"])
def test_good_ids(ok: str) -> None:
    assert check_model_id(ok) == ok
    assert _PATTERN.match(ok)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/",
        "a/",
        "/a",
        "a/b/c",
        "a//b",
        "..",
        "a/..",
        "../a",
        ".a",
        "a/.b",
        "-a",
        "a/-b",
        "a--b",
        "org/a--b",
        "a\\b",
        "a b",
        "a\x00b",
        "a%2Fb",
        "é",
        "a/" + "b" * 129,
        "a/b\n",
    ],
)
def test_bad_ids(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        check_model_id(bad)
    assert not _PATTERN.match(bad)


_seg = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,20}\Z").filter(lambda s: "--" not in s)
_ids = st.one_of(_seg, st.builds(lambda a, b: f"{a}/{b}", _seg, _seg))


@given(_ids)
def test_dir_name_is_one_safe_segment_and_maps_back(model_id: str) -> None:
    name = model_dir_name(model_id)
    assert "/" not in name and name not in (".", "..") and not name.startswith(".")
    assert model_id_from_dir(name) == model_id


@given(_ids, _ids)
def test_two_ids_never_share_a_dir(a: str, b: str) -> None:
    assert (model_dir_name(a) == model_dir_name(b)) == (a == b)


@given(st.text(max_size=40))
def test_pattern_and_checker_agree(value: str) -> None:
    try:
        check_model_id(value)
        accepted = True
    except UnsafePathError:
        accepted = False
    assert accepted == bool(_PATTERN.match(value))


@pytest.mark.parametrize("bad", ["a----", "--a", "a--", ".x--y", "a--b--c"])
def test_dirs_that_are_no_id(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        model_id_from_dir(bad)
