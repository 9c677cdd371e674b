"""Edge-case files published by the real hub and installed by the real manager."""

from __future__ import annotations

from pathlib import Path

from accel.manager.manager import ModelManager
from tests.reliability.store import publish_catalog
from tests.support.hub import running_hub


async def test_empty_and_tiny_files_install(tmp_path: Path) -> None:
    spec = {"empty.txt": 0, "one.bin": 1, "pkg/__init__.py": 0, "block.bin": 65536}
    files = publish_catalog(tmp_path / "store", {("edge", "1.0"): spec}, block_size=65536)
    with running_hub(tmp_path / "store") as hub:
        async with ModelManager(tmp_path / "models", hub.url, workers=1) as mm:
            path = await mm.ainstall("edge", "1.0")
    assert path is not None
    for rel, data in files[("edge", "1.0")].items():
        assert (path / rel).read_bytes() == data
