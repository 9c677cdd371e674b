"""A separate updating process for the staged-update crash tests.

``python -m tests.manager.updater MODELS_DIR HUB_URL [--limit-rate=R] [--exchange=MODE]
[--die-after-swap]`` runs ``ModelManager.aupdate()`` and prints ``{"updated": [...]}``.
``--exchange=two-renames`` makes the swap take the fallback path (as on a filesystem
without ``RENAME_EXCHANGE``); ``--exchange=between-renames`` also dies between its two
renames; ``--die-after-swap`` dies (``os._exit(9)``, no cleanup, as SIGKILL) right after
the swap, before the registry records it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from accel.manager import ModelManager
from accel.manager import staging as staging_mod


def _arm(argv: list[str]) -> None:
    mode = next((a.split("=", 1)[1] for a in argv if a.startswith("--exchange=")), "renameat2")
    if mode in ("two-renames", "between-renames"):
        staging_mod.exchange_dirs = lambda a, b: False  # type: ignore[assignment]
    if mode == "between-renames":
        real_replace = os.replace

        def replace(src: object, dst: object) -> None:
            if "/.accel/staging/" in str(src) and ".accel" not in Path(str(dst)).parts:
                os._exit(9)
            real_replace(src, dst)  # type: ignore[arg-type]

        os.replace = replace  # type: ignore[assignment]
    if "--die-after-swap" in argv:
        staging_mod.StagedUpdates.commit = lambda self, key: os._exit(9)  # type: ignore[method-assign]


async def main(argv: list[str]) -> int:
    models_dir, hub = [a for a in argv if not a.startswith("--")][:2]
    rate = next((a.split("=", 1)[1] for a in argv if a.startswith("--limit-rate=")), None)
    _arm(argv)
    async with ModelManager(
        models_dir, hub, workers=1, limit_rate=rate, manifest_ttl_s=0, retry_backoff_s=0.05
    ) as mm:
        updated = await mm.aupdate()
    print(json.dumps({"updated": updated}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
