"""Child processes for the crash-loop tests: each does one job and exits 0 when done.

``python -m tests.reliability.drivers fetch URL DEST SIZE SHA256`` downloads one file with
the engine. They run in their own process so a test can SIGKILL them at any moment.
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


def main(argv: list[str]) -> int:
    """Dispatch on the first argument."""
    try:
        if argv[0] == "fetch":
            return _fetch(*argv[1:5])
    except AccelError as exc:
        print(f"error: [{exc.code}] {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"unknown driver {argv[:1]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
