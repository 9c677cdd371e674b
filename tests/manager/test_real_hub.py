"""The manager against the product hub (``accel serve`` subprocess, bearer token): the
wire contract end to end. Byte counting lives in the other tests (stub hub's access log)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from accel.errors import AuthError
from accel.manager import ModelManager
from tests.support.hub import expected_bytes, publish_model, running_hub

MiB = 1 << 20


async def test_install_update_reuse_and_ranking_from_the_real_hub(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_model(
        root, "asr", "1.0.0", {"model.bin": 3 * MiB + 5, "vocab.txt": 4000}, block_size=MiB
    )
    models = tmp_path / "models"
    with running_hub(root, token="s3cret") as hub:
        async with ModelManager(models, hub.url, token="wrong", workers=1) as mm:
            with pytest.raises(AuthError):
                await mm.ainstall("asr")
        async with ModelManager(models, hub.url, token="s3cret", workers=2) as mm:
            p1 = await mm.ainstall("asr")
            assert p1 == models / "asr" / "1.0.0"
            assert (p1 / "model.bin").read_bytes() == expected_bytes("model.bin", 3 * MiB + 5)
            # a new default version on the hub; update installs it, reusing vocab.txt
            publish_model(
                root, "asr", "1.1.0", {"model.bin": 3 * MiB + 9, "vocab.txt": 4000}, block_size=MiB
            )
            assert await mm.aupdate() == ["asr@1.1.0"]
            p2 = mm.get_model_path("asr", "1.1.0")
            assert os.stat(p1 / "vocab.txt").st_ino == os.stat(p2 / "vocab.txt").st_ino
            assert mm.get_model_path("asr", "1.0.0") == p1  # old version still usable
            ranking = await mm.hub.ranking(5)
            assert ranking and ranking[0].model_id == "asr"
            assert (await mm.averify()) == {"asr@1.0.0": [], "asr@1.1.0": []}
