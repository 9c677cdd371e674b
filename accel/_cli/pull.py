"""``accel pull MODEL[@VERSION] [--local-dir D]``: the one-word install.

As ``ollama pull`` and ``hf download``: installs the version (the hub's default unless
named) with live progress, prints its path; ``--local-dir D`` also places the ready
version's files in D, hard-linked where the filesystem allows (no second copy on disk),
copied otherwise. The models dir stays the source of truth: ``accel verify`` and
``accel update`` act on it, not on D.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from accel._cli._models import add_common, manager_from, split_ref
from accel._cli._paths import local_path_str
from accel._cli.install import _cancel_on_sigterm, run_installs

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pull",
        help="install one model version (like `ollama pull`); --local-dir places its files",
        description="Install MODEL[@VERSION] (default: the hub's default version) into the "
        "models dir, verified and resumable, and print its path. With --local-dir D, also "
        "place the files in D (hard links where possible, copies otherwise). "
        "Example: accel pull whisper-small@1.0 --local-dir ./whisper",
    )
    p.add_argument(
        "model", metavar="MODEL[@VERSION]", help="e.g. whisper-small or whisper-small@1.0"
    )
    p.add_argument(
        "--local-dir",
        metavar="DIR",
        type=local_path_str,
        help="also place the version's files here (created if missing)",
    )
    add_common(p)
    p.add_argument("--limit-rate", metavar="RATE", help="total bandwidth cap (25M = 25 MiB/s)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the path")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    model, version = split_ref(args.model)
    code = asyncio.run(_cancel_on_sigterm(run_installs(args, [(model, version)])))
    if code != 0 or not args.local_dir:
        return code
    mm = manager_from(args)
    try:
        src = (
            mm.get_model_path(model, version)
            if version
            else asyncio.run(mm.aget_model_path(model, None))
        )
    finally:
        mm.close()
    placed = place_files(src, Path(args.local_dir))
    if not args.quiet:
        links = sum(1 for how in placed.values() if how == "link")
        print(
            f"placed {len(placed)} files in {args.local_dir} "
            f"({links} hard links, {len(placed) - links} copies)"
        )
    return 0


def place_files(src: Path, dest: Path) -> dict[str, str]:
    """Every file under ``src`` at the same relative path under ``dest``: rel -> how."""
    from accel.manager.install import link_or_copy

    placed: dict[str, str] = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.name.startswith(".") and path.name.endswith(".accel.json"):
            continue  # a verified-file record, the models dir's own
        rel = path.relative_to(src)
        placed[rel.as_posix()] = link_or_copy(path, dest / rel)
    return placed
