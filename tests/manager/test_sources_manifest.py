"""Manifest mirrors end to end: ``accel publish --mirror BASE`` writes them, the real hub
serves them, and an install reads the file from the mirror (``{base}/{path}``, the path
percent-encoded per segment) as well as from the hub."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from accel.manager import ModelManager
from tests.support.hub import expected_bytes, make_files, publish_model, running_hub
from tests.support.nginx import Nginx

MiB = 1 << 20
SPEC: dict[str, int | bytes] = {"sub dir/model.bin": 6 * MiB + 7, "config.json": 300}


async def test_install_reads_from_the_manifest_mirror(
    nginx: Callable[..., Nginx], tmp_path: Path
) -> None:
    root = tmp_path / "store"
    publish_model(root, "asr", "1.0", SPEC, block_size=256 * 1024)
    www = tmp_path / "mirror"
    shutil.copytree(root / "models" / "asr" / "1.0" / "files", www / "asr" / "1.0")
    mirror = nginx(www)
    base = f"{mirror.url}/asr/1.0"
    # the same content again, now with a mirror: the manifest gains it, nothing else
    with tempfile.TemporaryDirectory() as src:
        make_files(Path(src), SPEC)
        out = subprocess.run(
            [sys.executable, "-m", "accel", "publish", src, "--root", str(root),
             "--model", "asr", "--version", "1.0", "--block-size", "256KiB",
             "--mirror", base + "/"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "accel", "publish", str(tmp_path), "--root", str(root),
         "--model", "asr", "--version", "1.0", "--mirror", "ftp://m/x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith(
        "accel: publish: --mirror: expected a base URL"
    )
    with running_hub(root) as hub:
        with urllib.request.urlopen(f"{hub.url}/api/models/asr/versions/1.0/manifest") as r:
            assert json.loads(r.read())["mirrors"] == [base]
        async with ModelManager(tmp_path / "models", hub.url, workers=2) as mm:
            path = await mm.ainstall("asr", "1.0")
    assert (path / "sub dir" / "model.bin").read_bytes() == expected_bytes(
        "sub dir/model.bin", 6 * MiB + 7
    )
    assert mirror.bytes_sent() > MiB  # the mirror served part of the file
    assert any(s in (200, 206) for s in mirror.statuses())


async def test_the_hubs_own_mirror_is_added_to_every_manifest(
    nginx: Callable[..., Nginx], tmp_path: Path
) -> None:
    """``accel serve --mirror PREFIX``: a mirror keeping the hub's layout under PREFIX
    (``PREFIX/MODEL/VERSION/PATH``) is listed in every manifest and used by installs."""
    root = tmp_path / "store"
    publish_model(root, "asr", "1.0", SPEC, block_size=256 * 1024)
    www = tmp_path / "mirror"
    shutil.copytree(root / "models" / "asr" / "1.0" / "files", www / "models" / "asr" / "1.0")
    mirror = nginx(www)
    prefix = f"{mirror.url}/models"
    with running_hub(root, extra_args=["--mirror", prefix]) as hub:
        with urllib.request.urlopen(f"{hub.url}/api/models/asr/versions/1.0/manifest") as r:
            assert json.loads(r.read())["mirrors"] == [f"{prefix}/asr/1.0"]
        async with ModelManager(tmp_path / "models", hub.url, workers=2) as mm:
            path = await mm.ainstall("asr", "1.0")
    assert (path / "sub dir" / "model.bin").read_bytes() == expected_bytes(
        "sub dir/model.bin", 6 * MiB + 7
    )
    assert mirror.bytes_sent() > MiB
    bad = subprocess.run(
        [sys.executable, "-m", "accel", "serve", "--root", str(root), "--mirror", "x:/y"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith(
        "accel: serve: --mirror: expected an http(s)"
    )
