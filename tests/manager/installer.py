"""A separate installing process for the concurrency tests and the bench.

``python -m tests.manager.installer MODELS_DIR HUB_URL MODEL[@VERSION]... [--nowait]``
prints one JSON line per model: {"model", "path"} or {"model", "error", "reason"}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from accel.errors import AccelError
from accel.manager import ModelManager


async def main(argv: list[str]) -> int:
    models_dir, hub, *refs = [a for a in argv if not a.startswith("--")]
    wait = "--nowait" not in argv
    rate = next((a.split("=", 1)[1] for a in argv if a.startswith("--limit-rate=")), None)
    code = 0
    async with ModelManager(models_dir, hub, workers=1, limit_rate=rate) as mm:
        results = await asyncio.gather(
            *(mm.ainstall(*(r.split("@", 1) if "@" in r else (r, None)), wait=wait) for r in refs),
            return_exceptions=True,
        )
        for ref, res in zip(refs, results, strict=True):
            if isinstance(res, AccelError):
                code = 1
                out = {"model": ref, "error": res.code, "reason": getattr(res, "reason", None)}
            elif isinstance(res, BaseException):
                raise res
            else:
                out = {"model": ref, "path": str(res)}
            print(json.dumps(out), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
