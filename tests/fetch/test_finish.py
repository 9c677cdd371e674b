"""The prefix hash: a ``.part`` cut short while it is read back is a clear error.

The hash reads the finished prefix back from the page cache. A file truncated under it
(another process, or the bytes lost) must end the download with a DownloadError that
names the file, never a digest of fewer bytes, a hang, or (as when the prefix was read
through a mapping) a SIGBUS that kills the process. The hash runs in a child process so
that a crash, had it one, cannot take pytest down.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import os, sys, threading, time
from pathlib import Path
from accel.errors import DownloadError
from accel.fetch.finish import PrefixHasher

path = Path(sys.argv[1])
size = 256 << 20
with open(path, "wb") as f:
    for _ in range(size >> 20):
        f.write(os.urandom(1 << 20))
hasher = PrefixHasher(path, size)
fd = os.open(path, os.O_RDONLY)
outcome = []

def run():
    try:
        hasher._hash_to(fd, size)
        outcome.append("hashed")
    except DownloadError as exc:
        outcome.append(f"clear error: {exc}")

t = threading.Thread(target=run)
t.start()
deadline = time.monotonic() + 30
while hasher.hashed == 0 and t.is_alive() and time.monotonic() < deadline:
    time.sleep(0.0005)
os.truncate(path, 4096)  # the rest is gone while the hash reads it
t.join(60)
print(outcome[0] if outcome else "hung", "after", hasher.hashed)
"""


def test_a_part_cut_short_while_hashed_is_a_clear_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "f.part")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith("clear error:"), r.stdout
    assert "f.part" in r.stdout and "shorter than expected" in r.stdout


def test_the_prefix_hash_is_the_files_sha256(tmp_path: Path) -> None:
    from accel.fetch.finish import PrefixHasher

    data = os.urandom(3 * 256 * 1024 + 12345)  # not a whole number of reads
    part = tmp_path / "g.part"
    part.write_bytes(data)
    hasher = PrefixHasher(part, len(data))
    fd = os.open(part, os.O_RDONLY)
    try:
        hasher._hash_to(fd, 100_000)  # in two steps, as chunks finish
        hasher._hash_to(fd, len(data))
    finally:
        os.close(fd)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
