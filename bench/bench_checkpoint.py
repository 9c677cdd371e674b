"""The cost of one resume-checkpoint save: 100 GB in 64 MiB chunks (1,600 chunks done).

The supervisor saves every second of a running download, on a thread but holding the
GIL for the encoding, so both the wall time (mostly the sync) and the CPU time count.
Reports the median of ``--saves`` saves (after one that creates the file), in a folder
on the disk under test (``--dir``: a real disk and a tmpfs give the two ends).

Usage: ``python bench/bench_checkpoint.py [--dir D] [--saves N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import xxhash  # noqa: E402

from accel.fetch.checkpoint import (  # noqa: E402
    Checkpoint,
    DoneChunk,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)

CHUNK = 64 << 20
CHUNKS = 1600


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--saves", type=int, default=300)
    args = p.parse_args()
    done = [
        DoneChunk(i * CHUNK, (i + 1) * CHUNK, xxhash.xxh3_128(b"%d" % i).hexdigest())
        for i in range(CHUNKS)
    ]
    cp = Checkpoint(
        url="http://127.0.0.1:8080/storage/models/m/v1/files/model.safetensors",
        size=CHUNKS * CHUNK,
        etag='"65f1a2b3-1900000000"',
        last_modified="Tue, 01 Dec 2026 21:00:00 GMT",
        chunks=done,
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        dest = Path(d) / "big.bin"
        save_checkpoint(dest, cp)
        wall, cpu = [], []
        for _ in range(args.saves):
            w, c = time.perf_counter(), time.process_time()
            save_checkpoint(dest, cp)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        loads = []
        for _ in range(20):
            w = time.perf_counter()
            assert load_checkpoint(dest) == cp
            loads.append(time.perf_counter() - w)
        size = checkpoint_path(dest).stat().st_size
    print(
        f"{args.dir}: {CHUNKS} chunks, save median {statistics.median(wall) * 1e3:.2f} ms wall "
        f"/ {statistics.median(cpu) * 1e3:.2f} ms CPU over {args.saves} saves; "
        f"load median {statistics.median(loads) * 1e3:.2f} ms; file {size} bytes"
    )


if __name__ == "__main__":
    main()
