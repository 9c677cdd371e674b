"""The two-slot file: torn writes at any offset leave the newest whole record or the one
before it, growth keeps both, and the layout is the one the module docstring draws.

A torn write is made as a crash mid-``pwrite`` leaves it: a save runs, then part of the
slot it wrote gets back its old bytes or garbage (what hit the disk before the crash is
some of the new record, in any order of pages). The layout is read here from the
documented format, independently of the module's own parser.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel.fetch import slotfile

HEADER = 4096
MAGIC = b"\x89ACCELSF"


def slot_size(raw: bytes) -> int:
    assert raw[:8] == MAGIC, "not a slot file"
    _, fmt, size, crc = struct.unpack_from("<8sIII", raw)
    assert fmt == 2 and crc == zlib.crc32(raw[:16])
    assert len(raw) == HEADER + 2 * size and size % 4096 == 0
    return int(size)


def slot_span(raw: bytes, i: int) -> tuple[int, int]:
    """``[start, end)`` of the record (head + payload) in slot ``i``."""
    at = HEADER + i * slot_size(raw)
    _, length, _ = struct.unpack_from("<QII", raw, at)
    return at, at + 16 + length


def scratch(tmp_path: Path) -> tempfile.TemporaryDirectory[str]:
    """A fresh folder per example, on tmpfs when there is one: the properties are about
    the layout, and each save's fdatasync costs milliseconds on a real disk."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path)


def newest(path: Path) -> bytes | None:
    found = slotfile.records(path.read_bytes())
    return found[0] if found else None


def payload(n: int, tag: int) -> bytes:
    """A payload of ``n`` bytes that differs from every other tag's."""
    return (tag.to_bytes(4, "little") * (n // 4 + 1))[:n]


def test_the_layout_is_the_documented_one(tmp_path: Path) -> None:
    path = tmp_path / "f"
    slotfile.save(path, b"one")
    slotfile.save(path, b"two")
    raw = path.read_bytes()
    assert slot_size(raw) == 64 * 1024  # the least a new file's slot holds
    for i, (seq, data) in enumerate([(1, b"one"), (2, b"two")]):
        at = HEADER + i * slot_size(raw)
        assert struct.unpack_from("<QI", raw, at) == (seq, len(data))
        (crc,) = struct.unpack_from("<I", raw, at + 12)
        assert crc == zlib.crc32(struct.pack("<QI", seq, len(data)) + data)
        assert raw[at + 16 : at + 16 + len(data)] == data
    assert slotfile.records(raw) == [b"two", b"one"]


def test_saves_alternate_slots_in_place(tmp_path: Path) -> None:
    path = tmp_path / "f"
    slotfile.save(path, b"a")
    inode = path.stat().st_ino
    for i in range(5):
        slotfile.save(path, payload(100, i))
        assert newest(path) == payload(100, i)
    assert path.stat().st_ino == inode  # written in place, never renamed over


def test_a_record_larger_than_its_slot_grows_the_file_and_keeps_the_one_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    slotfile.save(path, b"small")
    big = payload(200_000, 7)
    slotfile.save(path, big)
    raw = path.read_bytes()
    assert slot_size(raw) >= 2 * len(big)
    assert slotfile.records(raw) == [big, b"small"]
    slotfile.save(path, b"after")
    assert slotfile.records(path.read_bytes()) == [b"after", big]


def test_room_sizes_a_new_file(tmp_path: Path) -> None:
    slotfile.save(tmp_path / "f", b"x", room=lambda: 300_000)
    assert slot_size((tmp_path / "f").read_bytes()) >= 300_016


@pytest.mark.parametrize(
    "raw",
    [b"", b"{}", MAGIC, MAGIC + b"\0" * 5000, b"\0" * (HEADER + 2 * 65536)],
    ids=["empty", "json", "magic-only", "bad-header", "zeros"],
)
def test_what_is_no_slot_file_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        slotfile.records(raw)


def test_a_save_over_a_file_that_is_no_slot_file_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b'{"format": 1}')
    slotfile.save(path, b"new")
    assert newest(path) == b"new"


def tear(path: Path, before: bytes, lo: float, hi: float, garbage: bytes | None) -> bool:
    """Undo part of the last save as a crash mid-write would; True if the record still
    landed whole (the tear touched nothing, or wrote the very same bytes)."""
    after = path.read_bytes()
    if len(after) != len(before):
        return True  # a growth: temp + rename, which no crash tears
    spans = [slot_span(after, i) for i in (0, 1)]
    start, end = next(s for s in spans if after[s[0] : s[1]] != before[s[0] : s[1]])
    a = start + int(lo * (end - start))
    b = max(a + 1, start + int(hi * (end - start)))
    b = min(b, end)
    if garbage is None:
        new = before[a:b]  # these pages never reached the disk
    else:
        new = (garbage * ((b - a) // max(1, len(garbage)) + 1))[: b - a]
    with open(path, "r+b") as f:
        f.seek(a)
        f.write(new)
    return new == after[a:b]


fraction = st.floats(min_value=0.0, max_value=1.0)
saves = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=150_000),  # payload size: some saves grow
        st.booleans(),  # torn?
        fraction,
        fraction,
        st.none() | st.binary(min_size=1, max_size=64),  # old bytes, or garbage
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=saves)
def test_saves_and_torn_saves_leave_the_newest_whole_record(
    tmp_path: Path, ops: list[tuple[int, bool, float, float, bytes | None]]
) -> None:
    with scratch(tmp_path) as d:
        path = Path(d) / "f"
        slotfile.save(path, b"first")  # created through temp + rename: never torn
        landed = b"first"
        for tag, (size, torn, lo, hi, garbage) in enumerate(ops):
            data = payload(size, tag)
            before = path.read_bytes()
            slotfile.save(path, data)
            if not torn or tear(path, before, min(lo, hi), max(lo, hi), garbage):
                landed = data
            assert newest(path) == landed


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=150_000), min_size=2, max_size=5),
    slot=st.sampled_from([0, 1]),
    at=fraction,
    length=st.integers(min_value=1, max_value=200_000),
    garbage=st.binary(min_size=1, max_size=64),
)
def test_one_torn_write_anywhere_in_a_slot_leaves_the_newest_or_the_one_before(
    tmp_path: Path, sizes: list[int], slot: int, at: float, length: int, garbage: bytes
) -> None:
    with scratch(tmp_path) as d:
        path = Path(d) / "f"
        written = [payload(n, tag) for tag, n in enumerate(sizes)]
        for data in written:
            slotfile.save(path, data)
        raw = path.read_bytes()
        size = slot_size(raw)
        start = HEADER + slot * size
        a = start + int(at * (size - 1))
        b = min(start + size, a + length)
        new = (garbage * ((b - a) // len(garbage) + 1))[: b - a]
        with open(path, "r+b") as f:
            f.seek(a)
            f.write(new)
        seqs = [struct.unpack_from("<Q", raw, HEADER + i * size)[0] for i in (0, 1)]
        top = slot_span(raw, seqs.index(max(seqs)))
        intact = path.read_bytes()[top[0] : top[1]] == raw[top[0] : top[1]]
        assert newest(path) == (written[-1] if intact else written[-2])
