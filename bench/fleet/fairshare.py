"""Max-min fair rates for flows over capacitated links (the fluid model's one formula).

Every block transfer in the simulation is a *flow* that crosses a few links (the
sender's uplink or the store's egress, the receiver's downlink, and the two zone
uplinks when it leaves its zone), and may carry a cap of its own (a per-connection
limit). TCP flows sharing a bottleneck converge, to a first approximation, on the
max-min fair allocation: no flow can go faster without slowing one that is already
slower. This module computes it and nothing else: arrays in, an array out, no clock.

Progressive filling, vectorised: each round gives every link its fair share (what it
has left / the flows still unfixed on it); a link whose share is the smallest on every
one of its flows' paths is a bottleneck, and all its flows are fixed at that share (so
is a flow whose own cap is below every share on its path). The link with the global
minimum share always qualifies, so each round fixes at least one flow, and usually a
whole tier of links at once: a handful of rounds for 80,000 flows, not one per link.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["max_min_rates"]

#: relative slack when comparing shares (floating-point sums of rates)
_EPS = 1e-9

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def max_min_rates(
    links: IntArray,
    caps: FloatArray,
    flow_caps: FloatArray | None = None,
    weights: FloatArray | None = None,
) -> FloatArray:
    """The max-min fair rate of each flow.

    ``links``: shape (F, W), the links each flow crosses; pad with the index of a link
    whose capacity is ``inf`` (it never binds). ``caps``: each link's capacity (bytes/s).
    ``flow_caps``: each flow's own limit (``inf``: none). Every flow must cross at least
    one finite link or have a finite cap. ``weights``: shape (F, W), what a flow's unit
    of rate uses of each of its links (a host's CPU: CPU-seconds per byte; a link listed
    twice in a row counts twice); None: 1 everywhere (bytes on a network link). At a
    bottleneck every flow still gets the same rate, ``capacity / sum of weights``.
    """
    if weights is not None:
        return _weighted(links, caps, flow_caps, weights)
    nflows, width = links.shape
    rate = np.zeros(nflows)
    if nflows == 0:
        return rate
    nlinks = caps.shape[0]
    rem = caps.astype(np.float64, copy=True)
    own_all = np.full(nflows, np.inf) if flow_caps is None else flow_caps.astype(np.float64)
    active = np.arange(nflows)
    unbounded = ~np.isfinite(caps)
    while active.size:
        paths = links[active]
        flat = paths.ravel()
        count = np.bincount(flat, minlength=nlinks)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(count > 0, rem / np.maximum(count, 1), np.inf)
        share[unbounded] = np.inf
        tightest = share[paths].min(axis=1)
        own = own_all[active]
        bound = np.minimum(tightest, own)
        if not np.isfinite(bound).all():
            raise ValueError("a flow crosses no finite link and has no cap of its own")
        # the smallest bound among each link's flows: a link is a bottleneck when none
        # of its flows is held lower elsewhere
        lowest = np.full(nlinks, np.inf)
        np.minimum.at(lowest, flat, np.repeat(bound, width))
        bottleneck = (share <= lowest * (1 + _EPS)) & ~unbounded & (count > 0)
        fix = (own <= tightest * (1 + _EPS)) | bottleneck[paths].any(axis=1)
        fixed_rate = bound[fix]
        rate[active[fix]] = fixed_rate
        used = np.bincount(
            paths[fix].ravel(), weights=np.repeat(fixed_rate, width), minlength=nlinks
        )
        rem = np.maximum(rem - used, 0.0)
        active = active[~fix]
    return rate


def _weighted(
    links: IntArray, caps: FloatArray, flow_caps: FloatArray | None, weights: FloatArray
) -> FloatArray:
    """:func:`max_min_rates` with per-link weights (the same filling, weighted sums)."""
    nflows, width = links.shape
    rate = np.zeros(nflows)
    if nflows == 0:
        return rate
    nlinks = caps.shape[0]
    rem = caps.astype(np.float64, copy=True)
    own_all = np.full(nflows, np.inf) if flow_caps is None else flow_caps.astype(np.float64)
    active = np.arange(nflows)
    unbounded = ~np.isfinite(caps)
    while active.size:
        paths = links[active]
        w = weights[active]
        flat = paths.ravel()
        load = np.bincount(flat, weights=w.ravel(), minlength=nlinks)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(load > 0, rem / np.where(load > 0, load, 1.0), np.inf)
        share[unbounded] = np.inf
        tightest = np.where(w > 0, share[paths], np.inf).min(axis=1)
        own = own_all[active]
        bound = np.minimum(tightest, own)
        if not np.isfinite(bound).all():
            raise ValueError("a flow crosses no finite link and has no cap of its own")
        lowest = np.full(nlinks, np.inf)
        np.minimum.at(lowest, flat[w.ravel() > 0], np.repeat(bound, width)[w.ravel() > 0])
        bottleneck = (share <= lowest * (1 + _EPS)) & ~unbounded & (load > 0)
        fix = (own <= tightest * (1 + _EPS)) | (bottleneck[paths] & (w > 0)).any(axis=1)
        fixed_rate = bound[fix]
        used = np.bincount(
            paths[fix].ravel(), weights=(w[fix] * fixed_rate[:, None]).ravel(), minlength=nlinks
        )
        rate[active[fix]] = fixed_rate
        rem = np.maximum(rem - used, 0.0)
        active = active[~fix]
    return rate
