"""Checkpoint round trips, torn writes, old and foreign files, re-validation and the
remote-changed rule."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel.errors import CheckpointError
from accel.fetch.checkpoint import (
    Checkpoint,
    DoneChunk,
    checkpoint_path,
    load_checkpoint,
    part_path,
    revalidate,
    save_checkpoint,
)


def make(tmp_path: Path) -> tuple[Path, bytes, Checkpoint]:
    dest = tmp_path / "f.bin"
    data = os.urandom(3000)
    part_path(dest).write_bytes(data)
    chunks = [
        DoneChunk(start=s, end=e, xxh3=xxhash.xxh3_128(data[s:e]).hexdigest())
        for s, e in [(0, 1000), (2000, 3000)]
    ]
    cp = Checkpoint(url="http://x/f.bin", size=3000, etag='"abc"', chunks=chunks)
    return dest, data, cp


def test_round_trip(tmp_path: Path) -> None:
    dest, _, cp = make(tmp_path)
    save_checkpoint(dest, cp)
    assert load_checkpoint(dest) == cp
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "nothing") is None


@pytest.mark.parametrize("cut", [1, 20, -5])
def test_torn_checkpoint_is_refused(tmp_path: Path, cut: int) -> None:
    dest, _, cp = make(tmp_path)
    save_checkpoint(dest, cp)
    raw = checkpoint_path(dest).read_bytes()
    checkpoint_path(dest).write_bytes(raw[:cut])
    with pytest.raises(CheckpointError):
        load_checkpoint(dest)


def test_chunk_outside_the_file_is_refused(tmp_path: Path) -> None:
    dest, _, cp = make(tmp_path)
    cp.chunks.append(DoneChunk(start=2500, end=4000, xxh3="00"))
    save_checkpoint(dest, cp)
    with pytest.raises(CheckpointError):
        load_checkpoint(dest)


def test_revalidate_drops_chunks_whose_bytes_changed(tmp_path: Path) -> None:
    dest, data, cp = make(tmp_path)
    assert revalidate(dest, cp) == cp.chunks
    with open(part_path(dest), "r+b") as f:
        f.seek(2500)
        f.write(bytes([data[2500] ^ 1]))
    assert revalidate(dest, cp) == cp.chunks[:1]


def test_revalidate_without_part_file_keeps_nothing(tmp_path: Path) -> None:
    dest, _, cp = make(tmp_path)
    part_path(dest).unlink()
    assert revalidate(dest, cp) == []


def test_same_remote_rules() -> None:
    cp = Checkpoint(url="u", size=10, etag='"a"', last_modified="Mon")
    assert cp.same_remote(10, '"a"', "Mon")
    assert not cp.same_remote(11, '"a"', "Mon")
    assert not cp.same_remote(10, '"b"', "Mon")
    assert not Checkpoint(url="u", size=10, last_modified="Mon").same_remote(10, None, "Tue")
    assert Checkpoint(url="u", size=10).same_remote(10, None, None)
    assert not Checkpoint(url="u", size=10).same_remote(10, '"a"', None)


def first_and_last_change(before: bytes, after: bytes) -> tuple[int, int]:
    """``[first, last]`` of the bytes a save changed (compared 4 KiB at a time)."""
    n, step = min(len(before), len(after)), 4096
    blocks = [o for o in range(0, n, step) if before[o : o + step] != after[o : o + step]]
    first = next(i for i in range(blocks[0], n) if before[i] != after[i]) if blocks else n
    if len(after) > len(before):
        return first, len(after) - 1
    last = max(i for i in range(blocks[-1], min(n, blocks[-1] + step)) if before[i] != after[i])
    return first, last


def test_a_torn_write_of_the_newest_save_loads_the_checkpoint_before_it(tmp_path: Path) -> None:
    """A crash mid-write of the newest save (garbage over part of what it wrote) must
    not lose the checkpoint: the one before it loads (failed on the JSON file)."""
    dest, data, cp = make(tmp_path)
    save_checkpoint(dest, cp)
    older = load_checkpoint(dest)
    before = checkpoint_path(dest).read_bytes()
    newer = Checkpoint(
        url=cp.url,
        size=cp.size,
        etag=cp.etag,
        chunks=[*cp.chunks, DoneChunk(1000, 2000, xxhash.xxh3_128(data[1000:2000]).hexdigest())],
    )
    save_checkpoint(dest, newer)
    assert load_checkpoint(dest) == newer
    after = checkpoint_path(dest).read_bytes()
    first, last = first_and_last_change(before, after)
    third = (last - first) // 3
    with open(checkpoint_path(dest), "r+b") as f:
        f.seek(first + third)
        f.write(os.urandom(max(1, third)))
    assert load_checkpoint(dest) == older
    save_checkpoint(dest, newer)  # the next save goes to the torn slot, not over the good one
    assert load_checkpoint(dest) == newer


def test_a_version_1_json_checkpoint_still_loads_and_the_next_save_replaces_it(
    tmp_path: Path,
) -> None:
    """What accel wrote before format 2, byte for byte: a rerun after an upgrade resumes."""
    dest = tmp_path / "f.bin"
    checkpoint_path(dest).write_bytes(
        b'{"url":"http://x/f.bin","size":3000,"etag":"\\"abc\\"","last_modified":null,'
        b'"chunks":[{"start":0,"end":1000,"xxh3":"9a4b"},{"start":2000,"end":3000,'
        b'"xxh3":"77"}],"format":1}'
    )
    cp = load_checkpoint(dest)
    assert cp == Checkpoint(
        url="http://x/f.bin",
        size=3000,
        etag='"abc"',
        chunks=[DoneChunk(0, 1000, "9a4b"), DoneChunk(2000, 3000, "77")],
    )
    assert cp is not None
    cp.chunks.append(DoneChunk(1000, 2000, "55"))
    save_checkpoint(dest, cp)
    assert checkpoint_path(dest).read_bytes()[:1] != b"{"
    assert load_checkpoint(dest) == cp


def test_a_save_in_place_keeps_the_file_and_its_size(tmp_path: Path) -> None:
    """Once made, the file is rewritten in place: no new inode, no new blocks."""
    dest, _, cp = make(tmp_path)
    save_checkpoint(dest, cp)
    st = checkpoint_path(dest).stat()
    for i in range(10):
        cp.chunks[0] = DoneChunk(0, 1000 - i, cp.chunks[0].xxh3)
        save_checkpoint(dest, cp)
        assert load_checkpoint(dest) == cp
    now = checkpoint_path(dest).stat()
    assert (now.st_ino, now.st_size, now.st_blocks) == (st.st_ino, st.st_size, st.st_blocks)


@pytest.mark.parametrize("url_len", [20, 2000], ids=["short-url", "presigned-url"])
def test_new_files_are_sized_for_the_chunks_the_download_will_reach(
    tmp_path: Path, url_len: int
) -> None:
    """100 GB in 64 MiB chunks, first saved with 3 chunks done: 1,600 chunks later the
    file has not had to grow (growth is the one step that needs free space), and a long
    URL is not counted once per chunk."""
    dest = tmp_path / "big.bin"
    c = 64 << 20
    done = [
        DoneChunk(i * c, (i + 1) * c, xxhash.xxh3_128(str(i).encode()).hexdigest())
        for i in range(1600)
    ]
    url = "http://x/big.bin?" + "s" * url_len
    cp = Checkpoint(url=url, size=1600 * c, etag='"e"', chunks=done[:3])
    save_checkpoint(dest, cp)
    inode = checkpoint_path(dest).stat().st_ino
    assert checkpoint_path(dest).stat().st_size <= 512 * 1024
    cp.chunks = done
    save_checkpoint(dest, cp)
    assert checkpoint_path(dest).stat().st_ino == inode
    assert load_checkpoint(dest) == cp


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x89ACCELSF",
        b"\x89ACCELSF" + b"\xff" * 10_000,
        b"\0" * (4096 + 2 * 65536),
        b"[1, 2]",
        b"{" * 100_000,
        b"PK\x03\x04 not a checkpoint",
    ],
    ids=["empty", "magic", "bad-header", "zeros", "json-list", "deep-json", "zip"],
)
def test_garbage_is_refused(tmp_path: Path, raw: bytes) -> None:
    dest = tmp_path / "f.bin"
    checkpoint_path(dest).write_bytes(raw)
    with pytest.raises(CheckpointError):
        load_checkpoint(dest)


def test_both_slots_torn_is_refused(tmp_path: Path) -> None:
    dest, _, cp = make(tmp_path)
    save_checkpoint(dest, cp)
    save_checkpoint(dest, cp)
    raw = bytearray(checkpoint_path(dest).read_bytes())
    half = (len(raw) - 4096) // 2
    for at in (4096 + 20, 4096 + half + 20):
        raw[at] ^= 0xFF
    checkpoint_path(dest).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(dest)


text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\udc80", "\ud800"]))
counts = st.integers(min_value=0, max_value=2**63 - 1)
checkpoints = st.builds(
    Checkpoint,
    url=text,
    size=counts,
    etag=st.none() | text,
    last_modified=st.none() | text,
    chunks=st.lists(st.builds(DoneChunk, start=counts, end=counts, xxh3=text), max_size=30),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cp=checkpoints)
def test_any_checkpoint_round_trips(tmp_path: Path, cp: Checkpoint) -> None:
    dest = tmp_path / "f.bin"
    save_checkpoint(dest, cp)
    if all(0 <= c.start < c.end <= cp.size for c in cp.chunks):
        assert load_checkpoint(dest) == cp
    else:
        with pytest.raises(CheckpointError):
            load_checkpoint(dest)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=2000), prefix=st.sampled_from([b"", b"{", b"\x89ACCELSF"]))
def test_any_bytes_load_as_a_checkpoint_or_a_checkpoint_error(
    tmp_path: Path, raw: bytes, prefix: bytes
) -> None:
    dest = tmp_path / "f.bin"
    checkpoint_path(dest).write_bytes(prefix + raw)
    with contextlib.suppress(CheckpointError):
        assert isinstance(load_checkpoint(dest), Checkpoint)
