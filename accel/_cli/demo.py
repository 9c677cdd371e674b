"""``accel demo-store``: build a hub store of generated demo models (for the demo and benches)."""

from __future__ import annotations

import argparse
from typing import Any

from accel._cli._paths import local_path
from accel.errors import UsageError
from accel.units import format_bytes, parse_size

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo-store",
        help="publish generated demo models (ASR-like and MT-like, two versions each) into DIR",
        description="Deterministic pseudo-random content: the same options always give the "
        "same bytes and checksums. Version 1.1.0 of each model shares files with 1.0.0.",
    )
    p.epilog = "Example: accel demo-store ./store"
    p.add_argument("root", type=local_path, help="the hub store directory to publish into")
    p.add_argument(
        "--size-scale",
        type=float,
        default=1.0,
        help="multiply the large files' sizes (1.0: ~200 MiB per ASR version)",
    )
    p.add_argument("--seed", type=int, default=0, help="content seed")
    p.add_argument("--block-size", default="16MiB", help="blake3 block size")
    p.set_defaults(func=_demo_store)


def _demo_store(args: argparse.Namespace) -> int:
    from accel.hub.demo import build_demo_store

    if not 0 < args.size_scale <= 100:
        raise UsageError(f"--size-scale {args.size_scale} must be in (0, 100]")
    manifests = build_demo_store(
        args.root,
        scale=args.size_scale,
        seed=args.seed,
        block_size=parse_size(args.block_size, option="--block-size"),
    )
    for m in manifests:
        print(f"{m.model_id}@{m.version}: {len(m.files)} files, {format_bytes(m.size_bytes)}")
    return 0
