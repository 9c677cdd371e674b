"""Bearer-token checks of the hub: one constant-time comparison for every route.

Owns reading ``Authorization: Bearer <token>`` and comparing it with a set of tokens in
constant time (the time taken says neither whether nor which token matched). Used by the
hub's guard (its tokens) and the peer tracker's routes (the fleet token). Never logs a
token.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

__all__ = ["bearer_matches"]


def bearer_matches(headers: Mapping[str, str], tokens: tuple[bytes, ...]) -> bool:
    """True when ``headers`` carry ``Authorization: Bearer T`` with T one of ``tokens``."""
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    offered = given.strip().encode()
    ok = False
    for token in tokens:  # no early exit: the time taken does not say which token matched
        ok |= hmac.compare_digest(offered, token)
    return ok
