"""The prefix hash: a file whose mapped pages cannot be read is a clear error, not SIGBUS.

A page of a mapping that the kernel cannot fill (a disk read error, or the file cut
short under the mapping) kills the process with SIGBUS when touched. The hash loop
faults each window in first (MADV_POPULATE_READ), which reports that as an errno.
The test cuts the file short right after it is mapped, in a child process, so the old
failure mode (the child killed by SIGBUS) cannot take pytest down with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

_CHILD = r"""
import asyncio, mmap, os, sys
from pathlib import Path
from accel.errors import DownloadError
import accel.fetch.finish as finish

path = Path(sys.argv[1])
path.write_bytes(os.urandom(8 << 20))
real_mmap = mmap.mmap

def mapped_then_cut(fd, length, **kw):
    mm = real_mmap(fd, length, **kw)
    os.truncate(path, 4096)  # the pages past here are gone, as after a disk error
    return mm

finish.mmap.mmap = mapped_then_cut
hasher = finish.PrefixHasher(path, 8 << 20)
if sys.argv[2] == "no-populate":
    hasher._populate = False
fd = os.open(path, os.O_RDONLY)
try:
    hasher._hash_to(fd, 8 << 20)
except DownloadError as exc:
    print("clear error:", exc)
    sys.exit(3)
print("hashed")
"""


@pytest.mark.parametrize("mode", ["populate", "no-populate"])
def test_unreadable_mapped_pages_are_a_clear_error(tmp_path: Path, mode: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "f.part"), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if mode == "populate":
        assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
        assert "cannot read" in r.stdout and "f.part" in r.stdout
    else:
        # What the hash loop did before it faulted windows in: killed, no message.
        assert r.returncode == -signal.SIGBUS, (r.returncode, r.stdout, r.stderr)
