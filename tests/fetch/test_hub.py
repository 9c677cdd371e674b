"""The accelerator against the real hub (``accel serve``) on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from accel.errors import HTTPStatusError
from accel.fetch import Engine, Expected
from tests.support.hub import publish_model, running_hub

MiB = 1024 * 1024


async def test_hub_file_with_block_digests_and_auth(tmp_path: Path) -> None:
    root = tmp_path / "store"
    manifest = publish_model(root, "m", "1", {"w.bin": 5 * MiB + 77}, block_size=MiB)
    entry = manifest.files[0]
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(running_hub(root, token="s3cret"))
        url = hub.file_url("m", "1", "w.bin")
        expected = Expected(size=entry.size_bytes, sha256=entry.sha256, chunks=entry.chunks)
        async with Engine(workers=1, connections=4, headers=hub.headers) as engine:
            result = await engine.download(url, tmp_path / "w.bin", expected=expected)
            assert result.sha256 == entry.sha256 and result.ranged
            with pytest.raises(HTTPStatusError) as info:  # no token: fails fast
                await engine.download(url, tmp_path / "x.bin", headers={"Authorization": ""})
            assert info.value.status == 401
        data = (tmp_path / "w.bin").read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        # the CLI with the hub's manifest URL
        murl = f"{hub.url}/api/models/m/versions/1/manifest"
        auth = f"Authorization: Bearer {hub.token}"
        r = subprocess.run(
            [sys.executable, "-m", "accel", "get", url, "-o", str(tmp_path / "c.bin"),
             "--manifest", murl, "--file", "w.bin", "--header", auth, "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[-1])["sha256"] == entry.sha256
