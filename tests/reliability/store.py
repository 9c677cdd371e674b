"""Publish a catalog into a real hub store and keep the expected bytes for checks."""

from __future__ import annotations

from pathlib import Path

from tests.support.hub import expected_bytes, publish_model

MiB = 1024 * 1024

Catalog = dict[tuple[str, str], dict[str, int]]
Expected = dict[tuple[str, str], dict[str, bytes]]


def publish_catalog(root: Path, catalog: Catalog, *, block_size: int = MiB) -> Expected:
    """Publish every (model, version) -> {path: size}; each model gets its own seed so
    that no two models share file bytes (the manager would link instead of fetching)."""
    seeds = {m: i + 1 for i, m in enumerate(sorted({m for m, _ in catalog}))}
    out: Expected = {}
    for (model_id, version), spec in catalog.items():
        seed = seeds[model_id]
        publish_model(root, model_id, version, spec, seed=seed, block_size=block_size)
        out[(model_id, version)] = {rel: expected_bytes(rel, n, seed) for rel, n in spec.items()}
    return out
