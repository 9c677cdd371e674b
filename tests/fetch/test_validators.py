"""Without an ETag the server's Last-Modified and size hold every answer; "verified"
only when an expected digest checked the bytes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from accel.errors import RemoteChangedError
from accel.fetch import Engine, ProgressEvent
from accel.fetch.checkpoint import part_path
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

ACCEL = [sys.executable, "-m", "accel"]


def _replace(path: Path) -> None:
    """Another file of the same size under the same name, with a later mtime."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(os.urandom(path.stat().st_size))
    st = path.stat()
    os.utime(tmp, (st.st_atime + 10, st.st_mtime + 10))
    os.replace(tmp, path)


async def test_a_file_replaced_mid_download_without_etag_is_never_mixed(
    nginx: Callable[..., Nginx], tmp_path: Path
) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.bin").write_bytes(os.urandom(16 << 20))
    origin = nginx(www, etag=False, limit_rate="4m")
    dest = tmp_path / "out" / "f.bin"
    committed = asyncio.Event()

    def on_event(ev: ProgressEvent) -> None:
        if ev.committed > 0:
            committed.set()

    async with Engine(workers=2, connections=4) as engine:
        job = asyncio.ensure_future(
            engine.download(origin.file_url("f.bin"), dest, chunk_size=1 << 20, progress=on_event)
        )
        await asyncio.wait_for(committed.wait(), 30)
        _replace(www / "f.bin")
        with pytest.raises(RemoteChangedError):
            await job
    assert not dest.exists()  # no file of two files under the final name
    # The rerun sees another Last-Modified: the old chunks are dropped, the new file
    # comes whole and consistent.
    async with Engine(workers=2, connections=4) as engine:
        result = await engine.download(origin.file_url("f.bin"), dest, chunk_size=1 << 20)
    assert result.sha256 == sha256_of(www / "f.bin") == sha256_of(dest)
    assert not result.verified
    assert not part_path(dest).exists()


def test_complete_is_not_called_verified(origin: Nginx, www: Path, tmp_path: Path) -> None:
    plain = subprocess.run(
        [*ACCEL, "get", origin.file_url("big.bin"), "-o", str(tmp_path / "a.bin"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0, plain.stderr
    events = [json.loads(line) for line in plain.stdout.splitlines()]
    assert "verified" not in [e["event"] for e in events]
    assert events[-1]["event"] == "done" and events[-1]["verified"] is False
    lines = subprocess.run(
        [*ACCEL, "get", origin.file_url("small.bin"), "-o", str(tmp_path / "b.bin")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lines.returncode == 0, lines.stderr
    assert "complete, not verified" in lines.stdout and "--sha256" in lines.stderr
    want = sha256_of(www / "small.bin")
    checked = subprocess.run(
        [*ACCEL, "get", origin.file_url("small.bin"), "-o", str(tmp_path / "c.bin"),
         "--sha256", want, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    events = [json.loads(line) for line in checked.stdout.splitlines()]
    assert "verified" in [e["event"] for e in events] and events[-1]["verified"] is True
