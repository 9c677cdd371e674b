"""Which blake3 blocks of a file a peer holds: the bitmap of ``GET ...?have``, as values.

A file of ``size`` bytes in blocks of ``block_size`` has ``ceil(size / block_size)``
blocks (the last may be shorter). A peer says which it holds with a bitmap, bit ``i``
for block ``i``, packed **MSB-first in each byte** as BitTorrent's ``bitfield`` message
is: block 0 is ``0x80`` of byte 0, block 7 is ``0x01`` of byte 0, block 8 is ``0x80`` of
byte 1. The bits past the last block are zero. On the wire the bytes are base64
(standard alphabet, padded).

Pure: no I/O. The node's peer server builds bitmaps from the byte ranges a download has
finished (:func:`held_from_ranges`); a client decodes one (:func:`decode`) and asks
only for ranges whose blocks are all set (:func:`covers`). Both import this module; it
imports nothing of either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

__all__ = [
    "block_count",
    "blocks_of_range",
    "covers",
    "decode",
    "encode",
    "full",
    "held_bytes",
    "held_from_ranges",
]


def block_count(size: int, block_size: int) -> int:
    """Blocks of a ``size``-byte file (0 for an empty file or no blocks)."""
    if size <= 0 or block_size <= 0:
        return 0
    return -(-size // block_size)


def full(nblocks: int) -> bytes:
    """The bitmap with every one of ``nblocks`` blocks held."""
    out = bytearray(b"\xff" * (nblocks // 8))
    if nblocks % 8:
        out.append((0xFF << (8 - nblocks % 8)) & 0xFF)
    return bytes(out)


def held_from_ranges(ranges: Iterable[tuple[int, int]], size: int, block_size: int) -> bytes:
    """The bitmap of the blocks lying wholly inside the union of ``ranges``.

    ``ranges`` are half-open ``[start, end)`` byte ranges (a download's finished chunks),
    in any order, overlapping or touching; a block is held only when every one of its
    bytes is in some range, so a chunk that ends inside a block does not make it held.
    """
    n = block_count(size, block_size)
    bits = bytearray(-(-n // 8))
    merged: list[list[int]] = []
    for start, end in sorted((max(0, s), min(size, e)) for s, e in ranges):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        first = -(-start // block_size)  # the first block starting inside the range
        last = n if end >= size else end // block_size  # one past the last ending inside it
        _set_bits(bits, first, last)
    return bytes(bits)


def _set_bits(bits: bytearray, first: int, stop: int) -> None:
    """Set bits ``first..stop-1``: whole bytes by slice (a 100 GB file has 100,000 blocks
    of 1 MiB, and a peer answers ?have often), the ragged ends bit by bit."""
    i = first
    while i < stop and i & 7:
        bits[i >> 3] |= 0x80 >> (i & 7)
        i += 1
    whole = (stop - i) >> 3
    if whole > 0:
        bits[i >> 3 : (i >> 3) + whole] = b"\xff" * whole
        i += whole << 3
    while i < stop:
        bits[i >> 3] |= 0x80 >> (i & 7)
        i += 1


def _bit(bits: bytes, i: int) -> bool:
    return (i >> 3) < len(bits) and bool(bits[i >> 3] & (0x80 >> (i & 7)))


def blocks_of_range(start: int, end_inclusive: int, block_size: int) -> range:
    """The block indexes that bytes ``start..end_inclusive`` touch."""
    if block_size <= 0 or end_inclusive < start:
        return range(0)
    return range(start // block_size, end_inclusive // block_size + 1)


def covers(bits: bytes, start: int, end_inclusive: int, block_size: int) -> bool:
    """True when every block that bytes ``start..end_inclusive`` touch is held."""
    return all(_bit(bits, i) for i in blocks_of_range(start, end_inclusive, block_size))


def held_bytes(bits: bytes, size: int, block_size: int) -> int:
    """Bytes of the file in held blocks (the last block may be shorter)."""
    n = block_count(size, block_size)
    held = int.from_bytes(bits[: -(-n // 8)], "big").bit_count()
    if n and _bit(bits, n - 1):
        held -= 1
        return held * block_size + (size - (n - 1) * block_size)
    return held * block_size


def encode(bits: bytes) -> str:
    """The wire form of a bitmap: base64, standard alphabet, padded."""
    return base64.b64encode(bits).decode("ascii")


def decode(text: str, nblocks: int) -> bytes:
    """The bitmap of ``nblocks`` blocks from its wire form; ValueError when it is not
    base64 or not exactly ``ceil(nblocks / 8)`` bytes (bits past the end are ignored)."""
    try:
        bits = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("the have bitmap is not base64") from exc
    if len(bits) != -(-nblocks // 8):
        raise ValueError(f"the have bitmap has {len(bits)} bytes, not {-(-nblocks // 8)}")
    if nblocks % 8:
        bits = bits[:-1] + bytes([bits[-1] & ((0xFF << (8 - nblocks % 8)) & 0xFF)])
    return bits
