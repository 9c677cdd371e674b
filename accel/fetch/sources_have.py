"""Which blake3 blocks of a file a partial source (a peer) holds: its ``?have`` bitmap.

A peer serving a file it is still downloading holds only some of its blocks. It says
which at ``GET {file URL}?have``: ``{"block_size": N, "size": S, "have": "<base64>"}``,
bit *i* set when block *i* is held and verified there, most significant bit first in
each byte (BitTorrent's bitfield order; the wire form is :mod:`accel.blockmap`'s, which
the node's peer server writes). :class:`Have` is that bitmap as a value the
selection policy (:mod:`~accel.fetch.sources`) can ask "does this source hold every
block of this chunk?"; :func:`parse_have` turns an answer into one, held to the size
and block size the caller expects.

Pure: bytes in, values out, no I/O (the request is :mod:`~accel.fetch.sources_poll`'s).
A peer's word about what it holds is a hint, never trusted: a block it claims but does
not send (``404 block_not_held``) costs a refresh of its bitmap, and bytes it sends
are checked against the manifest's blake3 digests like any source's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from accel import blockmap

__all__ = ["Have", "HaveError", "encode_have", "parse_have"]

#: the largest ``?have`` answer read (a 1 TiB file in 1 MiB blocks: 128 KiB of bitmap,
#: about 175 KiB of base64)
MAX_HAVE_BYTES = 1 << 20


class HaveError(ValueError):
    """A ``?have`` answer that is not one (malformed, or for another file)."""


@dataclass(frozen=True)
class Have:
    """A set of block indexes as one integer (bit *i* = block *i*): range questions
    are a mask and a compare, whatever the number of blocks."""

    bits: int = 0

    @classmethod
    def of(cls, blocks: range | list[int] | tuple[int, ...] | set[int]) -> Have:
        bits = 0
        for b in blocks:
            if b < 0:
                raise ValueError("a block index is never negative")
            bits |= 1 << b
        return cls(bits)

    @classmethod
    def first(cls, n: int) -> Have:
        """Blocks ``0..n-1``: a whole file of ``n`` blocks."""
        return cls((1 << max(0, n)) - 1)

    def __contains__(self, block: int) -> bool:
        return block >= 0 and bool(self.bits >> block & 1)

    def __len__(self) -> int:
        return self.bits.bit_count()

    def covers(self, first: int, end: int) -> bool:
        """Every block of ``[first, end)`` is held (an empty range is)."""
        if end <= first:
            return True
        mask = ((1 << (end - first)) - 1) << first
        return self.bits & mask == mask

    def without(self, first: int, end: int) -> Have:
        """The same set less the blocks ``[first, end)``."""
        if end <= first:
            return self
        mask = ((1 << (end - first)) - 1) << first
        return Have(self.bits & ~mask)


def _from_msb_first(raw: bytes, nblocks: int) -> int:
    """The bitmap's bits as an integer with bit *i* = block *i*."""
    # int.from_bytes(big) puts byte 0's MSB at the top; reversing the bit order of the
    # whole string makes block 0 bit 0: one pass in C (no per-bit Python loop).
    as_int = int.from_bytes(raw, "big")
    width = len(raw) * 8
    rev = int(format(as_int, f"0{width}b")[::-1], 2) if width else 0
    return rev & ((1 << nblocks) - 1)


def parse_have(body: bytes, *, size: int, block_size: int) -> Have:
    """The blocks an answer of ``GET ...?have`` says are held, for a file of ``size``
    bytes in ``block_size`` blocks; :class:`HaveError` for an answer that is not one
    or describes another file (another size, another block size, a short bitmap)."""
    if len(body) > MAX_HAVE_BYTES:
        raise HaveError(f"the answer is over {MAX_HAVE_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HaveError("the answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise HaveError("the answer is not a JSON object")
    got_size, got_block, text = doc.get("size"), doc.get("block_size"), doc.get("have")
    if type(got_size) is not int or type(got_block) is not int or not isinstance(text, str):
        raise HaveError("the answer lacks size, block_size or have")
    if got_size != size:
        raise HaveError(f"the peer's file is {got_size} bytes, expected {size}")
    if got_block != block_size:
        raise HaveError(f"the peer's blocks are {got_block} bytes, expected {block_size}")
    nblocks = blockmap.block_count(size, block_size)
    try:
        raw = blockmap.decode(text, nblocks)
    except ValueError as exc:
        raise HaveError(str(exc)) from exc
    return Have(_from_msb_first(raw, nblocks))


def encode_have(have: Have, nblocks: int) -> str:
    """The ``have`` field for ``have`` over ``nblocks`` blocks (tests, the simulation)."""
    out = bytearray(-(-nblocks // 8))
    for b in range(nblocks):
        if b in have:
            out[b // 8] |= 0x80 >> (b % 8)
    return blockmap.encode(bytes(out))
