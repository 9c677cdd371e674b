"""The ``?have`` bitmap (accel/blockmap.py): bit order, ranges to blocks, the wire form.

Pure: no sockets, no files. Each property is checked against a one-bit-at-a-time
model of the same rule.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel import blockmap


def _model_bits(ranges: list[tuple[int, int]], size: int, bs: int) -> list[bool]:
    """Block i held iff every one of its bytes lies in some range (byte by byte)."""
    have = [False] * size
    for s, e in ranges:
        for b in range(max(0, s), min(size, e)):
            have[b] = True
    n = blockmap.block_count(size, bs)
    return [all(have[i * bs : min(size, (i + 1) * bs)]) for i in range(n)]


def _bits_of(bitmap: bytes, n: int) -> list[bool]:
    return [bool(bitmap[i // 8] & (0x80 >> (i % 8))) for i in range(n)]


def test_bit_order_is_msb_first_per_byte_like_bittorrent() -> None:
    # 10 blocks of 4 bytes; blocks 0, 7, 8 held
    bits = blockmap.held_from_ranges([(0, 4), (28, 36)], 40, 4)
    assert bits == bytes([0b1000_0001, 0b1000_0000])
    assert blockmap.encode(bits) == base64.b64encode(bytes([0x81, 0x80])).decode()
    assert blockmap.full(10) == bytes([0xFF, 0xC0])
    assert blockmap.full(16) == b"\xff\xff" and blockmap.full(0) == b""


def test_a_chunk_ending_inside_a_block_does_not_hold_it() -> None:
    assert blockmap.held_from_ranges([(0, 7)], 16, 4) == bytes([0b1000_0000])
    # the short last block is held once its bytes to the end of the file are
    assert blockmap.held_from_ranges([(8, 10)], 10, 4) == bytes([0b0010_0000])
    assert blockmap.held_bytes(bytes([0b0010_0000]), 10, 4) == 2


def test_covers_asks_every_block_a_range_touches() -> None:
    bits = blockmap.held_from_ranges([(0, 8)], 16, 4)  # blocks 0, 1
    assert blockmap.covers(bits, 0, 7, 4)
    assert blockmap.covers(bits, 5, 6, 4)
    assert not blockmap.covers(bits, 7, 8, 4)  # byte 8 is block 2
    assert not blockmap.covers(bits, 12, 15, 4)


@given(
    size=st.integers(0, 200),
    bs=st.integers(1, 40),
    ranges=st.lists(st.tuples(st.integers(-5, 210), st.integers(-5, 210)), max_size=8),
)
def test_held_from_ranges_matches_the_byte_model(
    size: int, bs: int, ranges: list[tuple[int, int]]
) -> None:
    n = blockmap.block_count(size, bs)
    bits = blockmap.held_from_ranges(ranges, size, bs)
    assert len(bits) == -(-n // 8)
    model = _model_bits(ranges, size, bs)
    assert _bits_of(bits, n) == model
    # padding bits past the last block are zero
    if n % 8:
        assert bits[-1] & (0xFF >> (n % 8)) == 0
    held = sum(min(size, (i + 1) * bs) - i * bs for i in range(n) if model[i])
    assert blockmap.held_bytes(bits, size, bs) == held
    assert blockmap.decode(blockmap.encode(bits), n) == bits


@given(
    size=st.integers(1, 200),
    bs=st.integers(1, 40),
    ranges=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=6),
    start=st.integers(0, 199),
    length=st.integers(1, 200),
)
def test_covers_is_true_exactly_when_every_touched_block_is_held(
    size: int, bs: int, ranges: list[tuple[int, int]], start: int, length: int
) -> None:
    end = min(size - 1, start + length - 1)
    if start > end:
        return
    bits = blockmap.held_from_ranges(ranges, size, bs)
    model = _model_bits(ranges, size, bs)
    assert blockmap.covers(bits, start, end, bs) == all(
        model[i] for i in range(start // bs, end // bs + 1)
    )


def test_decode_refuses_what_is_not_a_bitmap_of_that_length() -> None:
    with pytest.raises(ValueError, match="base64"):
        blockmap.decode("not base64!", 8)
    with pytest.raises(ValueError, match="bytes"):
        blockmap.decode(blockmap.encode(b"\xff\xff"), 8)
    # bits past the last block are ignored, not trusted
    assert blockmap.decode(blockmap.encode(b"\xff"), 3) == bytes([0b1110_0000])
