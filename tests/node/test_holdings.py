"""What a node finds it may serve (accel/node/holdings.py), from the records on disk.

No sockets: a models dir is made with the manager's own record writers (the registry,
the kept manifest) and the engine's own checkpoint writer, and the holdings read back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from accel import blockmap
from accel.fetch.checkpoint import Checkpoint, DoneChunk, save_checkpoint
from accel.manager.manifests import ManifestStore
from accel.manager.registry import RegistryStore, install_key
from accel.node.holdings import Holdings
from accel.schema import (
    ChunkDigests,
    FileStatus,
    InstallRecord,
    ManifestFile,
    Registry,
    VersionManifest,
)

BS = 1024
SIZE = 10 * BS + 100  # 11 blocks, the last one short


def _setup(models: Path, *, state: str = "downloading", checksum: str = "c1") -> Path:
    """One version with a partial ``w.bin`` (blocks known) and a done ``cfg.json``."""
    vdir = models / "org--m" / "1"
    vdir.mkdir(parents=True)
    (vdir / "cfg.json").write_bytes(b"{}")
    (vdir / "w.bin.part").write_bytes(b"\0" * SIZE)
    files = [
        FileStatus(path="w.bin", bytes_total=SIZE, sha256="a" * 64, state="downloading", bytes_done=1),
        FileStatus(path="cfg.json", bytes_total=2, sha256=hashlib.sha256(b"{}").hexdigest(), state="done", bytes_done=2),
    ]  # fmt: skip
    rec = InstallRecord(
        model_id="org/m",
        version="1",
        state=state,  # type: ignore[arg-type]
        path=str(vdir),
        bytes_total=SIZE + 2,
        checksum_sha256="c1",
        files=files,
    )

    def change(reg: Registry) -> None:
        reg.installs[install_key("org/m", "1")] = rec

    RegistryStore(models).update(change)
    ManifestStore(models / ".accel").save(
        VersionManifest(
            model_id="org/m",
            version="1",
            size_bytes=SIZE + 2,
            checksum_sha256=checksum,
            updated_at="2026-12-01T10:00:00Z",
            files=[
                ManifestFile(
                    path="w.bin",
                    size_bytes=SIZE,
                    sha256="a" * 64,
                    chunks=ChunkDigests(size=BS, digests=["0" * 64] * 11),
                ),
                ManifestFile(path="cfg.json", size_bytes=2, sha256=files[1].sha256),
            ],
        )
    )
    return vdir


def _checkpoint(vdir: Path, chunks: list[tuple[int, int]]) -> None:
    cp = Checkpoint(
        url="http://hub/x", size=SIZE, etag='"e"', chunks=[DoneChunk(s, e, "x") for s, e in chunks]
    )
    save_checkpoint(vdir / "w.bin", cp)


def test_a_partial_file_holds_the_blocks_its_checkpoint_finished(tmp_path: Path) -> None:
    models = tmp_path / "models"
    vdir = _setup(models)
    h = Holdings(models)
    assert h.split_model(("org", "m", "1", "w.bin")) == ("org/m", "1", "w.bin")
    found = h.find("org/m", "1", "w.bin")
    assert found is not None and not found.whole and found.block_size == BS
    assert found.bits == bytes(2)  # no checkpoint yet: nothing held
    # chunk [0, 2.5 blocks) holds blocks 0-1; [8 blocks, end) holds 8, 9 and the short 10
    _checkpoint(vdir, [(0, 2 * BS + 500), (8 * BS, SIZE)])
    found = Holdings(models).find("org/m", "1", "w.bin")
    assert found is not None
    assert found.bits == bytes([0b1100_0000, 0b1110_0000])
    assert found.holds(0, 2 * BS) and found.holds(8 * BS, SIZE - 8 * BS)
    assert not found.holds(2 * BS - 1, 2) and not found.holds(0, SIZE)
    assert found.held_bytes == 2 * BS + 2 * BS + 100
    assert found.part_segments == ("w.bin.part",)
    assert found.last_modified == 1796119200  # the manifest's updated_at, on every peer
    # a done file of the same version is whole; an unlisted one is not found
    cfg = h.find("org/m", "1", "cfg.json")
    assert cfg is not None and cfg.whole and cfg.block_size == 2  # no blocks: one block
    assert cfg.bits == blockmap.full(1)
    assert h.find("org/m", "1", "w.bin.part") is None and h.find("org/m", "2", "w.bin") is None
    # the announce: held bytes over the version's bytes
    ((mid, ver, share),) = Holdings(models).versions()
    assert (mid, ver) == ("org/m", "1")
    assert share == (4 * BS + 100 + 2) / (SIZE + 2)


def test_no_blocks_are_claimed_without_a_manifest_of_this_content(tmp_path: Path) -> None:
    models = tmp_path / "models"
    vdir = _setup(models, checksum="another-content")
    _checkpoint(vdir, [(0, SIZE)])
    found = Holdings(models).find("org/m", "1", "w.bin")
    assert found is not None and found.bits == bytes(1)  # one block (no blocks known), not held


def test_a_part_file_of_another_size_holds_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    vdir = _setup(models)
    _checkpoint(vdir, [(0, SIZE)])
    (vdir / "w.bin.part").write_bytes(b"\0" * 10)
    found = Holdings(models).find("org/m", "1", "w.bin")
    assert found is not None and found.bits == bytes(2)


def test_a_ready_version_is_whole_and_a_record_outside_the_models_dir_is_not_served(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    _setup(models, state="ready")
    found = Holdings(models).find("org/m", "1", "w.bin")
    assert found is not None and found.whole and found.bits == blockmap.full(11)
    assert Holdings(models).versions() == [("org/m", "1", 1.0)]

    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def move(reg: Registry) -> None:
        reg.installs[install_key("org/m", "1")].path = str(outside)

    RegistryStore(models).update(move)
    assert Holdings(models).find("org/m", "1", "w.bin") is None
