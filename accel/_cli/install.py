"""``accel install MODEL[@VERSION]...``: install model versions from the hub, verified."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from accel._cli._models import Renderer, add_common, emit_json, manager_from, split_ref
from accel.errors import AccelError, UsageError

__all__ = ["register", "run_installs"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "install",
        help="install model versions from the hub (verified, resumable)",
        description="Install each MODEL[@VERSION] (default: the hub's default version) "
        "into the models dir. Rerunning resumes; files already installed in another "
        "version are linked, not downloaded.",
    )
    p.epilog = "Example: accel install whisper-small@1.0 marian-zh-en --limit-rate 50M"
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL[@VERSION]",
        help="models to install (default version: the hub's)",
    )
    add_common(p)
    p.add_argument(
        "--priority", type=int, default=0, help="queue priority, higher first (default: 0)"
    )
    p.add_argument(
        "--limit-rate",
        metavar="RATE",
        help="total bandwidth cap in binary units: 50M = 50 MiB/s (default: $ACCEL_LIMIT_RATE, "
        "the config file's limit_rate, else none)",
    )
    p.add_argument(
        "--max-parallel-files",
        type=int,
        default=3,
        metavar="N",
        help="files of one version fetched at once (default: 3); files of at most 4 MiB, "
        "each one request, up to four times as many",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="download worker processes (default: one per core)",
    )
    peers = p.add_argument_group("peers (other nodes serving what they hold; none trusted)")
    peers.add_argument(
        "--peer-token",
        metavar="T",
        help="the fleet token: ask the hub's tracker for peers of each version and read "
        "from them with it (default: $ACCEL_PEER_TOKEN); every block is checked and the "
        "hub stays the last resort",
    )
    peers.add_argument(
        "--peer",
        metavar="URL",
        action="append",
        default=[],
        help="a peer's base URL (as it announces itself; repeatable): used without the tracker",
    )
    peers.add_argument(
        "--node-id",
        metavar="ID",
        help="this node's id in the tracker (its own announces): never handed itself as a peer",
    )
    peers.add_argument(
        "--zone", metavar="Z", default="", help="this node's zone: same-zone peers first"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the paths")
    p.set_defaults(func=handler)


def peer_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--peer-token`` and ``--peer`` as ModelManager arguments (checked)."""
    import urllib.parse

    token = getattr(args, "peer_token", None)
    if token is not None and not token.strip():
        raise UsageError("--peer-token: the fleet token must not be empty")
    if token is None:
        token = os.environ.get("ACCEL_PEER_TOKEN", "").strip() or None
    bases: list[str] = []
    for url in getattr(args, "peer", None) or []:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise UsageError(f"--peer: expected a peer's http:// or https:// base URL, got {url!r}")
        if url.rstrip("/") not in bases:
            bases.append(url.rstrip("/"))
    return {
        "peer_token": token.strip() if token else None,
        "peers": tuple(bases),
        "node_id": getattr(args, "node_id", None) or "",
        "peer_zone": getattr(args, "zone", "") or "",
    }


def handler(args: argparse.Namespace) -> int:
    refs = [split_ref(r) for r in args.models]
    if getattr(args, "limit_rate", None) is None:
        # Forked now, from this one thread, the engine's workers cost no interpreter
        # start (accel.fetch.pool.prespawn); an install that stops early leaves them
        # behind, and they end with this process.
        from accel.fetch.pool import DEFAULT_WORKER_NICE, default_workers, prespawn

        prespawn(getattr(args, "workers", None) or default_workers(), nice=DEFAULT_WORKER_NICE)
    return asyncio.run(_cancel_on_sigterm(run_installs(args, refs)))


async def _cancel_on_sigterm(installs: Coroutine[Any, Any, int]) -> int:
    """SIGTERM (``kill``, systemd's stop) like Ctrl-C: cancel, so every download records
    the bytes its running chunks wrote and the versions are left ``paused``. The default
    action would end the process at once, keeping only the last periodic checkpoint."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await installs
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None  # `accel: interrupted`, exit 130
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def run_installs(args: argparse.Namespace, refs: list[tuple[str, str | None]]) -> int:
    """Install every ref concurrently with one display; exit 0 only if all are ready."""
    mm = manager_from(
        args,
        need_hub=not all(m.startswith("hf://") for m, _ in refs),
        limit_rate=getattr(args, "limit_rate", None),
        max_parallel_files=getattr(args, "max_parallel_files", 3),
        workers=getattr(args, "workers", None),
        **peer_options(args),
    )
    failures = 0
    async with mm:
        with Renderer(
            as_json=args.json,
            quiet=getattr(args, "quiet", False),
            failures=False,
            expect=len(refs),
        ) as render:
            mm.subscribe(render)

            async def one(model: str, version: str | None) -> Any:
                try:
                    return await mm.ainstall(model, version, priority=getattr(args, "priority", 0))
                except AccelError:
                    render.dropped()
                    raise

            results = await asyncio.gather(*(one(m, v) for m, v in refs), return_exceptions=True)
        for (model, version), result in zip(refs, results, strict=True):
            shown = f"{model}@{version}" if version else model
            if isinstance(result, AccelError):
                failures += 1
                if args.json:
                    emit_json(
                        {
                            "type": "error",
                            "model": shown,
                            "model_id": model,
                            "version": version,
                            **result.to_dict(),
                        }
                    )
                else:
                    print(f"accel: error [{result.code}]: {shown}: {result}", file=sys.stderr)
            elif isinstance(result, BaseException):
                raise result
            elif args.json:
                emit_json(
                    {
                        "type": "result",
                        "model": shown,
                        "model_id": model,
                        "version": Path(result).name,
                        "path": str(result),
                    }
                )
            else:
                print(result)
    return 1 if failures else 0
