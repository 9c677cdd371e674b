"""Destinations that exist and are not regular files: streamed into, never renamed over.

The device nodes are made by the test in its own temp dir (mknod, as root), never the
machine's /dev/null.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from accel.errors import DownloadError, IntegrityError
from accel.fetch import Engine, Expected
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

ACCEL = [sys.executable, "-m", "accel"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")


def _null_device(path: Path) -> Path:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the null device's numbers
    return path


@needs_root
def test_get_into_a_device_streams_verified_and_keeps_the_device(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    dev = _null_device(tmp_path / "null")
    want = sha256_of(www / "big.bin")
    r = subprocess.run(
        [*ACCEL, "get", origin.file_url("big.bin"), "-o", str(dev), "--sha256", want],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert stat.S_ISCHR(os.stat(dev).st_mode)  # still the device, not a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no .part, no checkpoint
    bad = subprocess.run(
        [*ACCEL, "get", origin.file_url("big.bin"), "-o", str(dev), "--sha256", "0" * 64],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "checksum" in bad.stderr or "SHA256" in bad.stderr
    assert stat.S_ISCHR(os.stat(dev).st_mode)


async def test_a_fifo_receives_the_bytes_in_order(origin: Nginx, www: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = hashlib.sha256()
    opened = threading.Event()

    def reader() -> None:
        with open(fifo, "rb") as f:
            opened.set()
            while chunk := f.read(1 << 16):
                got.update(chunk)

    t = threading.Thread(target=reader)
    t.start()
    want = sha256_of(www / "big.bin")
    # The reader must be there first: the writer never blocks on an unread FIFO.
    import asyncio

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, opened.wait, 10)
    async with Engine(workers=2, connections=4) as engine:
        result = await engine.download(
            origin.file_url("big.bin"), fifo, expected=Expected(sha256=want)
        )
    await loop.run_in_executor(None, t.join, 10)
    assert result.verified and result.sha256 == want
    assert got.hexdigest() == want
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


async def test_a_fifo_nobody_reads_is_an_error_not_a_hang(origin: Nginx, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    async with Engine(workers=1, connections=2) as engine:
        with pytest.raises(DownloadError, match="no process is reading"):
            await engine.download(origin.file_url("small.bin"), fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


async def test_without_a_digest_a_device_download_is_complete_not_verified(
    origin: Nginx, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod of a device needs root")
    dev = _null_device(tmp_path / "null")
    async with Engine(workers=1, connections=2) as engine:
        result = await engine.download(origin.file_url("small.bin"), dev)
        assert not result.verified and result.size == 100_000
        with pytest.raises(IntegrityError):
            await engine.download(
                origin.file_url("small.bin"), dev, expected=Expected(size=100_001)
            )


async def test_a_socket_is_refused_with_a_clear_error(origin: Nginx, tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        async with Engine(workers=1, connections=2) as engine:
            with pytest.raises(DownloadError, match="socket"):
                await engine.download(origin.file_url("small.bin"), path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)


@pytest.mark.parametrize("where", ["below-a-file", "proc"])
async def test_a_local_file_error_is_an_accel_error_of_the_fetch_layer(
    origin: Nginx, tmp_path: Path, where: str
) -> None:
    """The library's own seam: a caller of Engine.download never sees a bare OSError."""
    from accel.errors import FilesystemError

    if where == "below-a-file":
        (tmp_path / "file").write_bytes(b"x")
        dest = tmp_path / "file" / "sub" / "f.bin"
    else:
        dest = Path("/proc/self/no-such-dir/f.bin")
    async with Engine(workers=1, connections=2) as engine:
        with pytest.raises(FilesystemError) as info:
            await engine.download(origin.file_url("small.bin"), dest)
    assert isinstance(info.value.__cause__, OSError)
