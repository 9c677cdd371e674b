"""Child processes for the crash-loop tests: each does one job and exits 0 when done.

``python -m tests.reliability.drivers fetch URL DEST SIZE SHA256`` downloads one file with
the engine; ``... install MODELS_DIR HUB_URL MODEL VERSION LIMIT_RATE`` installs a model
version with a ModelManager and verifies it. They run in their own process so a test can SIGKILL them at any moment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accel.errors import AccelError


def _fetch(url: str, dest: str, size: str, sha256: str) -> int:
    from accel.fetch import Expected, download

    result = download(
        url,
        Path(dest),
        expected=Expected(size=int(size), sha256=sha256),
        workers=2,
        connections=4,
    )
    print(json.dumps({"size": result.size, "fetched": result.bytes_fetched}), flush=True)
    return 0


def _install(models: str, hub: str, model_id: str, version: str, limit_rate: str) -> int:
    from accel.manager.manager import ModelManager

    mm = ModelManager(models, hub, workers=2, limit_rate=limit_rate or None, retry_backoff_s=0.1)
    try:
        path = mm.install(model_id, version)
        bad = mm.verify(model_id, version)
    finally:
        mm.close()
    print(json.dumps({"path": str(path), "bad": bad}), flush=True)
    return 0 if not any(bad.values()) else 3


def _install_many(models: str, hub: str, limit_rate: str, *model_ids: str) -> int:
    import asyncio

    from accel.manager.manager import ModelManager

    async def run() -> dict[str, list[str]]:
        async with ModelManager(
            models,
            hub,
            workers=2,
            limit_rate=limit_rate or None,
            retry_backoff_s=0.1,
            max_parallel_installs=len(model_ids),
        ) as mm:
            await asyncio.gather(*(mm.ainstall(m) for m in model_ids))
            return await mm.averify()

    bad = asyncio.run(run())
    print(json.dumps({"bad": bad}), flush=True)
    return 0 if not any(bad.values()) else 3


def main(argv: list[str]) -> int:
    """Dispatch on the first argument."""
    try:
        if argv[0] == "fetch":
            return _fetch(*argv[1:5])
        if argv[0] == "install":
            return _install(*argv[1:6])
        if argv[0] == "install-many":
            return _install_many(*argv[1:])
    except AccelError as exc:
        print(f"error: [{exc.code}] {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"unknown driver {argv[:1]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
