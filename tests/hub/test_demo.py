"""accel.hub.demo, ``accel demo-store`` and ``scripts/demo`` (end to end, tiny scale)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from accel.hub.catalog import Catalog
from accel.hub.demo import build_demo_store, pseudo_random_bytes

REPO = Path(__file__).resolve().parents[2]


def test_pseudo_random_bytes_are_deterministic_and_seekable() -> None:
    whole = pseudo_random_bytes("a.bin", 10_000)
    assert whole == pseudo_random_bytes("a.bin", 10_000)
    assert pseudo_random_bytes("a.bin", 100, offset=5000) == whole[5000:5100]
    assert pseudo_random_bytes("b.bin", 100) != whole[:100]
    assert pseudo_random_bytes("a.bin", 100, seed=1) != whole[:100]


def test_demo_store_shapes_and_shared_files(tmp_path: Path) -> None:
    manifests = build_demo_store(tmp_path / "s1", scale=0.01, block_size=1 << 20)
    again = build_demo_store(tmp_path / "s2", scale=0.01, block_size=1 << 20)
    assert [m.checksum_sha256 for m in manifests] == [m.checksum_sha256 for m in again]
    catalog = Catalog(tmp_path / "s1")
    asr, mt = catalog.models["whisper-small-zh"], catalog.models["marian-zh-en"]
    assert (asr.task, mt.task) == ("asr", "mt")
    assert [v.version for v in asr.versions] == ["1.0.0", "1.1.0"]
    assert asr.default_version == "1.1.0"
    assert len(mt.versions[0].files) > 100 and len(asr.versions[0].files) <= 5
    for model in (asr, mt):
        v1 = {f.path: f.sha256 for f in model.versions[0].files}
        v2 = {f.path: f.sha256 for f in model.versions[1].files}
        shared = {p for p in v1 if v2.get(p) == v1[p]}
        changed = {p for p in v1 if p in v2 and v2[p] != v1[p]}
        assert shared and changed, model.id


def test_scripts_demo_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, ACCEL_DEMO_DIR=str(tmp_path / "demo"), ACCEL_DEMO_SCALE="0.01")
    out = subprocess.run(
        [str(REPO / "scripts" / "demo")], capture_output=True, text=True, env=env, timeout=170,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    # The demo's own steps, as a person types them: install, the rerun that says what
    # it kept, and accel verify's verdict on both versions.
    assert "$ accel install" in out.stdout and "$ accel verify" in out.stdout
    assert "it says what it kept" in out.stdout
    assert "whisper-small-zh@1.1.0: ok (" in out.stdout
    assert "marian-zh-en@1.1.0: ok (" in out.stdout
    got = tmp_path / "demo/models/whisper-small-zh/1.1.0/encoder.onnx"
    assert (
        got.read_bytes()
        == (tmp_path / "demo/store/models/whisper-small-zh/1.1.0/files/encoder.onnx").read_bytes()
    )
    # The hub it started is gone.
    hub_line = next(ln for ln in out.stdout.splitlines() if ln.startswith("hub: "))
    port = hub_line.split()[1].rsplit(":", 1)[1]
    probe = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/healthz"], check=False)
    assert probe.returncode != 0
